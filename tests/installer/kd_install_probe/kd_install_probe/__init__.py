"""Test-only Krita plugin: once Krita's window is up, records whether the installed
Krita Diffusers plugin was loaded, and what its docker made of the settings the
installer wrote: the values Krita hands out for the docker's settings group (read with
`Krita.readSetting`, exactly as the docker's settings store reads them) and the
docker's own connection line, which only turns "connected" when the docker reached
the server at the URL it read. Then it quits Krita.

The result goes to the file named in the JSON plan at $KD_SCENARIO_PLAN ("out").
"""

import json
import os
import sys
import time
import traceback

from krita import Extension, Krita
from PyQt5.QtCore import QTimer
from PyQt5.QtWidgets import QDockWidget, QLabel, QWidget

DOCKER_ID = "krita_diffusers_docker"
GROUP = "krita_diffusers"
KEYS = ("server_url", "token", "server_command")
MISSING = "\x00missing"
CONNECT_WAIT_S = 60.0

_keep = []


def _dock():
    window = Krita.instance().activeWindow()
    return window.qwindow().findChild(QDockWidget, DOCKER_ID) if window else None


def _connection():
    dock = _dock()
    label = dock.findChild(QLabel, "kd-connection") if dock is not None else None
    if label is None:
        return {"state": None, "text": "no docker connection line"}
    return {"state": label.property("state"), "text": label.text()}


def _facts():
    facts = {"loaded": "krita_diffusers" in sys.modules, "docker": _dock() is not None}
    try:
        read = {key: Krita.instance().readSetting(GROUP, key, MISSING) for key in KEYS}
        facts["read_setting"] = {key: v for key, v in read.items() if v != MISSING}
        panel = _dock().findChild(QWidget, "kd-panel") if facts["docker"] else None
        held = getattr(panel, "settings", None)
        if held is not None:  # diagnostics: what the docker itself holds
            facts["docker_settings"] = {key: getattr(held, key, None) for key in KEYS}
        import requests  # the copy bundled in krita_diffusers/vendor

        facts["requests_from"] = requests.__file__
    except Exception:
        facts["error"] = traceback.format_exc()
    return facts


def _finish(out, facts):
    facts["connection"] = _connection()
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(facts, handle)
    for doc in Krita.instance().documents():
        doc.setModified(False)
    QTimer.singleShot(200, lambda: Krita.instance().action("file_quit").trigger())


def _wait_for_connection(out, facts, deadline):
    """The docker connects on its own (and retries); give it time, then report."""
    if _connection()["state"] == "connected" or time.monotonic() > deadline:
        _finish(out, facts)
    else:
        QTimer.singleShot(250, lambda: _wait_for_connection(out, facts, deadline))


def _run(out):
    try:
        facts = _facts()
    except Exception:
        facts = {"error": traceback.format_exc()}
    _wait_for_connection(out, facts, time.monotonic() + CONNECT_WAIT_S)


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
