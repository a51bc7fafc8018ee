"""Entry point of the scenario plugin: read the plan, wait for Krita's window, run the
scenarios, write the log, quit Krita the way an artist would.

The plan is JSON written by the harness:
    {"log": path, "artifacts": folder, "requests": folder, "server_url": url,
     "scenarios": [name, ...], "generation": {...}}
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any

from krita import Extension, Krita  # type: ignore[import-not-found]
from PyQt5.QtCore import QTimer
from PyQt5.QtWidgets import QApplication

from .runner import Runner

_keep: list[Any] = []  # Python owns these objects; Krita would not keep them alive


def _write_crash(plan: dict[str, Any], stage: str) -> None:
    """If the runner cannot even start, the log still says why."""
    Path(plan["log"]).write_text(
        json.dumps({"finished": False, "fatal": stage, "traceback": traceback.format_exc()}),
        encoding="utf-8",
    )


def quit_krita() -> None:
    """Quits without "save changes?" dialogs (QApplication.quit() crashes Krita on exit)."""
    for doc in Krita.instance().documents():
        doc.setModified(False)
    QTimer.singleShot(200, lambda: Krita.instance().action("file_quit").trigger())


def _fit_window() -> None:
    """No window manager under Xvfb: maximising does nothing, so size the window by hand."""
    window = Krita.instance().activeWindow()
    if window is not None:
        window.qwindow().setGeometry(QApplication.primaryScreen().availableGeometry())


class ScenarioExtension(Extension):
    def __init__(self, parent: Any, plan: dict[str, Any]) -> None:
        super().__init__(parent)
        self.plan = plan
        self.started = False

    def setup(self) -> None:
        Krita.instance().notifier().windowCreated.connect(self._window_created)

    def createActions(self, window: Any) -> None:
        pass

    def _window_created(self) -> None:
        if self.started:
            return
        self.started = True
        QTimer.singleShot(int(self.plan.get("start_delay_ms", 500)), self._start)

    def _start(self) -> None:
        try:
            _fit_window()
            from .scenarios import Context, cleanup, make_scenario

            context = Context(self.plan)
            _keep.append(context)
            runner = Runner(
                list(self.plan.get("scenarios", [])),
                lambda name, section: make_scenario(context, name, section),
                lambda section: cleanup(context, section),
                Path(self.plan["log"]),
                quit_krita,
            )
            runner.meta["plan"] = self.plan
            _keep.append(runner)
            runner.start()
        except Exception:
            _write_crash(self.plan, "start")
            quit_krita()


def install(plan_path: str) -> None:
    plan = json.loads(Path(plan_path).read_text(encoding="utf-8"))
    try:
        extension = ScenarioExtension(Krita.instance(), plan)
        _keep.append(extension)
        Krita.instance().addExtension(extension)
    except Exception:
        _write_crash(plan, "install")
        raise
