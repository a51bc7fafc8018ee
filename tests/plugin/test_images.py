"""Pixel buffers <-> PNG with QImage: channel order, soft masks, scaling."""

import pytest
from plugin.memory_canvas import MemoryCanvas

from krita_diffusers import images
from krita_diffusers.geometry import Rect
from krita_diffusers.qt import QImage


def test_swap_red_blue_turns_bgra_into_rgba_and_back():
    bgra = bytes([1, 2, 3, 4, 5, 6, 7, 8])
    assert images.swap_red_blue(bgra) == bytes([3, 2, 1, 4, 7, 6, 5, 8])
    assert images.swap_red_blue(images.swap_red_blue(bgra)) == bgra


def test_rgba_png_round_trip_keeps_straight_alpha():
    rgba = bytes([10, 20, 30, 128, 200, 100, 50, 0, 1, 2, 3, 255]) * 2  # 3x2
    png = images.encode_rgba_png(rgba, 3, 2)
    assert png.startswith(b"\x89PNG")
    assert images.png_to_rgba(png, 3, 2)[:4] == bytes([10, 20, 30, 128])
    assert images.png_to_rgba(png, 3, 2)[8:12] == bytes([1, 2, 3, 255])


def test_soft_selection_mask_keeps_grey_levels_in_an_8_bit_png():
    canvas = MemoryCanvas(9, 7)
    canvas.select(Rect(2, 1, 5, 4), level=100)
    region = Rect(1, 0, 7, 6)
    mask = canvas.read_mask(region)
    png = images.encode_mask_png(mask, region.width, region.height)
    decoded = images.decode(png)
    assert decoded.format() in (QImage.Format.Format_Grayscale8, QImage.Format.Format_Indexed8)
    grey = decoded.convertToFormat(QImage.Format.Format_Grayscale8)
    assert grey.pixelColor(0, 0).red() == 0 and grey.pixelColor(1, 1).red() == 100


def test_odd_width_buffers_are_not_misread_by_row_padding():
    rgba = bytes(range(4 * 5)) * 3  # 5x3, 20-byte rows
    assert images.png_to_rgba(images.encode_rgba_png(rgba, 5, 3), 5, 3) == rgba
    mask = bytes(range(15))  # 5x3 grey: 5-byte rows need explicit stride
    grey = images.decode(images.encode_mask_png(mask, 5, 3)).convertToFormat(
        QImage.Format.Format_Grayscale8
    )
    assert [grey.pixelColor(x, 2).red() for x in range(5)] == [10, 11, 12, 13, 14]


def test_wrong_sizes_and_garbage_raise_image_errors():
    with pytest.raises(images.ImageError):
        images.encode_rgba_png(b"\x00" * 7, 2, 1)
    with pytest.raises(images.ImageError):
        images.decode(b"not a png")


def test_scaling_to_a_region():
    png = images.encode_rgba_png(bytes([0, 255, 0, 255]) * 16, 4, 4)
    out = images.png_to_rgba(png, 10, 6)
    assert len(out) == 10 * 6 * 4 and out[:4] == bytes([0, 255, 0, 255])
