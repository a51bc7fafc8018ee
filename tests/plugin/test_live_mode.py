"""Live mode's Qt side with the stand-in client (test_controller.py's): what is sent,
which events count, what Apply and turning live off do to the canvas. Polls are
called by the test (the docker's timer in real use), so no clock is involved."""

from __future__ import annotations

from plugin.memory_canvas import MemoryCanvas
from plugin.test_controller import RED, StandInClient, run_now

from krita_diffusers.geometry import Rect
from krita_diffusers.live import SETTLE_POLLS
from krita_diffusers.live_mode import NO_PROMPT, LiveMode, LiveSettings
from krita_diffusers.protocol import Event, EventType, Lora, Task, parse_models


def make(canvas: MemoryCanvas | None = None) -> tuple[LiveMode, StandInClient, MemoryCanvas]:
    client = StandInClient()
    canvas = canvas or MemoryCanvas(64, 64)
    return LiveMode(client, canvas, run_now), client, canvas


def paint(canvas: MemoryCanvas, value: int) -> None:
    """A stroke: one pixel changes."""
    data = bytearray(canvas.pixels)
    data[0] = value
    canvas.pixels = bytes(data)


def settle(live: LiveMode, polls: int = SETTLE_POLLS + 1) -> None:
    for _ in range(polls):
        live.poll()


def test_a_frame_is_sent_after_a_pause_with_live_settings() -> None:
    live, client, _canvas = make()
    assert live.start(LiveSettings("a cat", strength_percent=40, loras=[Lora("lcm", 1.0)]))
    settle(live)
    assert len(client.requests) == 1
    request = client.requests[0]
    body = request.body()
    assert request.task is Task.IMG2IMG and body["live"] is True and body["sampling"] == "auto"
    assert body["strength"] == 0.4 and body["seed"] >= 0 and request.image
    assert "steps" not in body


def test_a_strokes_first_poll_goes_then_none_until_a_pause_and_the_seed_stays_locked() -> None:
    live, client, canvas = make()
    live.start(LiveSettings("a cat"))
    settle(live)
    for value in range(10, 20):
        paint(canvas, value)
        live.poll()
    assert len(client.requests) == 2  # the first frame, and the stroke's first poll
    settle(live)
    assert len(client.requests) == 3  # the state after the pause
    assert len({request.seed for request in client.requests}) == 1


def test_only_the_current_frames_result_is_shown_and_superseded_is_quiet() -> None:
    live, client, canvas = make()
    shown, messages = [], []
    live.frame_ready.connect(shown.append)
    live.message.connect(messages.append)
    live.start(LiveSettings("a cat"))
    settle(live)
    paint(canvas, 9)
    settle(live)
    assert [len(client.requests), live.session and live.session.current_job] == [2, "j2"]
    client.files["/r1"] = RED
    client.files["/r2"] = RED
    client.event_received.emit(Event(EventType.CANCELLED, "j1", reason="superseded"))
    client.event_received.emit(Event(EventType.RESULT, "j1", index=0, seed=1, url="/r1"))
    assert shown == [] and messages == [] and client.fetches == []
    client.event_received.emit(Event(EventType.RESULT, "j2", index=0, seed=1, url="/r2"))
    assert len(shown) == 1 and live.result is not None
    client.event_received.emit(Event(EventType.CANCELLED, "j2", reason="cancelled"))
    assert messages == ["The live frame was cancelled on the server."]


def test_apply_makes_one_layer_and_turning_off_writes_nothing() -> None:
    live, client, canvas = make(MemoryCanvas(64, 64))
    canvas.select(Rect(8, 8, 16, 16))
    before = canvas.pixels
    live.start(LiveSettings("a cat"))
    settle(live)
    client.files["/r1"] = RED
    client.event_received.emit(Event(EventType.RESULT, "j1", index=0, seed=3, url="/r1"))
    assert canvas.layers == []  # shown in the docker only
    assert live.apply()
    assert len(canvas.layers) == 1
    layer = canvas.layers[0].image
    assert layer.name.startswith("Live: a cat") and layer.rect == client_region(client, canvas)
    assert layer.data[:4] == bytes([255, 0, 0, 255])
    live.stop()
    assert len(canvas.layers) == 1 and canvas.pixels == before and not live.active
    client.event_received.emit(Event(EventType.RESULT, "j1", index=0, seed=3, url="/r1"))
    assert live.result is None


def client_region(client: StandInClient, canvas: MemoryCanvas) -> Rect:
    from krita_diffusers.live import live_region

    region = live_region(canvas.canvas_size(), canvas.selection, 32)
    assert region is not None
    return region


def test_turning_off_before_a_result_leaves_the_canvas_as_it_was() -> None:
    live, client, canvas = make()
    before = canvas.pixels
    live.start(LiveSettings("a cat"))
    settle(live)
    live.stop()
    client.files["/r1"] = RED
    client.event_received.emit(Event(EventType.RESULT, "j1", index=0, seed=3, url="/r1"))
    assert canvas.layers == [] and canvas.pixels == before and client.fetches == []
    assert not live.apply()


def test_events_that_overtake_the_post_are_kept() -> None:
    live, client, _canvas = make()
    client.files["/r1"] = RED
    client.on_submit = lambda job_id: client.event_received.emit(
        Event(EventType.RESULT, job_id, index=0, seed=3, url="/r1")
    )
    live.start(LiveSettings("a cat"))
    settle(live)
    assert live.result is not None


def test_a_changed_prompt_sends_a_new_frame_and_no_prompt_is_refused() -> None:
    live, client, _canvas = make()
    messages: list[str] = []
    live.message.connect(messages.append)
    assert not live.start(LiveSettings("  "))
    assert messages == [NO_PROMPT] and not live.active
    live.start(LiveSettings("a cat"))
    settle(live)
    live.update(LiveSettings("a dog"))
    live.poll()
    assert [r.prompt for r in client.requests] == ["a cat", "a dog"]


def test_a_reconnection_sends_the_current_state_again() -> None:
    live, client, _canvas = make()
    live.start(LiveSettings("a cat"))
    settle(live)
    client.reconnected.emit()
    live.poll()
    assert len(client.requests) == 2


def test_fast_enough_reads_the_server_models() -> None:
    models = parse_models({"checkpoints": [{"name": "m"}], "loras": [{"name": "lcm", "fast": {}}]})
    assert LiveMode.fast_enough(models, "m", [Lora("lcm", 1.0)])
    assert not LiveMode.fast_enough(models, "m", [])


def test_a_slow_model_runs_with_the_artists_sampling() -> None:
    live, client, _canvas = make()
    live.start(LiveSettings("a cat", sampling=("Euler", 3, 5.0)))
    settle(live)
    body = client.requests[0].body()
    assert "sampling" not in body and body["live"] is True
    assert (body["sampler"], body["steps"], body["cfg_scale"]) == ("Euler", 3, 5.0)


def test_live_frames_send_fill_only_to_a_protocol_5_server() -> None:
    live, client, _canvas = make()
    live.start(LiveSettings("a cat"))
    settle(live)
    assert "fill" not in client.requests[-1].body()  # protocol 4: left out
    live.stop()
    see_through, client5, _ = make(MemoryCanvas(64, 64, rgba=(0, 0, 0, 0)))
    client5.protocol = 5
    see_through.start(LiveSettings("a cat"))
    settle(see_through)
    assert client5.requests[-1].body()["fill"] == "blur"  # transparent: the picture blurred in
