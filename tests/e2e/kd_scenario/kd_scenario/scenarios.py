"""The end-to-end scenarios. Each is a generator over `Wait`s (see runner.py) that goes
through the Krita Diffusers docker the way an artist does and records facts in its log
section; the pytest side (tests/e2e/test_krita_*.py) decides what those facts must be.

Facts recorded (in `section.data`): layer stacks before/after with pixel digests, PNG
exports of new layers and of the selection (file names under the artifacts folder),
what the docker showed over time, and the GUI heartbeat while a generation ran.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from krita import Document, Krita  # type: ignore[import-not-found]
from PyQt5.QtCore import QRect
from PyQt5.QtWidgets import (
    QAbstractButton,
    QAbstractSlider,
    QApplication,
    QComboBox,
    QDockWidget,
    QLabel,
    QLineEdit,
    QListWidget,
    QPlainTextEdit,
)

from . import canvas, docker
from .runner import Heartbeat, Scenario, Section, StepTimeout, pause, until

GENERATION_TIMEOUT_S = 240.0
CONNECT_TIMEOUT_S = 180.0


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
        """The whole virtual screen, as the artist would see it; returns the file name."""
        path = self.artifact(section, name)
        QApplication.primaryScreen().grabWindow(0).save(str(path), "PNG")
        return path.name

    def grab_docker(self, section: Section, name: str) -> str:
        """Just the docker, at its on-screen size: progress bar and preview up close."""
        path = self.artifact(section, name)
        docker.dock().grab().save(str(path), "PNG")
        return path.name

    def ask_harness(self, command: str) -> None:
        """Asks the harness (outside Krita) for something, e.g. to start the server."""
        (self.requests / command).write_text(str(time.time()), encoding="utf-8")


# -- building blocks ---------------------------------------------------------------------


def open_document(
    width: int, height: int, name: str, painted: bool = True
) -> Generator[Any, None, Document]:
    """A new document in a view, optionally with a painted layer above the background."""
    doc = canvas.new_document(width, height, name)
    yield until(lambda: canvas.is_active(doc), 20, f"the view of {name} to become active")
    if painted:
        canvas.paint_pattern(doc)
    docker.show_dock()
    return doc


def wait_connected(timeout_s: float = CONNECT_TIMEOUT_S) -> Scenario:
    yield until(
        lambda: docker.connection()["state"] == "connected",
        timeout_s,
        "the docker to say it is connected",
    )


def watch_generation(
    ctx: Context,
    section: Section,
    done: Callable[[], bool],
    screenshot: bool,
) -> Scenario:
    """Waits for `done` while recording every distinct thing the docker shows, and takes
    the mid-generation screenshot once the progress bar and the preview are both live."""
    seen: list[dict[str, Any]] = []
    started = time.monotonic()
    shots: dict[str, str] = {}
    old_preview = docker.preview_key()

    def observe() -> bool:
        now = docker.state()
        now["preview_shown"] = now["preview_shown"] and docker.preview_key() != old_preview
        summary = {k: now[k] for k in ("busy", "progress", "preview_shown", "error")}
        if not seen or {k: seen[-1][k] for k in summary} != summary:
            seen.append({"t": round(time.monotonic() - started, 2), **summary})
        running = now["progress"]["maximum"] > 1 and now["progress"]["value"] >= 1
        if screenshot and not shots and running and now["preview_shown"] and now["busy"]:
            shots["screen"] = ctx.screenshot(section, "mid-generation-screen.png")
            shots["docker"] = ctx.grab_docker(section, "mid-generation-docker.png")
            shots["progress"] = now["progress"]["text"]
            ctx.heartbeat.skip()
        return done()

    try:
        yield until(observe, GENERATION_TIMEOUT_S, "the generation to end")
    finally:
        section.data["docker_timeline"] = seen
        if shots:
            section.data["mid_generation"] = shots


def generate(
    ctx: Context,
    section: Section,
    prompt: str,
    batch: int = 1,
    screenshot: bool = False,
) -> Generator[Any, None, list[int]]:
    """Types the prompt, presses Generate, waits for the results in the history.

    Returns the history ids of the new results. The GUI heartbeat runs from the click
    until the docker is idle again with every result fetched.
    """
    yield from wait_connected()
    docker.set_prompt(prompt)
    docker.set_number("kd-batch", batch)
    ids_before = docker.history_ids()
    section.data["docker_before"] = docker.state()
    ctx.heartbeat.start()
    docker.click("kd-generate")

    def finished() -> bool:
        if docker.error_text():
            return True
        new = [i for i in docker.history_ids() if i not in ids_before]
        return len(new) >= batch and not docker.busy()

    try:
        yield from watch_generation(ctx, section, finished, screenshot)
    finally:
        section.data["heartbeat"] = ctx.heartbeat.stop()
    section.data["docker_after"] = docker.state()
    if docker.error_text():
        raise RuntimeError(f"the docker reported: {docker.error_text()}")
    return [i for i in docker.history_ids() if i not in ids_before]


def apply_results(
    section: Section, doc: Document, ids: list[Any], before: list[dict[str, Any]]
) -> Scenario:
    """Selects the results in the history and presses Apply; waits for the new layers."""
    known = {node["id"] for node in before}
    rows = docker.rows_of(ids)
    docker.select_history_rows(rows)
    yield pause(0.2)
    section.data["history_texts"] = docker.history_texts(rows)
    docker.click("kd-apply")

    def applied() -> bool:
        nodes = canvas.snapshot(doc)
        fresh = [n for n in nodes if n["id"] not in known]
        previews = [n for n in nodes if n["name"].startswith(docker.PREVIEW_LAYER_PREFIX)]
        return bool(fresh) and not previews

    try:
        yield until(applied, 30, "the applied result's layer(s) without a preview layer")
    except StepTimeout:
        section.data["apply_timeout"] = {"docker": docker.state(), "layers": canvas.snapshot(doc)}
        raise
    yield pause(0.3)


def record_layers(
    ctx: Context, section: Section, doc: Document, before: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Logs the stack after, and exports every new paint layer as a PNG."""
    after = canvas.snapshot(doc)
    known = {node["id"] for node in before}
    new = [node for node in after if node["id"] not in known]
    by_id = {node.uniqueId().toString(): node for node in canvas.artist_nodes(doc)}
    for i, node in enumerate(new):
        if node["type"] == "paintlayer":
            path = ctx.artifact(section, f"new-layer-{i}.png")
            canvas.export_node(doc, by_id[node["id"]], path)
            node["png"] = path.name
    section.data["layers_after"] = after
    section.data["new_layers"] = new
    return new


