"""Control layers in real Krita (issue 16): a hidden depth layer drives an inpaint
through a docker control row, and "From canvas" adds an edge layer over the region.
Reads the `control` scenario's section of the shared launch (conftest.py)."""

from __future__ import annotations

import pytest
from e2e.krita_e2e import GENERATION, passed

pytestmark = pytest.mark.krita


def test_a_hidden_depth_layer_drives_an_inpaint_and_is_left_unchanged(krita_run):
    data = passed(krita_run, "control")
    assert data["control_row"] == {"layer": "depth", "mode": "tiny-depth (depth)", "strength": 1.5}
    new = data["new_layers"]
    assert len(new) == 1 and new[0]["type"] == "paintlayer", new
    assert "a stone bridge" in new[0]["name"]
    before, after = data["depth_before"], data["depth_after_all"]
    assert data["depth_after_job"]["digest"] == before["digest"]
    assert after["digest"] == before["digest"] and after["visible"] is False


def test_from_canvas_adds_an_edge_layer_over_the_region_and_picks_it(krita_run):
    data = passed(krita_run, "control")
    [layer] = data["from_canvas"]
    assert layer["name"] == "Canny (control)" and layer["type"] == "paintlayer"
    # the selection (64, 80, 96x64) plus the context margin, clamped to the 256x256 canvas
    margin = GENERATION["context_margin"]
    x, y = max(0, 64 - margin), max(0, 80 - margin)
    right, bottom = min(256, 64 + 96 + margin), min(256, 80 + 64 + margin)
    assert layer["bounds"] == [x, y, right - x, bottom - y]
    assert data["row_layer_after_from_canvas"] == "Canny (control)"
    assert data["error_after_from_canvas"] == ""


def test_a_hidden_groups_projection_holds_its_content(krita_run):
    """The plugin reads a group control layer with `projectionPixelData`; Krita must
    keep a hidden group's projection, or hidden groups would send nothing."""
    group = passed(krita_run, "control")["hidden_group"]
    assert group["projection"] == group["child"] and group["projection_alpha_max"] == 255
