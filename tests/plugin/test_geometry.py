"""Region rules: selection bounds + context margin, clamped to the canvas."""

import pytest

from krita_diffusers.geometry import Rect, region_for_selection, txt2img_size


def test_margin_grows_selection_inside_canvas():
    assert region_for_selection(Rect(100, 100, 50, 30), 400, 300, 10) == Rect(90, 90, 70, 50)


def test_margin_clamped_at_top_left_edges():
    assert region_for_selection(Rect(0, 5, 20, 20), 100, 100, 16) == Rect(0, 0, 36, 41)


def test_margin_clamped_at_bottom_right_on_odd_non_square_canvas():
    assert region_for_selection(Rect(90, 60, 7, 5), 97, 63, 8) == Rect(82, 52, 15, 11)


def test_selection_reaching_past_canvas_counts_only_on_canvas():
    assert region_for_selection(Rect(-50, -50, 80, 70), 64, 48, 4) == Rect(0, 0, 34, 24)


def test_selection_wholly_outside_canvas_gives_empty_region():
    assert region_for_selection(Rect(200, 10, 20, 20), 64, 64, 8).is_empty


def test_zero_margin_keeps_bounds_and_negative_margin_is_ignored():
    assert region_for_selection(Rect(3, 4, 5, 6), 64, 64, 0) == Rect(3, 4, 5, 6)
    assert region_for_selection(Rect(3, 4, 5, 6), 64, 64, -9) == Rect(3, 4, 5, 6)


def test_whole_canvas_selection_with_margin_is_the_canvas():
    assert region_for_selection(Rect(0, 0, 33, 17), 33, 17, 64) == Rect(0, 0, 33, 17)


def test_single_pixel_selection():
    assert region_for_selection(Rect(10, 10, 1, 1), 21, 21, 3) == Rect(7, 7, 7, 7)


@pytest.mark.parametrize(
    ("canvas", "working", "expected"),
    [((1000, 1000), 512, (512, 512)), ((64, 64), 64, (64, 64)), ((2000, 1000), 1024, (1448, 728))],
)
def test_txt2img_size_keeps_area_and_aspect(canvas, working, expected):
    assert txt2img_size(*canvas, working) == expected


def test_txt2img_size_is_multiple_of_8_for_odd_canvas():
    width, height = txt2img_size(1023, 577, 512)
    assert width % 8 == 0 and height % 8 == 0
    assert abs(width / height - 1023 / 577) < 0.05


def test_txt2img_size_caps_extreme_aspect():
    width, height = txt2img_size(10000, 10, 512)
    assert width / height <= 4.1 and height >= 8