def begin_canvas(ctx: Context, section: Section, doc: Document) -> list[dict[str, Any]]:
    """Logs the document and its layer stack before anything is generated."""
    before = canvas.snapshot(doc)
    section.data["canvas"] = [doc.width(), doc.height()]
    section.data["layers_before"] = before
    selection_png = canvas.export_selection(doc, ctx.artifact(section, "selection.png"))
    section.data["selection_png"] = Path(selection_png).name if selection_png else None
    section.data["projection_before_png"] = Path(
        canvas.export_projection(doc, ctx.artifact(section, "projection-before.png"))
    ).name
    return before


def generate_and_apply(
    ctx: Context,
    section: Section,
    doc: Document,
    prompt: str,
    batch: int = 1,
    screenshot: bool = False,
) -> Scenario:
    """The artist's whole loop: prompt, Generate, wait, Apply; everything logged."""
    before = begin_canvas(ctx, section, doc)
    ids = yield from generate(ctx, section, prompt, batch, screenshot)
    section.data["history_ids"] = ids
    yield from apply_results(section, doc, ids, before)
    record_layers(ctx, section, doc, before)
    section.data["projection_after_png"] = Path(
        canvas.export_projection(doc, ctx.artifact(section, "projection-after.png"))
    ).name


def change_settings(values: dict[str, int]) -> Scenario:
    """Opens the gear dialog, sets spin boxes (kd-setting-<name>), presses OK."""
    docker.click("kd-settings")
    yield until(lambda: docker.settings_dialog() is not None, 10, "the settings dialog")
    dialog = docker.settings_dialog()
    assert dialog is not None
    for name, value in values.items():
        docker.dialog_spin(dialog, f"kd-setting-{name}").setValue(value)
    dialog.accept()
    yield until(lambda: docker.settings_dialog() is None, 10, "the settings dialog to close")


# -- the scenarios ------------------------------------------------------------------------


def scenario_canvas_smoke(ctx: Context, section: Section) -> Scenario:
    """The harness alone: a document, a painted layer, a selection, exports, a screenshot."""
    doc = canvas.new_document(256, 192, "smoke")
    yield until(lambda: canvas.is_active(doc), 20, "the new document's view")
    canvas.paint_pattern(doc)
    canvas.select_rect(doc, 32, 40, 100, 60)
    yield pause(0.3)
    begin_canvas(ctx, section, doc)
    ctx.heartbeat.start()
    yield pause(1.0)
    section.data["heartbeat"] = ctx.heartbeat.stop()
    section.data["screenshot"] = ctx.screenshot(section, "screen.png")


