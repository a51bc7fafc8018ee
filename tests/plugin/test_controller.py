"""The controller's rules with a stand-in client: no network, no server, every answer
chosen by the test. (The same controller runs against the real server in
test_panel_live.py; this file pins down what is hard to provoke there: a download
that fails, events that overtake the POST's answer, previews decoded out of order.)

Background work runs at once in these tests (`run_now`), so each step is
deterministic; the real background threads are exercised by the live tests.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from plugin.memory_canvas import MemoryCanvas
from PyQt5.QtCore import QObject, pyqtSignal

from krita_diffusers import images
from krita_diffusers.controller import Controller, GenerateInput
from krita_diffusers.geometry import Rect
from krita_diffusers.protocol import Event, EventType, JobRequest, parse_models
from krita_diffusers.settings import Settings


class StandInClient(QObject):
    """Implements `client_api.JobClient` from memory: jobs are accepted with ids
    j1, j2, ...; `files` maps result URLs to bytes; a URL in `broken` fails."""

    event_received = pyqtSignal(object)
    reconnected = pyqtSignal()
    models_changed = pyqtSignal(object)

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[JobRequest] = []
        self.files: dict[str, bytes] = {}
        self.broken: set[str] = set()
        self.records: dict[str, dict[str, Any]] = {}
        self.cancelled: list[str] = []
        self.fetches: list[str] = []
        self.on_submit: Callable[[str], None] = lambda _job_id: None

    def submit(self, prepare, on_ok, on_error) -> None:
        self.requests.append(prepare())
        job_id = f"j{len(self.requests)}"
        self.on_submit(job_id)
        on_ok({"job_id": job_id, "position": 0})

    def cancel(self, job_id, on_ok=None, on_error=None) -> None:
        self.cancelled.append(job_id)

    def job_status(self, job_id, on_ok, on_error=None) -> None:
        on_ok(self.records.get(job_id, {"job_id": job_id, "status": "running"}))

    def fetch(self, path, on_ok, on_error=None) -> None:
        self.fetches.append(path)
        if path in self.broken:
            on_error("The server answered 500: disk full")
        else:
            on_ok(self.files[path])


def run_now(work, on_ok=None, on_error=None) -> None:
    """A background runner that runs the work at once (deterministic tests)."""
    try:
        value = work()
    except Exception as exc:
        if on_error is not None:
            on_error(str(exc))
    else:
        if on_ok is not None:
            on_ok(value)


RED = images.encode_rgba_png(bytes([255, 0, 0, 255]) * 64 * 64, 64, 64)


@pytest.fixture
def client() -> StandInClient:
    return StandInClient()


@pytest.fixture
def controller(client) -> Controller:
    return Controller(client, MemoryCanvas(64, 64), Settings(), background=run_now)


def finish(client: StandInClient, job_id: str, urls: list[str]) -> None:
    """The server's side of a finished job: its record and its events."""
    images_ = [{"index": i, "seed": 100 + i, "url": url} for i, url in enumerate(urls)]
    client.records[job_id] = {"job_id": job_id, "status": "finished", "images": images_}
    for item in images_:
        client.event_received.emit(
            Event(EventType.RESULT, job_id, index=item["index"], seed=item["seed"], url=item["url"])
        )
    client.event_received.emit(Event(EventType.FINISHED, job_id))


def test_a_failed_download_says_so_and_retry_gets_the_result(client, controller):
    """Never "Done" without the pixels: a result the server made but the plugin could
    not download is reported with what failed, and Retry fetches it."""
    messages: list[str] = []
    retry: list[bool] = []
    controller.message.connect(messages.append)
    controller.retry_available.connect(retry.append)
    url = "/v1/jobs/j1/images/0"
    client.files[url] = RED
    client.broken.add(url)
    assert controller.generate(GenerateInput("a red square"))
    finish(client, "j1", [url])

    job = controller.jobs["j1"]
    assert len(controller.history) == 0
    assert job.describe() == "Download failed: press Retry"
    assert "Could not download" in messages[-1] and "disk full" in messages[-1]
    assert "Retry" in messages[-1] and retry[-1] is True

    client.broken.clear()
    controller.retry_downloads()
    assert len(controller.history) == 1 and job.describe() == "Done: 1 result"
    assert retry[-1] is False and messages[-1] == ""
    assert controller.history.items[0].seed == 100


