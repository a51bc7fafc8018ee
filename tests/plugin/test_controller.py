"""The controller's rules with a stand-in client: no network, no server, every answer
chosen by the test. (The same controller runs against the real server in
test_panel_live.py; this file pins down what is hard to provoke there: a download
that fails, events that overtake the POST's answer, previews decoded out of order,
every way a job can stand after a reconnection.)

Background work runs at once in these tests (`run_now`), so each step is
deterministic; the real background threads are exercised by the live tests.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from plugin.memory_canvas import MemoryCanvas

from krita_diffusers import images
from krita_diffusers.control import ControlChoice, ControlRow, ReferenceSetting
from krita_diffusers.controller import Controller, GenerateInput
from krita_diffusers.geometry import Rect
from krita_diffusers.protocol import (
    LOST_JOB_MESSAGE,
    Event,
    EventType,
    JobRequest,
    lost_job_status,
    parse_models,
)
from krita_diffusers.qt import QObject, pyqtSignal
from krita_diffusers.settings import Settings


class StandInClient(QObject):
    """Implements `client_api.JobClient` from memory: jobs are accepted with ids
    j1, j2, ...; `files` maps result URLs to bytes; a URL in `broken` fails; `records`
    are the jobs the server knows (any other is `404 job_not_found`, i.e. lost)."""

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
        self.asked: list[str] = []  # job records read (GET /v1/jobs/{id})
        self.resumes = True  # a server of protocol 2 or later
        self.protocol = 4  # before upscale, hires and fill (protocol 5)
        self.on_submit: Callable[[str], None] = lambda _job_id: None
        self.preprocessed: list[tuple[str, bytes]] = []  # (mode, picture PNG) asked for
        self.control_image = b""  # the PNG `preprocess` answers with

    def preprocess(self, mode, prepare, on_ok, on_error) -> None:
        self.preprocessed.append((mode, prepare()))
        encoded = base64.b64encode(self.control_image).decode("ascii")
        on_ok({"mode": mode, "image": encoded})

    def submit(self, prepare, on_ok, on_error) -> None:
        self.requests.append(prepare())
        job_id = f"j{len(self.requests)}"
        self.on_submit(job_id)
        on_ok({"job_id": job_id, "position": 0})

    def cancel(self, job_id, on_ok=None, on_error=None) -> None:
        self.cancelled.append(job_id)

    def job_status(self, job_id, on_ok, on_error=None) -> None:
        self.asked.append(job_id)
        on_ok(self.records.get(job_id) or lost_job_status(job_id))

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


class Timers:
    """A scheduler whose callbacks run when the test says so (`run`)."""

    def __init__(self) -> None:
        self.due: list[Callable[[], None]] = []

    def __call__(self, delay_ms: int, work: Callable[[], None]) -> None:
        self.due.append(work)

    def run(self) -> None:
        due, self.due = self.due, []
        for work in due:
            work()


@pytest.fixture
def client() -> StandInClient:
    return StandInClient()


@pytest.fixture
def timers() -> Timers:
    return Timers()


@pytest.fixture
def controller(client, timers) -> Controller:
    return Controller(client, MemoryCanvas(64, 64), Settings(), background=run_now, schedule=timers)


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


# -- after a lost connection or a server restart (docs/protocol.md, "Resuming") ------


def state(job_id: str, status: str, urls: tuple[str, ...] = (), **fields: Any) -> Event:
    """The `state` a resuming connection sends for one job."""
    images_ = [{"index": i, "seed": 100 + i, "url": url} for i, url in enumerate(urls)]
    record = {"job_id": job_id, "status": status, "position": None, "step": 0, "total": 0}
    record.update(images=images_, error=None, loading_model=None)
    record.update(fields)
    return Event(EventType.STATE, job_id, record=record)


def running(client: StandInClient, job_id: str, step: int, total: int = 20) -> None:
    client.event_received.emit(Event(EventType.STARTED, job_id))
    client.event_received.emit(Event(EventType.PROGRESS, job_id, step=step, total=total))


def test_a_job_the_server_resumed_goes_on_without_being_asked_about(client, controller, timers):
    """Killed at step 7 and started again, the server has the job queued: the docker
    shows its place and keeps waiting; nothing is reported lost."""
    messages: list[str] = []
    controller.message.connect(messages.append)
    controller.generate(GenerateInput("long"))
    running(client, "j1", step=7)
    client.reconnected.emit()
    client.event_received.emit(state("j1", "queued", position=1))
    job = controller.jobs["j1"]
    assert job.describe() == "Queued (position 1)" and controller.busy
    timers.run()  # the moment for jobs without a state passes
    assert client.asked == [] and not job.done and not any(messages)
    running(client, "j1", step=1)  # it runs again from its first step
    assert job.describe() == "Step 1/20"


def test_a_job_finished_while_away_delivers_only_the_results_not_yet_here(
    client, controller, timers
):
    urls = ("/v1/jobs/j1/images/0", "/v1/jobs/j1/images/1")
    client.files.update(dict.fromkeys(urls, RED))
    controller.generate(GenerateInput("pair"))
    client.event_received.emit(Event(EventType.RESULT, "j1", index=0, seed=100, url=urls[0]))
    assert client.fetches == [urls[0]] and len(controller.history) == 1
    client.reconnected.emit()  # the stream dropped before the second result
    client.event_received.emit(state("j1", "finished", urls, step=20, total=20))
    # the server may announce the same image again after its state: keyed by index
    client.event_received.emit(Event(EventType.RESULT, "j1", index=1, seed=101, url=urls[1]))
    assert client.fetches == list(urls)
    assert sorted(item.index for item in controller.history.items) == [0, 1]
    assert controller.jobs["j1"].describe() == "Done: 2 results" and not controller.busy
    timers.run()
    assert client.asked == []


def test_failed_and_cancelled_states_end_jobs_as_the_server_says(client, controller, timers):
    messages: list[str] = []
    controller.message.connect(messages.append)
    controller.generate(GenerateInput("one"))
    controller.generate(GenerateInput("two"))
    client.reconnected.emit()
    error = {"code": "inputs_lost", "message": "The job's inputs could not be read back."}
    client.event_received.emit(state("j1", "failed", error=error))
    client.event_received.emit(state("j2", "cancelled"))
    timers.run()
    failed, cancelled = controller.jobs["j1"], controller.jobs["j2"]
    assert failed.describe() == "Failed" and failed.error == error["message"]
    assert cancelled.describe() == "Cancelled" and cancelled.error is None
    assert messages[-1] == error["message"]
    assert LOST_JOB_MESSAGE not in messages and client.asked == []
    assert not controller.busy


def test_only_a_job_the_server_does_not_know_is_reported_lost(client, controller, timers):
    messages: list[str] = []
    controller.message.connect(messages.append)
    controller.generate(GenerateInput("kept"))
    controller.generate(GenerateInput("forgotten"))
    running(client, "j1", step=3)
    client.reconnected.emit()
    client.event_received.emit(state("j1", "running", step=4, total=20))
    assert client.asked == []  # states get their moment before anything is asked
    timers.run()
    assert client.asked == ["j2"]  # the one without a state, and only it
    kept, lost = controller.jobs["j1"], controller.jobs["j2"]
    assert kept.describe() == "Step 4/20"
    assert lost.status.value == "failed" and lost.error == LOST_JOB_MESSAGE
    assert messages[-1] == LOST_JOB_MESSAGE


def test_a_late_state_or_a_second_reconnection_changes_nothing_wrongly(client, controller, timers):
    """States that come after the moment (a slow machine) meet a job already
    reconciled from its record; a check left over from an earlier connection asks
    about nothing."""
    controller.generate(GenerateInput("slow"))
    client.records["j1"] = {"job_id": "j1", "status": "queued", "position": 2}
    client.reconnected.emit()
    client.reconnected.emit()  # dropped and back again before any state came
    timers.due[0]()  # the first connection's check: stale
    assert client.asked == []
    timers.run()
    assert client.asked == ["j1"] and controller.jobs["j1"].describe() == "Queued (position 2)"
    client.event_received.emit(state("j1", "queued", position=1))  # late, still right
    assert controller.jobs["j1"].describe() == "Queued (position 1)"


def test_an_older_server_without_states_is_asked_at_once(client, controller, timers):
    client.resumes = False
    controller.generate(GenerateInput("old server"))
    client.records["j1"] = {"job_id": "j1", "status": "running", "step": 2, "total": 20}
    client.reconnected.emit()
    assert client.asked == ["j1"] and timers.due == []
    assert controller.jobs["j1"].describe() == "Step 2/20"


def test_a_warning_is_passed_on_for_our_jobs_only(client, controller):
    notices: list[str] = []
    controller.notice.connect(notices.append)
    controller.generate(GenerateInput("saved?"))
    text = "The result could not be saved to /srv/outputs (No space left on device)."
    client.event_received.emit(
        Event(EventType.WARNING, "j1", code="result_not_saved", message=text)
    )
    client.event_received.emit(
        Event(EventType.WARNING, "elsewhere", code="result_not_saved", message="not ours")
    )
    assert notices == [text]
    assert not controller.jobs["j1"].done  # the job carries on


# control layers


def _depth_canvas() -> MemoryCanvas:
    """A canvas with the artist's depth layer: black, one white square at (20, 20)."""
    canvas = MemoryCanvas(64, 64)
    canvas.add_layer("depth-1", "depth", rgba=(0, 0, 0, 255))
    canvas.paint("depth-1", Rect(20, 20, 8, 8), (255, 255, 255, 255))
    return canvas