def scenario_server_down(ctx: Context, section: Section) -> Scenario:
    """No server yet: the docker must say so, Krita must stay responsive, and the docker
    must connect by itself once the harness starts the server."""
    doc = yield from open_document(256, 256, "offline")
    docker.show_dock()
    yield until(
        lambda: docker.connection()["state"] == "unreachable",
        60,
        "the docker to report the server unreachable",
    )
    section.data["unreachable"] = docker.connection()
    section.data["start_button_while_down"] = docker.shown("kd-start-server")
    docker.set_prompt("a lighthouse")
    ctx.heartbeat.start()
    clicked = docker.widget("kd-generate").isEnabled()
    if clicked:
        docker.click("kd-generate")
    yield pause(3.0)
    section.data["heartbeat"] = ctx.heartbeat.stop()
    section.data["generate_while_down"] = {"clicked": clicked, "docker": docker.state()}
    section.data["labels_while_down"] = {
        name: docker.wrapped_fully(name) for name in ("kd-connection", "kd-error")
    }
    section.data["screenshot_down"] = ctx.screenshot(section, "unreachable-screen.png")
    yield until(lambda: not docker.busy(), 60, "the docker to give up on the job")
    section.data["layers_while_down"] = canvas.snapshot(doc)
    ctx.ask_harness("start-server")
    section.data["server_requested_at"] = time.time()
    yield from wait_connected()
    section.data["connected_after_s"] = round(time.time() - section.data["server_requested_at"], 1)
    section.data["connected"] = docker.connection()
    yield pause(2.0)
    section.data["docker_once_connected"] = docker.state()
    section.data["welcome_once_connected"] = {
        "shown": docker.shown("kd-welcome"),
        "text": docker.label_text("kd-welcome-text"),
        "start_button": docker.shown("kd-start-server"),
        "open_first_image": docker.shown("kd-open-first-image"),
    }
    section.data["screenshot_connected"] = ctx.screenshot(section, "connected-screen.png")
    if docker.shown("kd-open-first-image"):
        docker.click("kd-open-first-image")
        yield until(
            lambda: any(
                d.fileName().endswith("first-image.png") for d in Krita.instance().documents()
            ),
            20,
            "the first image to open as a document",
        )
        opened = next(
            d for d in Krita.instance().documents() if d.fileName().endswith("first-image.png")
        )
        section.data["first_image_opened"] = {
            "file": opened.fileName(),
            "size": [opened.width(), opened.height()],
            "welcome_hidden": not docker.shown("kd-welcome"),
        }


def scenario_txt2img(ctx: Context, section: Section) -> Scenario:
    """No selection on a 512x512 document: the result covers the whole canvas."""
    doc = yield from open_document(512, 512, "txt2img", painted=False)
    yield from generate_and_apply(ctx, section, doc, "a red apple on a table")


def inpaint(
    ctx: Context,
    section: Section,
    size: tuple[int, int],
    select: Callable[[Document], None],
    screenshot: bool = False,
) -> Scenario:
    doc = yield from open_document(size[0], size[1], section.name)
    select(doc)
    yield pause(0.2)
    yield until(
        lambda: docker.widget("kd-generate").text() == "Inpaint",
        5,
        "the Generate button to say Inpaint (the docker noticed the selection)",
    )
    yield from generate_and_apply(ctx, section, doc, "a small house", screenshot=screenshot)


def scenario_inpaint_rect(ctx: Context, section: Section) -> Scenario:
    """A rectangular selection on painted content, with the mid-generation screenshot."""
    yield from inpaint(
        ctx, section, (512, 512), lambda d: canvas.select_rect(d, 160, 176, 192, 128), True
    )


def scenario_inpaint_edge(ctx: Context, section: Section) -> Scenario:
    """A selection touching the right and bottom edges of the canvas."""
    yield from inpaint(
        ctx, section, (512, 512), lambda d: canvas.select_rect(d, 368, 400, 144, 112)
    )


def scenario_inpaint_nonsquare(ctx: Context, section: Section) -> Scenario:
    """A 640x384 document, selection off-centre and touching the top edge."""
    yield from inpaint(ctx, section, (640, 384), lambda d: canvas.select_rect(d, 64, 0, 240, 150))


def scenario_inpaint_soft(ctx: Context, section: Section) -> Scenario:
    """A feathered round selection: full inside r=50, fading to nothing at r=100."""
    yield from inpaint(ctx, section, (512, 512), lambda d: canvas.select_soft(d, 288, 232, 50, 100))


def scenario_batch(ctx: Context, section: Section) -> Scenario:
    """Batch of 2, both applied at once: they land in one group layer."""
    doc = yield from open_document(256, 256, "batch", painted=False)
    yield from generate_and_apply(ctx, section, doc, "two variations of a tree", batch=2)
    docker.set_number("kd-batch", 1)


def scenario_cancel(ctx: Context, section: Section) -> Scenario:
    """Cancel while the server is working: no layer, the docker back to idle."""
    doc = yield from open_document(512, 512, "cancel")
    canvas.select_rect(doc, 100, 100, 200, 200)
    yield from wait_connected()
    steps_before = int(ctx.plan.get("generation", {}).get("steps", 20))
    yield from change_settings({"steps": 60})
    before = begin_canvas(ctx, section, doc)
    ids_before = docker.history_ids()
    docker.set_prompt("something slow")
    ctx.heartbeat.start()
    docker.click("kd-generate")
    try:
        yield until(
            lambda: docker.progress()["maximum"] > 1 and docker.progress()["value"] >= 1,
            GENERATION_TIMEOUT_S,
            "the first step of the job",
        )
        section.data["progress_at_cancel"] = docker.progress()
        docker.click("kd-cancel")
        section.data["cancel_clicked_at"] = time.time()
        yield from watch_generation(ctx, section, lambda: not docker.busy(), False)
    finally:
        section.data["heartbeat"] = ctx.heartbeat.stop()
        yield from change_settings({"steps": steps_before})
    yield pause(1.0)  # anything late (a result, a layer) would show up now
    section.data["docker_after"] = docker.state()
    section.data["history_added"] = len([i for i in docker.history_ids() if i not in ids_before])
    record_layers(ctx, section, doc, before)


