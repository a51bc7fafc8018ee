"""Live mode's decisions: when a frame is sent, and which frame's events count."""

from __future__ import annotations

from krita_diffusers.geometry import Rect
from krita_diffusers.live import LiveSession, checksum, live_region


def polls(session: LiveSession, values: list[int]) -> list[bool]:
    return [session.poll(value) for value in values]


def test_first_frame_after_the_canvas_rests() -> None:
    session = LiveSession(settle_polls=2)
    assert polls(session, [1, 1, 1]) == [False, False, True]


def test_nothing_is_sent_while_strokes_keep_changing_the_region() -> None:
    session = LiveSession(settle_polls=2)
    assert polls(session, [1, 2, 3, 4, 5, 6]) == [False] * 6
    assert polls(session, [6, 6]) == [False, True]


def test_a_sent_state_is_not_sent_again() -> None:
    session = LiveSession(settle_polls=1)
    assert polls(session, [7, 7]) == [False, True]
    session.sent()
    session.accepted("a")
    assert polls(session, [7, 7, 7]) == [False, False, False]


def test_a_change_after_a_pause_is_sent_at_once() -> None:
    session = LiveSession(settle_polls=2)
    assert polls(session, [1, 1, 1]) == [False, False, True]
    session.sent()
    session.accepted("a")
    assert polls(session, [1, 1]) == [False, False]
    assert session.poll(2) is True  # one poll after the stroke, not a pause later


def test_while_the_canvas_keeps_changing_the_next_frame_waits_for_a_pause() -> None:
    session = LiveSession(settle_polls=2)
    polls(session, [1, 1, 1])
    session.sent()
    session.accepted("a")
    assert session.poll(2) is True  # the stroke's first poll after the pause
    session.sent()
    session.accepted("b")
    assert polls(session, [3, 4, 5]) == [False, False, False]  # still painting
    assert polls(session, [5, 5]) == [False, True]  # the pause: the last state goes


def test_painting_back_to_the_sent_state_sends_nothing() -> None:
    session = LiveSession(settle_polls=1)
    polls(session, [7, 7])
    session.sent()
    session.accepted("a")
    assert session.poll(8) is True  # after a pause: sent at once
    session.sent()
    session.accepted("b")
    assert polls(session, [9, 8, 8]) == [False, False, False]


def test_a_state_that_settles_while_a_frame_is_on_its_way_waits_for_the_answer() -> None:
    session = LiveSession(settle_polls=1)
    polls(session, [1, 1])
    session.sent()
    assert polls(session, [2, 2, 2]) == [False, False, False]  # the POST not answered yet
    session.accepted("a")
    assert session.poll(2) is True


def test_a_newer_state_replaces_the_waiting_one() -> None:
    session = LiveSession(settle_polls=1)
    polls(session, [1, 1])
    session.sent()
    polls(session, [2, 2, 3, 3])  # 2 settled, then 3 replaced it, all while sending
    session.accepted("a")
    assert session.poll(3) is True
    session.sent()
    session.accepted("b")
    assert polls(session, [3, 2]) == [False, True]  # 2 was never sent alone


def test_a_changed_setting_sends_the_same_pixels_again() -> None:
    session = LiveSession(settle_polls=2)
    polls(session, [5, 5, 5])
    session.sent()
    session.accepted("a")
    assert session.poll(5) is False
    session.invalidate()
    assert session.poll(5) is True


def test_a_refused_frame_is_not_retried_until_the_canvas_changes() -> None:
    session = LiveSession(settle_polls=1)
    polls(session, [1, 1])
    session.sent()
    session.refused()
    assert polls(session, [1, 1]) == [False, False]
    assert session.poll(2) is True  # a change: sent (here at once, after a pause)


def test_only_the_newest_accepted_frame_counts() -> None:
    session = LiveSession()
    assert not session.is_current("a")
    session.sent()
    session.accepted("a")
    session.sent()
    session.accepted("b")
    assert session.is_current("b") and not session.is_current("a")


def test_superseded_is_a_quiet_cancel() -> None:
    assert LiveSession.is_quiet_cancel("superseded")
    assert not LiveSession.is_quiet_cancel(None)
    assert not LiveSession.is_quiet_cancel("cancelled")


def test_checksum_tells_a_changed_pixel() -> None:
    pixels = bytearray(64 * 64 * 4)
    before = checksum(bytes(pixels))
    pixels[4 * 100 + 1] = 9
    assert checksum(bytes(pixels)) != before


def test_live_region_is_the_selection_with_context_or_the_canvas() -> None:
    assert live_region(None, None, 32) is None
    assert live_region((100, 80), None, 32) == Rect(0, 0, 100, 80)
    region = live_region((200, 200), Rect(50, 50, 20, 20), 10)
    assert region is not None
    assert region.x <= 50 and region.y <= 50
    assert region.x + region.width >= 70 and region.y + region.height >= 70
    assert region.width < 200


def test_a_live_frame_body_leaves_sampling_to_the_server() -> None:
    from krita_diffusers.protocol import JobRequest, Task

    body = JobRequest(Task.IMG2IMG, "a cat", seed=5, live=True, sampling="auto").body()
    assert body["live"] is True and body["sampling"] == "auto" and body["seed"] == 5
    assert not {"sampler", "steps", "cfg_scale"} & set(body)
    plain = JobRequest(Task.IMG2IMG, "a cat").body()
    assert "live" not in plain and "sampling" not in plain and plain["steps"] == 20


def test_fast_models_and_the_cancel_reason_are_read() -> None:
    from krita_diffusers.protocol import parse_event, parse_models

    fast = {"kind": "lcm", "sampler": "LCM", "steps": 4, "cfg_scale": 1.0}
    models = parse_models(
        {
            "checkpoints": [{"name": "slow", "default": True}, {"name": "turbo", "fast": fast}],
            "loras": [{"name": "lcm-lora", "fast": fast}, {"name": "style", "fast": None}],
        }
    )
    assert models.loras == ["lcm-lora", "style"]
    assert models.is_fast("turbo", []) and models.is_fast(None, ["style", "lcm-lora"])
    assert not models.is_fast(None, ["style"]) and not models.is_fast("slow", [])
    event = parse_event('{"type": "cancelled", "job_id": "j", "reason": "superseded"}')
    assert event is not None and event.reason == "superseded"
