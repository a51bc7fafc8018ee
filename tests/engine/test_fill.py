"""Fill modes (kd_server.fill, docs/fill.md): what the area to repaint and transparent
pixels hold before denoising, pixel by pixel, and through the engine."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kd_server import fill
from kd_server.generation import FillMode, Task
from support.images import painted, rect_mask
from support.jobs import make_request

SIZE = (64, 48)
BLUE, RED = (10, 120, 200), (220, 40, 30)


def two_colours() -> Image.Image:
    """Blue on the left half, red on the right: a fill must take the side's colour."""
    image = Image.new("RGB", SIZE, BLUE)
    image.paste(RED, (32, 0, 64, 48))
    return image


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def strip_mask() -> Image.Image:
    """A band across the middle rows: above is the top edge, below the bottom edge."""
    return rect_mask(SIZE, (0, 16, 64, 32))


def test_keep_leaves_opaque_pixels_untouched() -> None:
    source = painted(*SIZE)
    assert fill.apply(source, FillMode.KEEP, strip_mask()) is source
    rgba = source.convert("RGBA")
    assert np.array_equal(pixels(fill.apply(rgba, FillMode.KEEP, strip_mask())), pixels(source))


def test_neutral_is_mid_grey_in_the_area_only() -> None:
    source = painted(*SIZE)
    out = pixels(fill.apply(source, FillMode.NEUTRAL, strip_mask()))
    assert (out[16:32] == fill.NEUTRAL_GREY).all()
    assert np.array_equal(out[:16], pixels(source)[:16])
    assert np.array_equal(out[32:], pixels(source)[32:])


def test_a_soft_area_is_filled_from_its_middle_grey_level() -> None:
    """Inpaint passes the feathered mask: the fill stops half-way through the feather."""
    ramp = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1)), "L")
    source = painted(*SIZE)
    out = pixels(fill.apply(source, FillMode.NEUTRAL, ramp))
    filled = (out == fill.NEUTRAL_GREY).all(axis=(0, 2))
    assert filled[32:].all() and not filled[:32].any()  # 4 * 32 = 128


def test_edge_stretches_the_nearest_border_pixels_into_the_area() -> None:
    source = painted(*SIZE)
    area = rect_mask(SIZE, (40, 0, 64, 48))  # the right strip, as when a canvas grows
    out = pixels(fill.apply(source, FillMode.EDGE, area))
    border = pixels(source)[:, 39]
    for column in range(40, 64):
        assert np.array_equal(out[:, column], border), column
    assert np.array_equal(out[:, :40], pixels(source)[:, :40])


def test_edge_fills_a_hole_from_both_sides() -> None:
    out = pixels(fill.apply(two_colours(), FillMode.EDGE, rect_mask(SIZE, (16, 8, 48, 40))))
    assert (out[24, 17] == BLUE).all() and (out[24, 46] == RED).all()


def test_blur_takes_the_surrounding_colours_and_is_smooth() -> None:
    source = painted(*SIZE)
    source.paste(BLUE, (0, 0, 32, 48))
    source.paste(RED, (32, 0, 64, 48))
    area = rect_mask(SIZE, (16, 8, 48, 40))
    out = pixels(fill.apply(source, FillMode.BLUR, area))
    hole = out[8:40, 16:48]
    assert np.abs(out[24, 17] - BLUE).max() < 60  # near the blue side: bluish
    assert np.abs(out[24, 46] - RED).max() < 60
    # A wash: no step between neighbours above an eighth of blue-to-red (210 in R).
    assert np.abs(np.diff(hole, axis=1)).max() <= 26
    assert np.abs(np.diff(hole, axis=0)).max() <= 26
    # Every colour inside lies between the two surroundings' colours.
    low, high = np.minimum(BLUE, RED), np.maximum(BLUE, RED)
    assert ((hole >= low - 2) & (hole <= high + 2)).all()
    assert np.array_equal(out[:8], pixels(source)[:8])


def test_noise_is_deterministic_per_seed_and_varied() -> None:
    source = painted(*SIZE)
    first = pixels(fill.apply(source, FillMode.NOISE, strip_mask(), seed=3))
    again = pixels(fill.apply(source, FillMode.NOISE, strip_mask(), seed=3))
    other = pixels(fill.apply(source, FillMode.NOISE, strip_mask(), seed=4))
    assert np.array_equal(first, again)
    assert not np.array_equal(first[16:32], other[16:32])
    band = first[16:32].reshape(-1, 3)
    assert len({tuple(c) for c in band.tolist()}) >= 8  # many colours, not one
    assert band.std() > 40
    assert np.array_equal(first[:16], pixels(source)[:16])