DEPTH_CHOICE = ControlChoice("tiny-depth", "depth")


def test_a_control_entry_carries_the_layers_pixels_of_exactly_the_region(client):
    canvas = _depth_canvas()
    canvas.select(Rect(16, 16, 16, 16))
    controller = Controller(client, canvas, Settings(context_margin=4), background=run_now)
    before = bytes(canvas.own_layers["depth-1"][1])
    row = ControlRow("depth-1", DEPTH_CHOICE, 0.8, 0.1, 0.7)
    assert controller.generate(GenerateInput("a ball", controls=[row]))
    request = client.requests[0]
    region = Rect(12, 12, 24, 24)  # the selection plus its context
    assert request.task.value == "inpaint"
    [entry] = request.body()["control"]
    assert entry["model"] == "tiny-depth" and entry["mode"] == "depth"
    assert (entry["strength"], entry["start"], entry["end"]) == (0.8, 0.1, 0.7)
    sent = images.png_to_rgba(base64.b64decode(entry["image"]), region.width, region.height)
    assert sent == canvas.read_layer_pixels("depth-1", region)
    white = sent[((20 - 12) * 24 + (20 - 12)) * 4 : ((20 - 12) * 24 + (20 - 12)) * 4 + 4]
    assert white == bytes([255, 255, 255, 255]) and sent[:4] == bytes([0, 0, 0, 255])
    assert bytes(canvas.own_layers["depth-1"][1]) == before  # read, never changed