def scenario_undo(ctx: Context, section: Section) -> Scenario:
    """Inpaint; while the result waits unapplied in the history the document must be
    untouched (not modified, same pixels, same layers: the next job reads exactly
    the artist's image); Apply, then Edit > Undo once: the result's layer is gone,
    the rest intact; a second Undo never brings back a temporary layer."""
    doc = yield from open_document(256, 256, "undo")
    canvas.select_rect(doc, 64, 64, 96, 96)
    yield pause(0.3)
    doc.setModified(False)  # as if just saved: only the artist's own changes count now
    before = begin_canvas(ctx, section, doc)
    projection_before = canvas.projection_digest(doc)
    ids = yield from generate(ctx, section, "a blue door")
    section.data["history_ids"] = ids
    yield pause(0.5)  # anything the result does to the document would show up now
    section.data["unapplied"] = {
        "modified": doc.modified(),
        "projection_unchanged": canvas.projection_digest(doc) == projection_before,
        "layers": canvas.snapshot(doc),
    }
    yield from apply_results(section, doc, ids, before)
    record_layers(ctx, section, doc, before)
    applied = canvas.snapshot(doc)
    section.data["layers_after_apply"] = applied
    Krita.instance().action("edit_undo").trigger()
    try:
        yield until(lambda: canvas.snapshot(doc) != applied, 10, "the undo to change the stack")
    except StepTimeout:
        section.data["undo_changed_nothing"] = True  # the test says what was expected
    yield pause(0.5)  # a second, later change would show up now
    section.data["layers_after_undo"] = canvas.snapshot(doc)
    Krita.instance().action("edit_undo").trigger()
    yield pause(1.0)
    section.data["layers_after_second_undo"] = canvas.snapshot(doc)


def live_panel() -> Any:
    """The docker's panel object, to read how far live mode is (frames sent, the
    current result) without touching it."""
    return docker.widget("kd-panel")


def document_state(doc: Document) -> dict[str, Any]:
    return {
        "modified": doc.modified(),
        "projection": canvas.projection_digest(doc),
        "layers": canvas.snapshot(doc),
    }


def scenario_live(ctx: Context, section: Section) -> Scenario:
    """Live on: a frame of the resting canvas is shown in the docker and the document
    stays untouched; live off changes nothing. Live on again, a stroke, a new frame
    (latency logged), Apply live: one layer; live off: the document as it was."""
    doc = yield from open_document(128, 128, "live")
    yield from wait_connected()
    docker.set_prompt("a red boat")
    docker.set_number("kd-strength", 60)
    yield pause(0.3)
    doc.setModified(False)  # as if just saved: only the artist's own changes count now
    before = begin_canvas(ctx, section, doc)
    section.data["before"] = document_state(doc)
    panel = live_panel()
    ctx.heartbeat.start()
    docker.click("kd-live")
    section.data["live_note"] = docker.label_text("kd-live-note")
    try:
        yield until(lambda: panel.live.result is not None, GENERATION_TIMEOUT_S, "a live frame")
        section.data["first_frame"] = document_state(doc)
        section.data["preview_shown"] = docker.preview_shown()
        docker.click("kd-live")  # off
        yield pause(1.0)  # anything turning live off did to the document would show now
        section.data["after_first_off"] = document_state(doc)

        docker.click("kd-live")  # on again
        yield until(lambda: panel.live.result is not None, GENERATION_TIMEOUT_S, "a frame")
        first, sent = panel.live.result, panel.live.frames_sent
        painted = next(n for n in canvas.artist_nodes(doc) if n.name() == "painted")
        stroked = time.monotonic()
        canvas.paint_stroke(doc, painted, (16, 16, 48, 48), bytes((255, 255, 255, 255)))
        yield until(
            lambda: panel.live.result is not None and panel.live.result is not first,
            GENERATION_TIMEOUT_S,
            "a live frame of the stroke",
        )
        section.data["stroke_to_frame_s"] = round(time.monotonic() - stroked, 2)
        section.data["frames_sent_for_stroke"] = panel.live.frames_sent - sent
        section.data["longest_poll_s"] = round(panel.live.longest_poll_s, 4)
        section.data["before_apply"] = document_state(doc)
        docker.click("kd-live-apply")
        known = {node["id"] for node in section.data["before_apply"]["layers"]}
        yield until(
            lambda: any(n["id"] not in known for n in canvas.snapshot(doc)), 30, "the live layer"
        )
        yield pause(0.3)
        record_layers(ctx, section, doc, before)
        section.data["after_apply"] = document_state(doc)
        docker.click("kd-live")  # off
        yield pause(1.0)
        section.data["after_off"] = document_state(doc)
        section.data["live_checked_after_off"] = docker.widget("kd-live").isChecked()
    finally:
        section.data["heartbeat"] = ctx.heartbeat.stop()
        if docker.widget("kd-live").isChecked():
            docker.click("kd-live")


