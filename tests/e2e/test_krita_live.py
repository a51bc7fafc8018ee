"""Live mode in real Krita: frames shown in the docker, never written to the document
until Apply live; turning live off leaves the document as it was."""

from __future__ import annotations

import pytest
from e2e.krita_e2e import passed

pytestmark = pytest.mark.krita


def test_live_frames_leave_the_document_alone_and_off_changes_nothing(krita_run):
    data = passed(krita_run, "live")
    before = data["before"]
    assert before["modified"] is False
    assert data["first_frame"] == before, "a live frame changed the document"
    assert data["preview_shown"], "the live frame is not shown in the docker"
    assert data["after_first_off"] == before, "turning live off changed the document"
    assert "not fast enough" in data["live_note"]  # the embedded tiny model has no fast mode


def test_a_stroke_gets_a_new_frame_and_apply_live_makes_one_layer(krita_run):
    data = passed(krita_run, "live")
    assert data["frames_sent_for_stroke"] >= 1
    assert data["before_apply"]["layers"] != data["before"]["layers"]  # the stroke's pixels
    new = data["new_layers"]
    assert len(new) == 1 and new[0]["type"] == "paintlayer", new
    assert new[0]["name"].startswith("Live: a red boat"), new[0]["name"]
    known = {(n["id"], n["digest"]) for n in data["before_apply"]["layers"]}
    after = {(n["id"], n["digest"]) for n in data["after_apply"]["layers"]}
    assert known <= after, "Apply live changed one of the artist's layers"


def test_turning_live_off_after_apply_changes_nothing(krita_run):
    data = passed(krita_run, "live")
    assert data["live_checked_after_off"] is False
    assert data["after_off"] == data["after_apply"]