def transparent_right_half() -> Image.Image:
    image = two_colours().convert("RGBA")
    image.paste((255, 255, 255, 0), (32, 0, 64, 48))  # transparent "white paper"
    return image


@pytest.mark.parametrize("mode", list(FillMode))
def test_transparent_pixels_are_filled_never_white(mode: FillMode) -> None:
    out = pixels(fill.apply(transparent_right_half(), mode, None, seed=1))
    right = out[:, 32:].reshape(-1, 3)
    assert not (right >= 250).all(axis=1).any(), mode  # no white pixel
    assert (out[:, :32] == BLUE).all()  # the opaque half is kept
    if mode in (FillMode.KEEP, FillMode.NEUTRAL):
        assert (right == fill.NEUTRAL_GREY).all()
    if mode in (FillMode.EDGE, FillMode.BLUR):
        assert np.abs(out[24, 33] - BLUE).max() < 40  # the edge colour flows in


def test_partly_transparent_pixels_lie_over_the_fill() -> None:
    image = Image.new("RGBA", SIZE, (250, 250, 250, 128))
    out = pixels(fill.apply(image, FillMode.KEEP))
    expected = round(250 * 128 / 255 + fill.NEUTRAL_GREY * (1 - 128 / 255))
    assert np.abs(out - expected).max() <= 1


def test_nearest_seed_is_exact_on_a_column() -> None:
    seeds = np.zeros((40, 70), dtype=bool)
    seeds[:, 5] = True
    rows, cols = fill.nearest_seed(seeds)
    assert (cols == 5).all()
    assert np.array_equal(rows, np.mgrid[0:40, 0:70][0])


# ------------------------------------------------------------------ in the engine


def test_engine_inpaint_with_a_fill_mode(embedded_engine) -> None:
    size, box = (64, 64), (16, 16, 48, 48)

    def inpaint(mode: FillMode) -> np.ndarray:
        request = make_request(
            task=Task.INPAINT,
            prompt="x",
            image=painted(*size),
            mask=rect_mask(size, box),
            strength=0.5,
            steps=4,
            seed=9,
            fill=mode,
        )
        result = embedded_engine.generate(request)[0].image
        assert result.size == size and result.mode == "RGBA"
        alpha = np.asarray(result.getchannel("A"))
        assert alpha[32, 32] == 255 and alpha[0, 0] == 0
        return pixels(result)[20:44, 20:44]

    keep, neutral = inpaint(FillMode.KEEP), inpaint(FillMode.NEUTRAL)
    assert np.array_equal(inpaint(FillMode.NEUTRAL), neutral)  # same seed, same pixels
    # The fill reached the pipeline: at half strength the start shows through.
    assert np.abs(neutral - keep).mean() > 5


def test_engine_img2img_fills_transparent_pixels(embedded_engine) -> None:
    canvas = painted(64, 64).convert("RGBA")
    canvas.paste((255, 255, 255, 0), (32, 0, 64, 64))

    def img2img(mode: FillMode) -> np.ndarray:
        request = make_request(
            task=Task.IMG2IMG, prompt="x", image=canvas, strength=0.25, steps=4, seed=2, fill=mode
        )
        return pixels(embedded_engine.generate(request)[0].image)

    edge = img2img(FillMode.EDGE)
    white = make_request(
        task=Task.IMG2IMG,
        prompt="x",
        image=painted(64, 64).convert("RGB"),
        strength=0.25,
        steps=4,
        seed=2,
    )
    white.inputs.image.paste((255, 255, 255), (32, 0, 64, 64))
    flattened = pixels(embedded_engine.generate(white)[0].image)
    # The transparent half is not white paper: the model started from other pixels.
    assert np.abs(edge - flattened).mean() > 2
    assert np.array_equal(img2img(FillMode.EDGE), edge)
    assert not np.array_equal(img2img(FillMode.NEUTRAL), edge)


def test_a_random_seed_reported_for_a_noise_fill_reproduces_the_picture(embedded_engine) -> None:
    size, box = (64, 64), (16, 16, 48, 48)

    def inpaint(seed: int | None):
        request = make_request(
            task=Task.INPAINT,
            prompt="x",
            image=painted(*size),
            mask=rect_mask(size, box),
            strength=0.5,
            steps=3,
            seed=seed,
            fill=FillMode.NOISE,
        )
        return embedded_engine.generate(request)[0]

    drawn = inpaint(None)  # random: the engine picks the seed and reports it
    again = inpaint(drawn.seed)
    assert np.array_equal(pixels(again.image), pixels(drawn.image))
