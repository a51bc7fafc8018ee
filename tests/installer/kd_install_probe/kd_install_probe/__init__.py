"""Test-only Krita plugin: once Krita's window is up, records whether the installed
Krita Diffusers plugin was loaded, whether its docker exists, and whether it reaches
the installed server with the settings the installer wrote; then quits Krita.

The result goes to the file named in the JSON plan at $KD_SCENARIO_PLAN ("out").
"""

import json
import os
import sys
import traceback

from krita import Extension, Krita
from PyQt5.QtCore import QTimer
from PyQt5.QtWidgets import QDockWidget

_keep = []


def _facts():
    facts = {"loaded": "krita_diffusers" in sys.modules}
    window = Krita.instance().activeWindow()
    docks = window.qwindow().findChildren(QDockWidget) if window else []
    facts["dockers"] = [d.objectName() for d in docks if "diffusers" in d.objectName().lower()]
    try:
        from PyQt5.QtCore import QSettings

        facts["qsettings_file"] = QSettings().fileName()
        from krita_diffusers import qt_store, settings

        loaded = settings.load(qt_store.QtSettingsStore())
        facts["server_url"] = loaded.server_url
        facts["server_command"] = loaded.server_command
        import requests  # the copy bundled in krita_diffusers/vendor

        facts["requests_from"] = requests.__file__
        reply = requests.get(loaded.server_url + "/v1/health", timeout=10)
        facts["health"] = reply.json()
    except Exception:
        facts["error"] = traceback.format_exc()
    return facts


def _run(out):
    try:
        facts = _facts()
    except Exception:
        facts = {"error": traceback.format_exc()}
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(facts, handle)
    for doc in Krita.instance().documents():
        doc.setModified(False)
    QTimer.singleShot(200, lambda: Krita.instance().action("file_quit").trigger())


class Probe(Extension):
    def __init__(self, parent, out):
        super().__init__(parent)
        self.out = out
        self.started = False

    def setup(self):
        Krita.instance().notifier().windowCreated.connect(self._window)

    def createActions(self, window):
        pass

    def _window(self):
        if not self.started:
            self.started = True
            QTimer.singleShot(1500, lambda: _run(self.out))


_plan = os.environ.get("KD_SCENARIO_PLAN")
if _plan:
    with open(_plan, encoding="utf-8") as _handle:
        _probe = Probe(Krita.instance(), json.load(_handle)["out"])
    _keep.append(_probe)
    Krita.instance().addExtension(_probe)
