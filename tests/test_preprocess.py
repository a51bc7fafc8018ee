"""The preprocessors on test images (issue 16): Canny's two thresholds, line polarity,
transparent layers, pass-through modes, depth from the tiny estimator."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from kd_server.control.canny import canny
from kd_server.control.preprocess import control_image
from kd_server.generation import ControlMode
from support.control import disc, outline


def grey(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=np.int16)


def square(size: int = 64, level: int = 255) -> np.ndarray:
    pixels = np.zeros((size, size, 3), dtype=np.uint8)
    pixels[16:48, 16:48] = level
    return pixels


def test_canny_outlines_a_square_with_one_pixel_lines():
    edges = canny(square(), 100, 200) > 0
    ys, xs = np.nonzero(edges)
    # every edge pixel is on the square's border (within a pixel), none inside or far out
    on_border = (np.minimum(np.abs(ys - 15.5), np.abs(ys - 47.5)) <= 1) | (
        np.minimum(np.abs(xs - 15.5), np.abs(xs - 47.5)) <= 1
    )
    assert on_border.all()
    assert not edges[20:44, 20:44].any() and not edges[:10].any()
    # thin: each row crossing the square has one edge pixel per side
    assert edges[32, :32].sum() == 1 and edges[32, 32:].sum() == 1


def test_canny_thresholds_decide_which_edges_survive():
    faint = np.zeros((64, 64), dtype=np.uint8)
    faint[:, 32:] = 40  # a straight step of 40: |gx| + |gy| = 4 x 40 = 160 along it
    assert canny(faint, 100, 200).max() == 0  # below high: no seed, nothing kept
    assert canny(faint, 100, 150).max() == 255
    assert canny(faint, 170, 180).max() == 0


def test_canny_hysteresis_keeps_weak_edges_joined_to_strong_ones():
    pixels = np.zeros((64, 64), dtype=np.uint8)
    pixels[:, 32:] = 30  # a weak step down the whole height (gradient 120)
    pixels[40:, 32:] = 255  # strong at the bottom, the same edge continues
    lone = np.zeros((64, 64), dtype=np.uint8)
    lone[:, 32:] = 30
    joined = canny(pixels, 100, 500) > 0
    assert joined[:30].any()  # the weak part is kept: it touches the strong part
    assert canny(lone, 100, 500).max() == 0  # alone, weak edges go


def test_canny_sees_edges_in_any_colour_channel():
    pixels = np.zeros((64, 64, 3), dtype=np.uint8)
    pixels[16:48, 16:48, 2] = 255  # a blue square: no change in red or green
    assert canny(pixels, 100, 200).max() == 255


def test_lines_come_out_light_on_black_from_either_polarity():
    drawn = outline()  # black lines on white paper
    normal = grey(control_image(drawn, ControlMode.LINEART, preprocess=False))
    inverted = grey(
        control_image(outline(background="black", ink="white"), ControlMode.SCRIBBLE, False)
    )
    assert normal.mean() < 64 and normal.max() == 255
    assert np.array_equal(normal, inverted)


def test_lines_on_a_transparent_layer_are_read_from_alpha():
    layer = Image.new("RGBA", (64, 64), (255, 255, 255, 0))
    ImageDraw.Draw(layer).line((8, 8, 56, 56), fill=(20, 20, 20, 255), width=3)
    lines = grey(control_image(layer, ControlMode.LINEART, preprocess=True))
    assert lines[32, 32] == 255 and lines[8, 56] == 0


def test_pass_through_modes_keep_the_image_and_put_transparency_on_black():
    skeleton = Image.new("RGB", (64, 48), "black")
    ImageDraw.Draw(skeleton).line((10, 10, 50, 40), fill=(255, 0, 85), width=4)
    for mode in (ControlMode.POSE, ControlMode.TILE, None):
        same = control_image(skeleton, mode, preprocess=True)
        assert np.array_equal(np.asarray(same), np.asarray(skeleton))
    half = Image.new("RGBA", (64, 48), (200, 200, 200, 255))
    half.paste((0, 0, 0, 0), (0, 0, 32, 48))
    depth_map = np.asarray(control_image(half, ControlMode.DEPTH, preprocess=False))
    assert depth_map[10, 5].tolist() == [0, 0, 0] and depth_map[10, 50].tolist() == [200, 200, 200]


def test_canny_preprocessing_at_a_working_resolution_keeps_the_size():
    photo = disc((200, 120), background="navy", ink="orange")
    full = control_image(photo, ControlMode.CANNY, preprocess=True)
    small = control_image(photo, ControlMode.CANNY, preprocess=True, resolution=60)
    assert full.size == small.size == (200, 120)
    assert grey(full).max() == 255 and grey(small).max() > 0


@pytest.fixture(scope="module")
def estimator(tmp_path_factory):
    from kd_server.control.depth import DepthEstimator
    from kd_server.devices import choose_device
    from kd_server.library import ModelLibrary
    from support.control import write_control_models

    root = write_control_models(tmp_path_factory.mktemp("models"))
    return DepthEstimator(ModelLibrary([root]), choose_device("cpu"))


def test_depth_from_a_picture_spans_black_to_white_at_its_size(estimator):
    photo = disc((90, 60), background="navy", ink="orange")
    first = control_image(photo, ControlMode.DEPTH, True, depth=estimator)
    again = control_image(photo, ControlMode.DEPTH, True, depth=estimator)
    pixels = np.asarray(first)
    assert first.size == (90, 60) and first.mode == "RGB"
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    assert pixels.min() == 0 and pixels.max() == 255
    assert np.array_equal(pixels, np.asarray(again))
    other = np.asarray(control_image(outline((90, 60)), ControlMode.DEPTH, True, depth=estimator))
    assert np.abs(other.astype(int) - pixels).mean() > 5
