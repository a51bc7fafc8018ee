"""The tile grid and the feathered blend: tiles that disagree leave no step, and the
float buffers never hold more than a strip of the picture."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from kd_server.upscale.tiling import StripBlender, positions, tile_grid


@pytest.mark.parametrize(
    ("length", "tile", "overlap"), [(512, 128, 32), (1000, 256, 32), (96, 256, 32)]
)
def test_tiles_cover_the_picture_and_overlap_by_at_least_the_overlap(length, tile, overlap) -> None:
    starts = positions(length, tile, overlap)
    size = min(tile, length)
    assert starts[0] == 0 and starts[-1] + size == length
    for first, second in itertools.pairwise(starts):
        assert first + size - second >= overlap


def gradient(width: int, height: int) -> np.ndarray:
    """A horizontal ramp of one level per pixel (plus a vertical one), 8-bit RGB."""
    x = np.arange(width, dtype=np.float32)[None, :] % 200
    y = np.arange(height, dtype=np.float32)[:, None] % 50
    values = np.broadcast_to(x + y, (height, width))
    return np.repeat(values[:, :, None], 3, axis=2).astype(np.uint8)


def largest_step(array: np.ndarray) -> int:
    """The largest jump between neighbouring pixels, away from the ramp's wrap."""
    a = array[:, :, 0].astype(int)
    across = np.abs(np.diff(a, axis=1))
    down = np.abs(np.diff(a, axis=0))
    return int(max(across[across < 100].max(), down[down < 40].max()))


def test_tiles_that_disagree_blend_without_a_seam() -> None:
    """Each tile comes back 8 levels too light or too dark (as two diffusion tiles
    would differ): pasted side by side that is a 16-level step at every border; the
    blend spreads it over the overlap, so no step exceeds the ramp's own by much."""
    width, height = 512, 384
    source = gradient(width, height)
    rows = tile_grid(width, height, 128, 32)
    blender = StripBlender(width, height)
    pasted = np.zeros_like(source, dtype=np.int32)
    for index, row in enumerate(rows):
        for tile in row:
            shift = 8 if (tile.row + tile.column) % 2 else -8
            crop = source[tile.y : tile.y + tile.height, tile.x : tile.x + tile.width]
            changed = np.clip(crop.astype(int) + shift, 0, 255).astype(np.uint8)
            blender.add(tile, Image.fromarray(changed, "RGB"))
            pasted[tile.y : tile.y + tile.height, tile.x : tile.x + tile.width] = changed
        blender.end_row(rows, index)
    blended = np.asarray(blender.finish())
    assert largest_step(source) == 1
    assert largest_step(pasted.astype(np.uint8)) >= 16  # the seam a plain paste leaves
    assert largest_step(blended) <= 2


def test_the_blend_of_identical_tiles_is_the_picture_itself() -> None:
    source = gradient(300, 200)
    rows = tile_grid(300, 200, 96, 24)
    blender = StripBlender(300, 200)
    largest_buffer = 0
    for index, row in enumerate(rows):
        for tile in row:
            crop = source[tile.y : tile.y + tile.height, tile.x : tile.x + tile.width]
            blender.add(tile, Image.fromarray(crop, "RGB"))
            largest_buffer = max(largest_buffer, blender._sum.shape[0])
        blender.end_row(rows, index)
    assert np.array_equal(np.asarray(blender.finish()), source)
    assert largest_buffer <= 96  # one row of tiles, never the whole height


def test_blending_into_the_source_gives_what_a_new_picture_would() -> None:
    """The refine writes finished rows into the picture its tiles are cut from (one
    whole picture less in memory); tiles cut later must still see the source."""
    pristine = Image.fromarray(gradient(300, 200), "RGB")
    shared = pristine.copy()
    rows = tile_grid(300, 200, 96, 24)
    apart, inside = StripBlender(300, 200), StripBlender(300, 200, into=shared)

    def change(picture: Image.Image, column: int) -> Image.Image:
        return picture.point(lambda v: v // 2 + 10 * column)

    for index, row in enumerate(rows):
        for tile in row:
            apart.add(tile, change(pristine.crop(tile.box), tile.column))
            inside.add(tile, change(shared.crop(tile.box), tile.column))
        apart.end_row(rows, index)
        inside.end_row(rows, index)
    assert np.array_equal(np.asarray(apart.finish()), np.asarray(inside.finish()))
