"""The end-to-end scenarios. Each is a generator over `Wait`s (see runner.py) that goes
through the Krita Diffusers docker the way an artist does and records facts in its log
section; the pytest side decides what those facts must be.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from krita import Krita  # type: ignore[import-not-found]
from PyQt5.QtWidgets import QApplication

from . import canvas
from .runner import Heartbeat, Scenario, Section, pause, until


class Context:
    """What every scenario shares: the plan, where files go, the heartbeat."""

    def __init__(self, plan: dict[str, Any]) -> None:
        self.plan = plan
        self.artifacts = Path(plan["artifacts"])
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.requests = Path(plan["requests"])
        self.requests.mkdir(parents=True, exist_ok=True)
        self.heartbeat = Heartbeat()

    def artifact(self, section: Section, name: str) -> Path:
        return self.artifacts / f"{section.name}-{name}"

    def screenshot(self, section: Section, name: str) -> str:
        """The whole virtual screen, as the artist would see it."""
        path = self.artifact(section, name)
        QApplication.primaryScreen().grabWindow(0).save(str(path), "PNG")
        return str(path)

    def ask_harness(self, command: str) -> None:
        """Asks the harness (outside Krita) for something, e.g. to start the server."""
        (self.requests / command).write_text(str(time.time()), encoding="utf-8")


def scenario_canvas_smoke(ctx: Context, section: Section) -> Scenario:
    """The harness itself: a document, a painted layer, a selection, exports, a screenshot."""
    doc = canvas.new_document(256, 192, "smoke")
    yield until(lambda: canvas.is_active(doc), 20, "the new document's view")
    canvas.paint_pattern(doc)
    canvas.select_rect(doc, 32, 40, 100, 60)
    yield pause(0.3)
    section.data["layers"] = canvas.snapshot(doc)
    section.data["selection_png"] = canvas.export_selection(doc, ctx.artifact(section, "sel.png"))
    section.data["projection_png"] = canvas.export_projection(
        doc, ctx.artifact(section, "projection.png")
    )
    ctx.heartbeat.start()
    yield pause(1.0)
    section.data["heartbeat"] = ctx.heartbeat.stop()
    section.data["screenshot"] = ctx.screenshot(section, "screen.png")


SCENARIOS: dict[str, Callable[[Context, Section], Scenario]] = {
    "canvas_smoke": scenario_canvas_smoke,
}


def make_scenario(ctx: Context, name: str, section: Section) -> Scenario:
    if name not in SCENARIOS:
        raise KeyError(f"no scenario named {name!r}; known: {', '.join(sorted(SCENARIOS))}")
    return SCENARIOS[name](ctx, section)


def cleanup(ctx: Context, section: Section) -> Scenario:
    """Leaves Krita as the next scenario expects it: no documents open."""
    canvas.close_all_documents()
    yield until(lambda: not Krita.instance().documents(), 10, "all documents closed")