def scenario_layout(ctx: Context, section: Section) -> Scenario:
    """The docker at Krita's default size in a 1280x800 and a 1600x1000 window: every
    control can be brought into view (scrolling the docker if need be), messages wrap
    instead of being cut, and a screenshot of each is kept."""
    yield from open_document(256, 256, "layout")
    window = Krita.instance().activeWindow().qwindow()
    docker.set_prompt("")
    docker.click("kd-generate")  # shows a message on the error line
    sizes: dict[str, Any] = {}
    try:
        for width, height in ((1280, 800), (1600, 1000)):
            window.setGeometry(QRect(0, 0, width, height))
            yield pause(1.0)
            docker.show_dock()
            yield pause(0.5)
            key = f"{width}x{height}"
            shot = ctx.artifact(section, f"{key}.png")
            window.grab().save(str(shot), "PNG")
            sizes[key] = {
                "window": [window.width(), window.height()],
                "dock": [docker.dock().width(), docker.dock().height()],
                "controls": docker.reachability(),
                "labels": {
                    name: docker.wrapped_fully(name) for name in ("kd-connection", "kd-error")
                },
                "error": docker.error_text(),
                "screenshot": shot.name,
            }
            open_section("kd-upscale-toggle", True)
            open_section("kd-expand-toggle", True)
            yield pause(0.5)
            sizes[key]["controls_sections_open"] = docker.reachability()
            open_section("kd-upscale-toggle", False)
            open_section("kd-expand-toggle", False)
    finally:
        section.data["sizes"] = sizes
        window.setGeometry(QApplication.primaryScreen().availableGeometry())


def scenario_two_windows(ctx: Context, section: Section) -> Scenario:
    """A second Krita window has its own docker, connected over the same connection as
    the first (the test reads the server's log: one event stream for the launch).

    Runs last: closing one of two windows from a script quits Krita 5.1.5 altogether,
    so the second window stays open until the runner quits Krita."""
    app = Krita.instance()
    first = app.activeWindow()
    second = app.openWindow()
    second.qwindow().show()

    def label() -> QLabel | None:
        dock = second.qwindow().findChild(QDockWidget, docker.DOCKER_ID)
        return None if dock is None else dock.findChild(QLabel, "kd-connection")

    try:
        yield until(lambda: label() is not None, 20, "the second window's docker")
        yield until(
            lambda: label().property("state") == "connected",
            CONNECT_TIMEOUT_S,
            "the second window's docker to say it is connected",
        )
        section.data["second_window"] = {"state": label().property("state"), "text": label().text()}
        section.data["windows"] = len(app.windows())
        yield pause(1.0)  # a second event stream, if one were opened, would be in the log now
    finally:
        first.activate()


def scenario_control(ctx: Context, section: Section) -> Scenario:
    """A hidden depth layer (a painted gradient) drives an inpaint of a selection
    through a control row; then "From canvas" makes a canny layer of the region."""
    doc = yield from open_document(256, 256, "control")
    depth = canvas.paint_gradient(doc, "depth")
    depth_before = canvas.describe_node(doc, depth)
    canvas.select_rect(doc, 64, 80, 96, 64)
    yield pause(0.2)
    yield until(lambda: docker.widget("kd-generate").text() == "Inpaint", 5, "the Inpaint label")
    yield from wait_connected()
    docker.click("kd-control-add")
    yield until(lambda: docker.shown("kd-control-row-1"), 5, "the control row")
    docker.choose("kd-control-layer-1", "depth")
    docker.choose("kd-control-mode-1", "tiny-depth (depth)")
    set_strength = docker.widget("kd-control-strength-1")
    set_strength.setValue(1.5)
    section.data["control_row"] = {
        "layer": docker.combo_text("kd-control-layer-1"),
        "mode": docker.combo_text("kd-control-mode-1"),
        "strength": set_strength.value(),
    }
    yield from generate_and_apply(ctx, section, doc, "a stone bridge")
    section.data["depth_before"] = depth_before
    section.data["depth_after_job"] = canvas.describe_node(doc, depth)

    known = {node["id"] for node in canvas.snapshot(doc)}
    docker.choose("kd-control-mode-1", "tiny-canny (canny)")
    docker.click("kd-control-preprocess-1")
    yield until(
        lambda: any(n["id"] not in known for n in canvas.snapshot(doc)),
        GENERATION_TIMEOUT_S,
        "the From canvas layer",
    )
    yield pause(0.3)
    section.data["from_canvas"] = [n for n in canvas.snapshot(doc) if n["id"] not in known]
    section.data["row_layer_after_from_canvas"] = docker.combo_text("kd-control-layer-1")
    section.data["error_after_from_canvas"] = docker.error_text()
    section.data["depth_after_all"] = canvas.describe_node(doc, depth)
    section.data["hidden_group"] = canvas.hidden_group_projection(doc)
    docker.click("kd-control-remove-1")  # later scenarios start without control rows
    yield pause(0.2)


