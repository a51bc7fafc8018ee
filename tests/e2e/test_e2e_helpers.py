"""The harness's own logic that needs no Krita: kritarc editing and the pixel checks.

These run everywhere (no Krita, no Xvfb), so a broken helper shows up as itself and
not as a puzzling end-to-end failure.
"""

from __future__ import annotations

import numpy as np
from e2e.harness import ini_set
from e2e.pixel_checks import bbox, dilate, erode, inpaint_facts


def test_ini_set_adds_and_replaces_keys_keeping_everything_else(tmp_path):
    rc = tmp_path / "kritarc"
    rc.write_text("[General]\nfoo=1\nweird%key=@Variant(\\0\\0)\n\n[python]\nenable_x=false\n")
    ini_set(rc, "python", "enable_x", "true")
    ini_set(rc, "python", "enable_kd_scenario", "true")
    ini_set(rc, "krita_diffusers", "steps", "4")
    text = rc.read_text()
    assert "weird%key=@Variant(\\0\\0)" in text and "foo=1" in text
    assert "[python]\nenable_x=true\nenable_kd_scenario=true\n" in text
    assert text.endswith("[krita_diffusers]\nsteps=4\n")
    assert text.count("[python]") == 1


def test_ini_set_creates_the_file(tmp_path):
    rc = tmp_path / "kritadisplayrc"
    ini_set(rc, "General", "OpenGLRenderer", "none")
    assert rc.read_text() == "[General]\nOpenGLRenderer=none\n"


def test_dilate_is_square_and_does_not_wrap():
    mask = np.zeros((7, 7), bool)
    mask[0, 3] = True
    grown = dilate(mask, 2)
    assert bbox(grown) == (1, 0, 5, 3)
    assert grown.sum() == 15 and not grown[-1].any()
    assert (erode(grown, 2) == mask).all(), "the canvas edge must not erode the selection"


def test_inpaint_facts_on_a_hand_made_result():
    selection = np.zeros((40, 40), np.uint8)
    selection[10:30, 10:30] = 255
    layer = np.zeros((40, 40, 4), np.uint8)
    layer[8:32, 8:32, 3] = 255
    before = np.zeros((40, 40, 4), np.uint8)
    after = before.copy()
    after[8:32, 8:32] = 9
    facts = inpaint_facts(layer, selection, before, after, grow=2, feather=0)
    assert facts["alpha_beyond_feather_max"] == 0
    assert facts["alpha_inside_min"] == 255
    assert facts["visible_bbox"] == (8, 8, 24, 24)
    assert facts["projection_changed_outside_px"] == 0
    assert facts["projection_changed_inside_px"] == 400
