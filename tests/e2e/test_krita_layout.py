"""The docker's layout in real Krita: every control reachable at Krita's default
docker size in a 1280x800 and a 1600x1000 window, messages said once and wrapped, and
what a newcomer is told (issue 12 item 5, issue 15 item 10); two windows on one
connection (issue 13 item 5)."""

from __future__ import annotations

import re

import pytest
from e2e import harness
from e2e.krita_e2e import artifact, passed
from PIL import Image

pytestmark = pytest.mark.krita


@pytest.mark.parametrize("size", ["1280x800", "1600x1000"])
def test_every_control_is_reachable(krita_run, size):
    shown = passed(krita_run, "layout")["sizes"][size]
    names = {control["name"] for control in shown["controls"]}
    for required in (
        "kd-prompt",
        "kd-generate",
        "kd-history",
        "kd-apply",
        "kd-discard",
        "kd-error",
    ):
        assert required in names, (required, sorted(names))
    unreachable = [c for c in shown["controls"] if not c["reachable"]]
    assert not unreachable, f"at {size}, controls out of reach: {unreachable}"
    opened = {control["name"]: control for control in shown["controls_sections_open"]}
    for required in ("kd-upscale", "kd-upscale-factor", "kd-expand", "kd-expand-pixels"):
        assert required in opened, (required, sorted(opened))
    unreachable = [c for c in opened.values() if not c["reachable"]]
    assert not unreachable, f"at {size}, with Upscale and Expand open: {unreachable}"
    for name, label in shown["labels"].items():
        assert label["word_wrap"] and label["height"] >= label["needed"], (name, label)
    with Image.open(artifact(krita_run, f"layout-{size}.png")) as screen:
        assert list(screen.size) == shown["window"]


def test_cannot_reach_is_said_once_wrapped_with_what_to_do(krita_run):
    data = passed(krita_run, "server_down")
    text = data["unreachable"]["text"]
    assert re.search(r"press start server|run:", text, re.I), text
    assert data["start_button_while_down"], "no Start server button while the server is down"
    after_click = data["generate_while_down"]["docker"]
    assert not re.search(r"cannot reach|unreachable", after_click["error"], re.I), after_click
    connection = data["labels_while_down"]["kd-connection"]
    assert connection["word_wrap"] and connection["height"] >= connection["needed"], connection


def test_the_first_connection_says_what_next_and_opens_the_first_image(krita_run):
    data = passed(krita_run, "server_down")
    welcome = data["welcome_once_connected"]
    assert welcome["shown"] and "Generate" in welcome["text"], welcome
    assert not welcome["start_button"]
    assert welcome["open_first_image"], "no 'Open the first image' though the image is there"
    opened = data["first_image_opened"]
    assert opened["file"].endswith("/krita-diffusers/first-image.png"), opened
    assert opened["size"] == list(harness.FIRST_IMAGE_SIZE) and opened["welcome_hidden"]


def test_two_windows_share_one_connection(krita_run):
    """One client per Krita, not per docker: the second window's docker connects over
    the same event stream, so the server saw a single client id all launch long."""
    data = passed(krita_run, "two_windows")
    assert data["windows"] == 2 and data["second_window"]["state"] == "connected"
    log = (krita_run.artifacts / "server-log.txt").read_text(encoding="utf-8", errors="replace")
    clients = set(re.findall(r"WebSocket /v1/events\?client_id=(\w+)", log))
    assert len(clients) == 1, clients