def wait_for_new_result(
    ctx: Context, section: Section, ids_before: list[Any]
) -> Generator[Any, None, list[Any]]:
    """Waits, recording the docker, until a new result is in the history and the
    docker is idle (or it shows an error); returns the new results' ids."""

    def finished() -> bool:
        if docker.error_text():
            return True
        return any(i not in ids_before for i in docker.history_ids()) and not docker.busy()

    yield from watch_generation(ctx, section, finished, False)
    if docker.error_text():
        raise RuntimeError(f"the docker reported: {docker.error_text()}")
    return [i for i in docker.history_ids() if i not in ids_before]


def open_section(toggle: str, opened: bool) -> None:
    """Opens (or closes) one of the docker's collapsible sections, as a click would."""
    if docker.widget(toggle).isChecked() != opened:
        docker.click(toggle)


def selection_probe(doc: Document) -> dict[str, Any]:
    """What Krita keeps of a selection reaching past the canvas: one 100 px past the
    right edge is made, its bounds read back, then it is removed again."""
    canvas.select_rect(doc, doc.width() - 56, 40, 156, 60)
    selection = doc.selection()
    found = (
        None
        if selection is None
        else [selection.x(), selection.y(), selection.width(), selection.height()]
    )
    Krita.instance().action("deselect").trigger()
    return {"asked": [doc.width() - 56, 40, 156, 60], "bounds": found}


def scenario_expand(ctx: Context, section: Section) -> Scenario:
    """Expand right by 256 px on a painted 256x256 document: the canvas grows (once
    the server took the job), the result fills the new area, Apply places it over the
    strip and its context; the artist's layers keep their pixels where they were."""
    doc = yield from open_document(256, 256, "expand")
    yield from wait_connected()
    section.data["selection_past_the_edge"] = selection_probe(doc)
    yield pause(0.3)
    docker.set_prompt("a calm sea")
    docker.set_number("kd-strength", 100)
    before = begin_canvas(ctx, section, doc)
    section.data["old_rect_digests_before"] = canvas.rect_digests(doc, 0, 0, 256, 256)
    open_section("kd-expand-toggle", True)
    yield until(lambda: docker.shown("kd-expand"), 5, "the Expand section")
    docker.set_number("kd-expand-pixels", 256)
    for side in ("left", "top", "bottom"):
        docker.widget(f"kd-expand-{side}").setChecked(False)
    docker.widget("kd-expand-right").setChecked(True)
    ids_before = docker.history_ids()
    ctx.heartbeat.start()
    docker.click("kd-expand")
    try:
        yield until(lambda: doc.width() == 512, GENERATION_TIMEOUT_S, "the canvas to grow")
        section.data["grown"] = [doc.width(), doc.height()]
        section.data["projection_grown_png"] = Path(
            canvas.export_projection(doc, ctx.artifact(section, "projection-grown.png"))
        ).name
        ids = yield from wait_for_new_result(ctx, section, ids_before)
    finally:
        section.data["heartbeat"] = ctx.heartbeat.stop()
    section.data["canvas_after"] = [doc.width(), doc.height()]
    section.data["layers_grown"] = canvas.snapshot(doc)
    yield from apply_results(section, doc, ids, before)
    record_layers(ctx, section, doc, before)
    section.data["old_rect_digests_after"] = canvas.rect_digests(doc, 0, 0, 256, 256)
    section.data["projection_after_png"] = Path(
        canvas.export_projection(doc, ctx.artifact(section, "projection-after.png"))
    ).name
    open_section("kd-expand-toggle", False)


def scenario_expand_left(ctx: Context, section: Section) -> Scenario:
    """Expand left and top by 32 px on a painted 96x64 document: Krita's resizeImage
    with a negative origin moves every layer right and down, and the result lands at
    the new top-left."""
    doc = yield from open_document(96, 64, "expand-left")
    yield from wait_connected()
    docker.set_prompt("a calm sea")
    docker.set_number("kd-strength", 100)
    before = begin_canvas(ctx, section, doc)
    section.data["digests_before"] = canvas.rect_digests(doc, 0, 0, 96, 64)
    open_section("kd-expand-toggle", True)
    yield until(lambda: docker.shown("kd-expand"), 5, "the Expand section")
    docker.set_number("kd-expand-pixels", 32)
    for side in ("left", "top", "right", "bottom"):
        docker.widget(f"kd-expand-{side}").setChecked(side in ("left", "top"))
    ids_before = docker.history_ids()
    ctx.heartbeat.start()
    docker.click("kd-expand")
    try:
        yield until(lambda: doc.width() == 128, GENERATION_TIMEOUT_S, "the canvas to grow")
        ids = yield from wait_for_new_result(ctx, section, ids_before)
    finally:
        section.data["heartbeat"] = ctx.heartbeat.stop()
    section.data["canvas_after"] = [doc.width(), doc.height()]
    section.data["digests_moved"] = canvas.rect_digests(doc, 32, 32, 96, 64)
    yield from apply_results(section, doc, ids, before)
    record_layers(ctx, section, doc, before)
    section.data["projection_after_png"] = Path(
        canvas.export_projection(doc, ctx.artifact(section, "projection-after.png"))
    ).name
    docker.widget("kd-expand-right").setChecked(True)
    for side in ("left", "top"):
        docker.widget(f"kd-expand-{side}").setChecked(False)
    open_section("kd-expand-toggle", False)