def test_a_text_to_image_control_has_the_requested_size(client):
    controller = Controller(
        client, _depth_canvas(), Settings(working_resolution=128), background=run_now
    )
    assert controller.generate(
        GenerateInput("a ball", controls=[ControlRow("depth-1", DEPTH_CHOICE)])
    )
    request = client.requests[0]
    assert (request.width, request.height) == (128, 128)
    png = base64.b64decode(request.body()["control"][0]["image"])
    decoded = images.decode(png)
    assert (decoded.width(), decoded.height()) == (128, 128)
    # the white square at 20..28 of 64 is at 40..56 of 128
    assert decoded.pixelColor(48, 48).red() == 255 and decoded.pixelColor(8, 8).red() == 0


def test_a_job_without_controls_sends_no_control_field(client, controller):
    assert controller.generate(GenerateInput("plain"))
    assert "control" not in client.requests[0].body()


def test_a_control_row_that_cannot_be_sent_stops_the_job_with_a_message(client):
    controller = Controller(client, _depth_canvas(), Settings(), background=run_now)
    messages: list[str] = []
    controller.message.connect(messages.append)
    gone = ControlRow("deleted-layer", DEPTH_CHOICE)
    assert not controller.generate(GenerateInput("x", controls=[gone]))
    assert "Control 1" in messages[-1] and "not in this document" in messages[-1]
    assert not controller.generate(GenerateInput("x", controls=[ControlRow("depth-1", None)]))
    assert "no control model fits" in messages[-1]
    assert client.requests == []


def test_from_canvas_adds_the_control_image_as_a_new_layer_over_the_region(client):
    canvas = MemoryCanvas(64, 64)
    canvas.select(Rect(10, 20, 8, 6))
    controller = Controller(client, canvas, Settings(context_margin=2), background=run_now)
    region = Rect(8, 18, 12, 10)
    client.control_image = images.encode_rgba_png(bytes([9, 9, 9, 255]) * 120, 12, 10)
    made: list[str] = []
    assert controller.preprocess_from_canvas("canny", 100, made.append)
    mode, picture = client.preprocessed[0]
    assert mode == "canny"
    assert images.png_to_rgba(picture, 12, 10) == canvas.read_pixels(region)
    [layer] = canvas.layers
    assert layer.image.name == "Canny (control)" and layer.image.rect == region
    assert layer.image.data == bytes([9, 9, 9, 255]) * 120 and layer.group is None
    assert made == ["inserted-1"]


