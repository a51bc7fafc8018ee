"""Generation through the docker in real Krita: what lands in the layer stack.

Each test reads one scenario's section of the shared launch's log (see conftest.py)
and the PNGs the scenario exported from Krita; nothing here talks to Krita itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from e2e.krita_e2e import GENERATION, artifact, passed
from e2e.pixel_checks import inpaint_facts, load_grey, load_rgba

pytestmark = pytest.mark.krita

PREVIEW_PREFIX = "[Diffusers preview] "


def assert_originals_untouched(data: dict[str, Any]) -> None:
    """Every layer that existed before is still there with byte-identical pixels."""
    after = {node["id"]: node for node in data["layers_after"]}
    for node in data["layers_before"]:
        assert node["id"] in after, f"layer {node['name']!r} disappeared"
        assert after[node["id"]]["digest"] == node["digest"], f"{node['name']!r} was modified"
        assert after[node["id"]]["bounds"] == node["bounds"]


def assert_no_preview_layer(data: dict[str, Any]) -> None:
    leftovers = [n["name"] for n in data["layers_after"] if n["name"].startswith(PREVIEW_PREFIX)]
    assert not leftovers, f"temporary preview layers left in the document: {leftovers}"


def one_new_paint_layer(data: dict[str, Any]) -> dict[str, Any]:
    new = data["new_layers"]
    names = [(n["name"], n["type"]) for n in new]
    assert len(new) == 1, f"expected one new layer, got {names}"
    assert new[0]["type"] == "paintlayer"
    return dict(new[0])


def test_txt2img_without_selection_fills_the_canvas(krita_run):
    data = passed(krita_run, "txt2img")
    layer = one_new_paint_layer(data)
    assert layer["bounds"] == [0, 0, 512, 512]
    pixels = load_rgba(artifact(krita_run, layer["png"]))
    assert pixels.shape == (512, 512, 4)
    assert (pixels[..., 3] == 255).all(), "a txt2img result must be opaque everywhere"
    assert pixels[..., :3].std() > 1.0, "the result is a flat colour, not an image"
    assert_originals_untouched(data)
    assert_no_preview_layer(data)
    assert "red apple" in layer["name"] and "seed" in layer["name"]


@pytest.mark.parametrize("name", ["inpaint_rect", "inpaint_edge", "inpaint_nonsquare"])
def test_inpaint_selection_lands_exactly_over_it(krita_run, name):
    data = passed(krita_run, name)
    layer = one_new_paint_layer(data)
    assert_originals_untouched(data)
    assert_no_preview_layer(data)
    width, height = data["canvas"]
    x, y, w, h = layer["bounds"]
    assert x >= 0 and y >= 0 and x + w <= width and y + h <= height, "layer leaves the canvas"

    facts = inpaint_facts(
        load_rgba(artifact(krita_run, layer["png"])),
        load_grey(artifact(krita_run, data["selection_png"])),
        load_rgba(artifact(krita_run, data["projection_before_png"])),
        load_rgba(artifact(krita_run, data["projection_after_png"])),
        GENERATION["mask_grow"],
        GENERATION["mask_feather"],
    )
    assert facts["alpha_beyond_feather_max"] == 0, facts
    assert facts["alpha_inside_min"] > 0, facts
    assert facts["alpha_interior_min"] >= 250, facts
    assert facts["projection_changed_outside_px"] == 0, facts
    assert facts["projection_changed_inside_px"] > facts["full_px"] // 2, facts
    sx, sy, sw, sh = facts["selection_bbox"]
    vx, vy, vw, vh = facts["visible_bbox"]
    reach = GENERATION["mask_grow"] + GENERATION["mask_feather"] + 1
    assert sx - reach <= vx <= sx and sy - reach <= vy <= sy, facts
    assert sx + sw <= vx + vw <= sx + sw + reach and sy + sh <= vy + vh <= sy + sh + reach, facts


def test_selection_on_the_edge_touches_the_edge(krita_run):
    data = passed(krita_run, "inpaint_edge")
    width, height = data["canvas"]
    x, y, w, h = one_new_paint_layer(data)["bounds"]
    assert x + w == width and y + h == height


def test_non_square_document(krita_run):
    data = passed(krita_run, "inpaint_nonsquare")
    assert data["canvas"] == [640, 384]


def test_soft_selection_keeps_its_grey_levels(krita_run):
    data = passed(krita_run, "inpaint_soft")
    layer = one_new_paint_layer(data)
    assert_originals_untouched(data)
    assert_no_preview_layer(data)
    pixels = load_rgba(artifact(krita_run, layer["png"]))
    selection = load_grey(artifact(krita_run, data["selection_png"]))
    facts = inpaint_facts(
        pixels,
        selection,
        load_rgba(artifact(krita_run, data["projection_before_png"])),
        load_rgba(artifact(krita_run, data["projection_after_png"])),
        GENERATION["mask_grow"],
        GENERATION["mask_feather"],
    )
    assert facts["alpha_beyond_feather_max"] == 0, facts
    assert facts["alpha_interior_min"] >= 250, facts
    assert facts["projection_changed_outside_px"] == 0, facts
    # Halfway down the selection's ramp (grey ~128) the result is half there: a hard
    # selection would be opaque at that radius, an ignored one transparent.
    ys, xs = np.mgrid[0 : selection.shape[0], 0 : selection.shape[1]]
    radius = np.hypot(xs + 0.5 - 288, ys + 0.5 - 232)
    ring = (radius >= 73) & (radius <= 77)
    assert 100 <= int(np.median(selection[ring])) <= 155, "the selection is not the soft one"
    ring_alpha = int(np.median(pixels[..., 3][ring]))
    assert 30 <= ring_alpha <= 240, f"alpha on the half-selected ring is {ring_alpha}"


def test_batch_of_two_goes_into_a_group(krita_run):
    data = passed(krita_run, "batch")
    assert_originals_untouched(data)
    assert_no_preview_layer(data)
    new = data["new_layers"]
    groups = [n for n in new if n["type"] == "grouplayer"]
    assert len(groups) == 1, [(n["name"], n["type"]) for n in new]
    children = [n for n in new if n["parent"] == groups[0]["name"]]
    assert len(children) == 2 and all(c["type"] == "paintlayer" for c in children)
    assert len(new) == 3
    assert all(c["bounds"] == [0, 0, 256, 256] for c in children)
    assert children[0]["digest"] != children[1]["digest"], "the two results are identical"