def test_an_unreadable_result_is_a_failed_download_not_a_result(client, controller):
    url = "/v1/jobs/j1/images/0"
    client.files[url] = b"not a png"
    controller.generate(GenerateInput("garbage"))
    finish(client, "j1", [url])
    assert len(controller.history) == 0
    assert controller.jobs["j1"].describe() == "Download failed: press Retry"


def test_results_stay_off_the_canvas_until_applied(client, controller, qtbot):
    canvas = controller.canvas
    url = "/v1/jobs/j1/images/0"
    client.files[url] = RED
    controller.generate(GenerateInput("a red square"))
    finish(client, "j1", [url])
    item = controller.history.items[0]
    assert canvas.layers == []
    view = controller.views[item.item_id].view
    assert view.pixelColor(view.width() // 2, view.height() // 2).red() == 255
    assert controller.apply_items([item.item_id])
    assert [layer.image.name for layer in canvas.layers] == ["a red square (seed 100)"]


def test_an_inpaint_result_is_shown_over_the_pixels_it_was_made_from(client):
    canvas = MemoryCanvas(64, 64, rgba=(0, 0, 255, 255))
    canvas.select(Rect(16, 16, 32, 32))
    controller = Controller(client, canvas, Settings(context_margin=0), background=run_now)
    url = "/v1/jobs/j1/images/0"
    half = bytes([255, 0, 0, 255]) * 16 + bytes(4 * 16)  # left half red, right transparent
    client.files[url] = images.encode_rgba_png(half * 32, 32, 32)
    controller.generate(GenerateInput("a patch"))
    assert client.requests[0].task.value == "inpaint"
    finish(client, "j1", [url])
    view = controller.views[controller.history.items[0].item_id].view
    assert view.pixelColor(4, 16).red() == 255  # the result
    assert view.pixelColor(view.width() - 4, 16).blue() == 255  # the canvas under it


def test_the_working_size_comes_from_the_server_model_list(client, controller):
    client.models_changed.emit(
        parse_models(
            {"checkpoints": [{"name": "m", "family": "sdxl", "default": True, "working_size": 64}]}
        )
    )
    controller.generate(GenerateInput("small"))
    assert (client.requests[-1].width, client.requests[-1].height) == (64, 64)
    client.models_changed.emit(
        parse_models({"checkpoints": [{"name": "m", "family": "sdxl", "default": True}]})
    )
    controller.generate(GenerateInput("older server"))
    assert (client.requests[-1].width, client.requests[-1].height) == (1024, 1024)


def test_events_that_overtake_the_post_answer_are_replayed(client, controller):
    url = "/v1/jobs/j1/images/0"
    client.files[url] = RED
    client.on_submit = lambda job_id: finish(client, job_id, [url])  # before on_ok
    controller.generate(GenerateInput("fast"))
    assert len(controller.history) == 1
    assert controller.jobs["j1"].describe() == "Done: 1 result"


def test_previews_decoded_out_of_order_never_go_backwards(client):
    queued: list[tuple] = []
    controller = Controller(
        client,
        MemoryCanvas(64, 64),
        Settings(),
        background=lambda work, ok, err: queued.append((work, ok, err)),
    )
    shown = []
    controller.preview_ready.connect(shown.append)
    controller.generate(GenerateInput("previews"))
    small = images.encode_rgba_png(bytes([0, 255, 0, 255]) * 4, 2, 2)
    frame = "data:image/png;base64," + base64.b64encode(small).decode()
    for step in (1, 2):
        client.event_received.emit(Event(EventType.PREVIEW, "j1", step=step, preview=frame))
    assert len(queued) == 2  # one decode per frame, both still running
    for work, ok, err in reversed(queued):  # the second frame finishes first
        run_now(work, ok, err)
    assert len(shown) == 1  # the older frame, finishing later, is dropped


def test_a_reconnection_takes_back_the_cannot_reach_message(client, controller):
    messages: list[str] = []
    controller.message.connect(messages.append)
    controller.message.emit("Cannot reach the server at http://127.0.0.1:1.")
    client.reconnected.emit()
    assert messages[-1] == ""


def test_another_windows_jobs_are_not_kept(client, controller):
    """Every docker of one Krita hears the shared event stream; events of jobs this
    one did not send are dropped unless one of its own submissions is on its way."""
    for step in range(3):
        client.event_received.emit(Event(EventType.PROGRESS, "elsewhere", step=step, total=3))
    assert controller.pending.take("elsewhere") == []
    assert controller.jobs == {}