def test_a_reference_layer_is_sent_whole_and_a_file_as_png(client, tmp_path):
    canvas = _depth_canvas()
    canvas.select(Rect(16, 16, 16, 16))
    controller = Controller(client, canvas, Settings(), background=run_now)
    setting = ReferenceSetting("tiny-ip-adapter", "depth-1", None, 0.4)
    assert controller.generate(GenerateInput("a ball", reference=setting))
    reference = client.requests[0].body()["reference"]
    assert reference["model"] == "tiny-ip-adapter" and reference["weight"] == 0.4
    sent = images.png_to_rgba(base64.b64decode(reference["image"]), 64, 64)
    assert sent == canvas.read_layer_pixels("depth-1", Rect(0, 0, 64, 64))

    picture = tmp_path / "look.png"
    picture.write_bytes(images.encode_rgba_png(bytes([1, 2, 3, 255]) * 12, 4, 3))
    from_file = ReferenceSetting("tiny-ip-adapter", None, str(picture))
    assert controller.generate(GenerateInput("a ball", reference=from_file))
    png = base64.b64decode(client.requests[1].body()["reference"]["image"])
    assert images.png_to_rgba(png, 4, 3) == bytes([1, 2, 3, 255]) * 12
    picture.unlink()
    messages: list[str] = []
    controller.message.connect(messages.append)
    assert not controller.generate(GenerateInput("a ball", reference=from_file))
    assert "is not there any more" in messages[-1] and len(client.requests) == 2


def test_the_dockers_sampling_goes_into_the_job(client, controller):
    """A style's (or the model's remembered) sampling replaces the settings'; a fast
    style leaves all three to the server."""
    from krita_diffusers.styles import Sampling

    controller.generate(GenerateInput("a fox"))
    body = client.requests[-1].body()
    assert (body["sampler"], body["steps"], body["cfg_scale"]) == ("DPM++ 2M Karras", 20, 7.0)
    controller.generate(GenerateInput("a fox", sampling=Sampling("Euler", 9, 3.5)))
    body = client.requests[-1].body()
    assert (body["sampler"], body["steps"], body["cfg_scale"]) == ("Euler", 9, 3.5)
    assert "sampling" not in body
    controller.generate(GenerateInput("a fox", sampling=Sampling("Euler", 9, 3.5, auto=True)))
    body = client.requests[-1].body()
    assert body["sampling"] == "auto" and "steps" not in body


def test_a_long_session_forgets_the_oldest_finished_jobs(client, controller):
    """The job list is trimmed; results stay in the history."""
    from krita_diffusers.controller import KEPT_JOBS

    for number in range(1, KEPT_JOBS + 6):
        controller.generate(GenerateInput(f"fox {number}"))
        client.files[f"/r/{number}"] = RED
        finish(client, f"j{number}", [f"/r/{number}"])
    assert len(controller.jobs) == KEPT_JOBS
    assert "j1" not in controller.jobs and f"j{KEPT_JOBS + 5}" in controller.jobs
    assert len(controller.history) == controller.history.limit
    client.event_received.emit(Event(EventType.FINISHED, "j1"))  # late: ignored
    assert "j1" not in controller.jobs


def test_the_models_family_decides_what_the_job_sends(client, controller):
    """Flux.1 dev: no negative prompt, CFG 1, the guidance; SD 1.5: the negative, clip
    skip, VAE; a server before protocol 6 gets neither guidance nor a memory mode."""
    from krita_diffusers.styles import Sampling

    models = parse_models(
        {
            "checkpoints": [
                {"name": "dream", "family": "sd15", "default": True},
                {"name": "flux1", "family": "flux-dev", "default": False},
            ]
        }
    )
    client.models_changed.emit(models)
    client.protocol = 6
    sampling = Sampling("Euler", 9, 5.0, guidance=2.5, clip_skip=2, vae="nudged")
    chosen = GenerateInput("a fox", "blurry", sampling=sampling, memory_mode="fp8")
    controller.generate(replace(chosen, model="flux1"))
    body = client.requests[-1].body()
    assert (body["negative_prompt"], body["cfg_scale"], body["guidance"]) == ("", 1.0, 2.5)
    assert body["memory_mode"] == "fp8" and "clip_skip" not in body and "vae" not in body
    controller.generate(chosen)
    body = client.requests[-1].body()
    assert (body["negative_prompt"], body["cfg_scale"], body["clip_skip"], body["vae"]) == (
        "blurry",
        5.0,
        2,
        "nudged",
    )
    assert "guidance" not in body
    client.protocol = 5
    controller.generate(replace(chosen, model="flux1"))
    body = client.requests[-1].body()
    assert "guidance" not in body and "memory_mode" not in body
