"""The docker's behaviour around jobs in real Krita: cancel, no server, undo."""

from __future__ import annotations

import re

import pytest
from e2e.krita_e2e import passed

pytestmark = pytest.mark.krita

TECHNICAL = re.compile(r"Traceback|Errno|Exception|HTTPConnectionPool|Max retries|\bNone\b")


def test_cancel_mid_generation_adds_nothing_and_returns_to_idle(krita_run):
    data = passed(krita_run, "cancel")
    at_cancel = data["progress_at_cancel"]
    assert 1 <= at_cancel["value"] < at_cancel["maximum"], "cancel came after the last step"
    assert data["new_layers"] == [], "a cancelled job left a layer"
    assert data["history_added"] == 0, "a cancelled job left a result in the history"
    assert data["docker_after"]["busy"] is False
    assert data["docker_after"]["generate_enabled"] is True
    assert "cancel" in data["docker_after"]["progress"]["text"].lower()
    assert data["docker_after"]["error"] == ""
    before = {(n["id"], n["digest"]) for n in data["layers_before"]}
    assert {(n["id"], n["digest"]) for n in data["layers_after"]} == before


def test_server_not_running_is_said_plainly_then_it_connects(krita_run):
    data = passed(krita_run, "server_down")
    down = data["unreachable"]
    assert down["state"] == "unreachable"
    text = down["text"]
    assert "server" in text.lower() and not TECHNICAL.search(text), text
    assert re.search(r"cannot reach|can't reach|not running|unreachable|start", text, re.I), text
    pressed = data["generate_while_down"]
    if pressed["clicked"]:
        # said once, by the connection line; the click only says nothing was sent
        assert pressed["docker"]["progress"]["text"].startswith("Not sent"), pressed
        assert not TECHNICAL.search(pressed["docker"]["error"]), pressed
    # Responsive: the GUI heartbeat kept ticking while the server was away (the figure
    # is logged, not bounded: see docs/e2e.md).
    assert data["heartbeat"]["ticks"] > 0
    assert len(data["layers_while_down"]) == 2, "a failed submit must not touch the layers"
    assert data["connected"]["state"] == "connected"
    assert "cpu" in data["connected"]["text"].lower()


def test_no_stale_unreachable_message_once_connected(krita_run):
    """Once connected, nothing on the docker may still tell the artist it cannot reach
    the server (the header says Connected; a red error below must not contradict it)."""
    data = passed(krita_run, "server_down")
    shown = data["docker_once_connected"]
    assert shown["connection"]["state"] == "connected"
    assert not re.search(r"cannot reach|unreachable", shown["error"], re.I), shown["error"]


def test_undo_after_a_result_removes_it(krita_run):
    data = passed(krita_run, "undo")
    assert len(data["new_layers"]) == 1
    applied = {n["id"] for n in data["layers_after_apply"]}
    assert data["new_layers"][0]["id"] in applied
    before = [(n["id"], n["digest"]) for n in data["layers_before"]]
    after_undo = [(n["id"], n["digest"]) for n in data["layers_after_undo"]]
    assert after_undo == before, "one undo must leave exactly the layers from before"


def test_a_result_waiting_in_the_history_leaves_the_document_alone(krita_run):
    """Nothing temporary goes into the document: while a result waits unapplied, the
    document is not modified and its pixels (a next job's input) and layers are the
    artist's own."""
    data = passed(krita_run, "undo")
    unapplied = data["unapplied"]
    assert unapplied["modified"] is False, "a result alone marked the document modified"
    assert unapplied["projection_unchanged"], "a result alone changed the document's pixels"
    before = [(n["id"], n["digest"]) for n in data["layers_before"]]
    assert [(n["id"], n["digest"]) for n in unapplied["layers"]] == before


def test_undo_never_brings_back_a_temporary_layer(krita_run):
    data = passed(krita_run, "undo")
    for stage in ("layers_after_apply", "layers_after_undo", "layers_after_second_undo"):
        names = [n["name"] for n in data[stage]]
        assert not [n for n in names if n.startswith("[Diffusers preview]")], (stage, names)