def upscale_once(
    ctx: Context, section: Section, doc: Document, destination: str
) -> Generator[Any, None, dict[str, Any]]:
    """One Upscale click and Apply with the chosen destination; what it made."""
    docker.choose("kd-upscale-destination", destination)
    before = canvas.snapshot(doc)
    documents_before = {d.rootNode().uniqueId() for d in Krita.instance().documents()}
    ids_before = docker.history_ids()
    ctx.heartbeat.start()
    docker.click("kd-upscale")
    try:
        ids = yield from wait_for_new_result(ctx, section, ids_before)
    finally:
        ctx.heartbeat.stop()
    docker.select_history_rows(docker.rows_of(ids))
    yield pause(0.2)
    docker.click("kd-apply")
    if destination != "New document":
        known = {node["id"] for node in before}
        yield until(
            lambda: any(n["id"] not in known for n in canvas.snapshot(doc)),
            30,
            "the upscaled layer",
        )
        yield pause(0.3)
        after = canvas.snapshot(doc)
        return {
            "size": [doc.width(), doc.height()],
            "before": before,
            "after": after,
            "new": [n for n in after if n["id"] not in known],
        }

    def made() -> Document | None:
        fresh = [
            d
            for d in Krita.instance().documents()
            if d.rootNode().uniqueId() not in documents_before
        ]
        return fresh[0] if fresh else None

    yield until(lambda: made() is not None, 30, "the new document")
    document = made()
    assert document is not None
    document.setBatchmode(True)
    yield until(lambda: canvas.is_active(document), 20, "the new document's view")
    document.waitForDone()
    png = ctx.artifact(section, "new-document.png")
    return {
        "size": [document.width(), document.height()],
        "name": document.name(),
        "layers": canvas.snapshot(document),
        "projection_png": Path(canvas.export_projection(document, png)).name,
        "original_size": [doc.width(), doc.height()],
    }


def scenario_upscale(ctx: Context, section: Section) -> Scenario:
    """Upscale 2x a painted 128x96 document twice: as a layer (the document is scaled
    to 256x192 and the result added on top), then as a new document (512x384)."""
    doc = yield from open_document(128, 96, "upscale")
    yield from wait_connected()
    docker.set_prompt("bright checks")
    open_section("kd-upscale-toggle", True)
    yield until(lambda: docker.shown("kd-upscale"), 5, "the Upscale section")
    docker.choose("kd-upscale-factor", "2x")
    docker.set_number("kd-upscale-strength", 30)
    section.data["upscalers"] = docker.combo_items("kd-upscale-upscaler")
    results: dict[str, Any] = {}
    section.data["results"] = results
    results["layer"] = yield from upscale_once(ctx, section, doc, "Layer (scales this image)")
    results["document"] = yield from upscale_once(ctx, section, doc, "New document")
    open_section("kd-upscale-toggle", False)


# -- history kept in the .kra across a Krita restart (two launches) -------------------

KEPT_PROMPT = "a kept fox"
KEPT_NEGATIVE = "blurry"


def kra_path(ctx: Context) -> Path:
    """Where `history_save` saves its document and `history_reopen` opens it: the
    plan's `kra` (the harness gives both launches the same path), else an artifact."""
    return Path(ctx.plan.get("kra") or ctx.artifacts / "history_save-kept.kra")


def saved_list() -> QListWidget:
    return docker.widget("kd-history-saved", QListWidget)


def scenario_history_save(ctx: Context, section: Section) -> Scenario:
    """First launch: a result made through the docker (its recipe written into the
    document by the plugin), the document saved as a .kra; Krita then quits (the
    harness starts a fresh Krita for `history_reopen`)."""
    yield from wait_connected()
    doc = yield from open_document(128, 128, "kept", painted=False)
    model = docker.widget("kd-model", QComboBox)
    named = [i for i in range(model.count()) if model.itemData(i) is not None]
    model.setCurrentIndex(named[0])  # a named checkpoint, so Reuse has one to restore
    toggle = docker.widget("kd-negative-toggle", QAbstractButton)
    if not toggle.isChecked():
        toggle.click()
    docker.widget("kd-negative-prompt", QPlainTextEdit).setPlainText(KEPT_NEGATIVE)
    docker.set_number("kd-strength", 100)  # text to image (an earlier scenario may differ)
    ids = yield from generate(ctx, section, KEPT_PROMPT)
    rows = docker.rows_of(ids)
    section.data["seed_text"] = docker.history_texts(rows)[0]
    section.data["model"] = model.currentData()
    section.data["model_label"] = model.currentText()
    section.data["sampling"] = docker.label_text("kd-sampling")
    section.data["annotation_types"] = list(doc.annotationTypes())
    path = kra_path(ctx)
    path.parent.mkdir(parents=True, exist_ok=True)
    section.data["saved"] = bool(doc.saveAs(str(path)))
    yield until(path.is_file, 20, "the .kra on disk")
    section.data["kra"] = str(path)


