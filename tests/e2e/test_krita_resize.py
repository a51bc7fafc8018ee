"""Expand and Upscale through the docker in real Krita (issue 17): the canvas grows
or is scaled by Krita itself, the result lands where it belongs, and the artist's
pixels stay as they were."""

from __future__ import annotations

import numpy as np
import pytest
from e2e.krita_e2e import artifact, passed
from e2e.pixel_checks import load_rgba

pytestmark = pytest.mark.krita


def test_expand_grows_the_canvas_right_and_fills_the_new_area(krita_run):
    data = passed(krita_run, "expand")
    assert data["canvas"] == [256, 256]
    assert data["grown"] == [512, 256] and data["canvas_after"] == [512, 256]
    new = data["new_layers"]
    assert len(new) == 1 and new[0]["type"] == "paintlayer", new
    x, y, w, h = new[0]["bounds"]
    assert x + w == 512 and y == 0 and h == 256, new[0]["bounds"]
    assert 256 - 64 <= x < 256, "the layer reaches a little into the old picture, no more"
    layer = load_rgba(artifact(krita_run, new[0]["png"]))
    assert layer.shape == (256, 512, 4)
    assert (layer[:, 256:, 3] == 255).all(), "the new area must be filled everywhere"
    assert (layer[:, : 256 - 64, 3] == 0).all(), "the layer must not cover the picture"
    after = load_rgba(artifact(krita_run, data["projection_after_png"]))
    strip = after[:, 256:, :]
    assert (strip[..., 3] == 255).all()
    white = (strip[..., :3] >= 250).all(axis=-1).mean()
    assert white < 0.5, f"{white:.0%} of the new area is white"
    assert strip[..., :3].std() > 1.0, "the new area is a flat colour, not a picture"


def test_expand_leaves_the_artists_pixels_where_they_were(krita_run):
    data = passed(krita_run, "expand")
    before, after = data["old_rect_digests_before"], data["old_rect_digests_after"]
    for layer_id, digest in before.items():
        assert after.get(layer_id) == digest, f"layer {layer_id} changed in the old picture"
    projection_before = load_rgba(artifact(krita_run, data["projection_before_png"]))
    grown = load_rgba(artifact(krita_run, data["projection_grown_png"]))
    assert np.array_equal(grown[:, :256], projection_before), "the picture moved or changed"


def test_expand_left_and_top_moves_the_picture_and_fills_the_new_corner(krita_run):
    data = passed(krita_run, "expand_left")
    assert data["canvas"] == [96, 64] and data["canvas_after"] == [128, 96]
    moved = data["digests_moved"]
    for layer_id, digest in data["digests_before"].items():
        assert moved.get(layer_id) == digest, f"layer {layer_id} did not move intact"
    new = data["new_layers"]
    assert len(new) == 1 and new[0]["type"] == "paintlayer", new
    assert new[0]["bounds"][:2] == [0, 0], new[0]["bounds"]
    layer = load_rgba(artifact(krita_run, new[0]["png"]))
    assert (layer[:32, :, 3] == 255).all() and (layer[:, :32, 3] == 255).all()
    after = load_rgba(artifact(krita_run, data["projection_after_png"]))
    assert (after[:32, :, 3] == 255).all() and after[:32, :, :3].std() > 1.0


def test_a_selection_past_the_edge_is_kept_whole_by_krita(krita_run):
    """Krita 5.1.5 keeps a selection's part past the canvas (`Selection.select` 100 px
    beyond the right edge reads back whole): the plugin clamps the region to the
    canvas, says so, and points to Expand. Recorded, so a change in Krita shows."""
    probe = passed(krita_run, "expand")["selection_past_the_edge"]
    assert probe["bounds"] == probe["asked"] == [200, 40, 156, 60], probe


def test_upscale_as_a_layer_scales_the_document_and_adds_the_result(krita_run):
    data = passed(krita_run, "upscale")["results"]["layer"]
    assert data["size"] == [256, 192]
    new = data["new"]
    assert len(new) == 1 and new[0]["type"] == "paintlayer", new
    assert new[0]["bounds"] == [0, 0, 256, 192]
    assert new[0]["name"].startswith("Upscaled 256x192"), new[0]["name"]
    assert len(data["after"]) == len(data["before"]) + 1  # the artist's layers all kept


def test_upscale_as_a_new_document_leaves_the_original_alone(krita_run):
    """The second upscale starts from the 256x192 the first one left."""
    data = passed(krita_run, "upscale")["results"]["document"]
    assert data["size"] == [512, 384]
    assert data["original_size"] == [256, 192]
    names = [layer["name"] for layer in data["layers"]]
    assert any(name.startswith("Upscaled 512x384") for name in names), names
    picture = load_rgba(artifact(krita_run, data["projection_png"]))
    assert picture.shape == (384, 512, 4) and (picture[..., 3] == 255).all()
    assert picture[..., :3].std() > 1.0