def scenario_history_reopen(ctx: Context, section: Section) -> Scenario:
    """Second launch, a fresh Krita: open the .kra, the docker lists its saved
    results with their thumbnails; Reuse seed takes only the seed, Reuse the recipe."""
    yield from wait_connected()
    app = Krita.instance()
    path = kra_path(ctx)
    doc = app.openDocument(str(path))
    if doc is None:
        raise RuntimeError(f"Krita could not open {path}")
    doc.setBatchmode(True)
    app.activeWindow().addView(doc)
    yield until(lambda: canvas.is_active(doc), 20, "the reopened document's view")
    docker.show_dock()
    yield until(lambda: saved_list().count() >= 1, 20, "the saved history in the docker")
    listing = saved_list()
    first = listing.item(0)
    section.data["saved_count"] = listing.count()
    section.data["saved_text"] = first.text()
    section.data["saved_icon"] = not first.icon().isNull()
    section.data["saved_shown"] = docker.shown("kd-history-saved")
    section.data["annotation_types"] = list(doc.annotationTypes())
    sampling_before = docker.label_text("kd-sampling")
    section.data["sampling_before"] = sampling_before

    # the artist has moved on: another prompt, no negative, another strength and seed
    docker.set_prompt("a boat")
    docker.widget("kd-negative-prompt", QPlainTextEdit).setPlainText("")
    docker.set_number("kd-strength", 40)
    model = docker.widget("kd-model", QComboBox)
    model.setCurrentIndex(0)  # Server default
    docker.widget("kd-seed", QLineEdit).setText("7")
    docker.widget("kd-seed-lock", QAbstractButton).setChecked(False)

    listing.setCurrentItem(first)
    yield pause(0.2)
    docker.click("kd-history-reuse-seed")
    yield pause(0.2)
    section.data["after_reuse_seed"] = docker_fields()
    docker.click("kd-history-reuse")
    yield until(
        lambda: docker.label_text("kd-sampling") != sampling_before, 10, "the reused sampling"
    )
    section.data["after_reuse"] = docker_fields()


def docker_fields() -> dict[str, Any]:
    """What the docker holds now, as the artist reads it."""
    model = docker.widget("kd-model", QComboBox)
    return {
        "prompt": docker.widget("kd-prompt", QPlainTextEdit).toPlainText(),
        "negative": docker.widget("kd-negative-prompt", QPlainTextEdit).toPlainText(),
        "strength": docker.widget("kd-strength", QAbstractSlider).value(),
        "seed": docker.widget("kd-seed", QLineEdit).text(),
        "seed_locked": docker.widget("kd-seed-lock", QAbstractButton).isChecked(),
        "model": model.currentData(),
        "sampling": docker.label_text("kd-sampling"),
        "notice": docker.label_text("kd-notice"),
    }


SCENARIOS: dict[str, Callable[[Context, Section], Scenario]] = {
    "canvas_smoke": scenario_canvas_smoke,
    "server_down": scenario_server_down,
    "txt2img": scenario_txt2img,
    "inpaint_rect": scenario_inpaint_rect,
    "inpaint_edge": scenario_inpaint_edge,
    "inpaint_nonsquare": scenario_inpaint_nonsquare,
    "inpaint_soft": scenario_inpaint_soft,
    "batch": scenario_batch,
    "cancel": scenario_cancel,
    "undo": scenario_undo,
    "layout": scenario_layout,
    "control": scenario_control,
    "two_windows": scenario_two_windows,
    "live": scenario_live,
    "expand": scenario_expand,
    "expand_left": scenario_expand_left,
    "upscale": scenario_upscale,
    "history_save": scenario_history_save,
    "history_reopen": scenario_history_reopen,
}


def make_scenario(ctx: Context, name: str, section: Section) -> Scenario:
    if name not in SCENARIOS:
        raise KeyError(f"no scenario named {name!r}; known: {', '.join(sorted(SCENARIOS))}")
    return SCENARIOS[name](ctx, section)


def cleanup(ctx: Context, section: Section) -> Scenario:
    """Leaves Krita as the next scenario expects it: docker idle, no documents open."""
    if docker.find_dock() is not None and docker.busy():
        section.data["cleanup_cancelled_a_job"] = True
        docker.click("kd-cancel")
        try:
            yield until(lambda: not docker.busy(), 60, "the docker to become idle")
        except StepTimeout:
            section.data["cleanup_idle_timeout"] = True
    canvas.close_all_documents()
    yield until(lambda: not Krita.instance().documents(), 10, "all documents closed")
