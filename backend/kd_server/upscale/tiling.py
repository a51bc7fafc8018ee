"""Overlapping tiles and their seamless blend, a strip at a time.

Why: an upscaler or a diffusion model needs memory in proportion to the pixels it
works on. Cutting the picture into tiles bounds that by the tile; overlapping the
tiles and blending them with feathered weights (a linear ramp across each overlap,
full weight elsewhere) hides the borders, because every output pixel is a weighted
mean whose weights change smoothly from one tile to the next. The blend is kept for
one row of tiles at a time (`StripBlender`): rows above the next row's top are final,
written to the 8-bit result and dropped, so no float copy of the whole picture exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Tile:
    """One tile: its box in the picture and which of its sides touch a neighbour."""

    x: int
    y: int
    width: int
    height: int
    row: int
    column: int
    feather_left: int = 0  # width of the ramp on each side (0: a picture border)
    feather_right: int = 0
    feather_top: int = 0
    feather_bottom: int = 0

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.x + self.width, self.y + self.height)

    def scaled(self, factor: int) -> Tile:
        """The same tile in a picture `factor` times larger."""
        return Tile(
            self.x * factor,
            self.y * factor,
            self.width * factor,
            self.height * factor,
            self.row,
            self.column,
            self.feather_left * factor,
            self.feather_right * factor,
            self.feather_top * factor,
            self.feather_bottom * factor,
        )


def positions(length: int, tile: int, overlap: int) -> list[int]:
    """Starts of tiles of `tile` pixels covering `length`, neighbours overlapping by at
    least `overlap`, spread evenly (the last tile ends at the border)."""
    if length <= tile:
        return [0]
    step = tile - overlap
    count = math.ceil((length - overlap) / step)
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def tile_grid(width: int, height: int, tile: int, overlap: int) -> list[list[Tile]]:
    """Rows of tiles covering a `width` x `height` picture."""
    overlap = min(overlap, tile // 2)
    xs, ys = positions(width, tile, overlap), positions(height, tile, overlap)
    tw, th = min(tile, width), min(tile, height)
    rows = []
    for r, y in enumerate(ys):
        row = []
        for c, x in enumerate(xs):
            row.append(
                Tile(
                    x,
                    y,
                    tw,
                    th,
                    r,
                    c,
                    feather_left=_overlap(xs, c - 1, c, tw),
                    feather_right=_overlap(xs, c, c + 1, tw),
                    feather_top=_overlap(ys, r - 1, r, th),
                    feather_bottom=_overlap(ys, r, r + 1, th),
                )
            )
        rows.append(row)
    return rows


def _overlap(starts: list[int], first: int, second: int, size: int) -> int:
    """How far tile `first` reaches into tile `second` (0 without a neighbour)."""
    if first < 0 or second >= len(starts):
        return 0
    return max(0, starts[first] + size - starts[second])


def _ramp(length: int, start: int, end: int) -> np.ndarray:
    """Weights along one axis: rising over `start` pixels, falling over `end`."""
    weights = np.ones(length, dtype=np.float32)
    if start > 0:
        weights[:start] = (np.arange(start, dtype=np.float32) + 0.5) / start
    if end > 0:
        weights[length - end :] = np.minimum(
            weights[length - end :], (np.arange(end, 0, -1, dtype=np.float32) - 0.5) / end
        )
    return weights


def feather(tile: Tile) -> np.ndarray:
    """The tile's blend weights (height x width): 1 inside, ramps across overlaps."""
    across = _ramp(tile.width, tile.feather_left, tile.feather_right)
    down = _ramp(tile.height, tile.feather_top, tile.feather_bottom)
    return down[:, None] * across[None, :]


class StripBlender:
    """Weighted tiles in, an 8-bit RGB picture out, holding floats only for the rows
    that later tiles can still reach.

    `into`: write the finished rows into this picture (the one the tiles are cut from)
    instead of a new one. That is safe because a row is flushed only once no later
    tile can reach it, and it saves a second whole picture in memory."""

    def __init__(self, width: int, height: int, into: Image.Image | None = None) -> None:
        self.width, self.height = width, height
        if into is not None and (into.size != (width, height) or into.mode != "RGB"):
            raise ValueError("the target must be an RGB picture of the blend's size")
        self.result = into if into is not None else Image.new("RGB", (width, height))
        self._top = 0  # the picture row the buffers start at
        self._sum = np.zeros((0, width, 3), dtype=np.float32)
        self._weight = np.zeros((0, width), dtype=np.float32)

    def add(self, tile: Tile, pixels: Image.Image) -> None:
        """Blend `pixels` (the tile's size) in at the tile's place."""
        if pixels.size != (tile.width, tile.height):
            pixels = pixels.resize((tile.width, tile.height), Image.Resampling.LANCZOS)
        bottom = tile.y + tile.height - self._top
        if bottom > self._sum.shape[0]:
            grow = bottom - self._sum.shape[0]
            self._sum = np.concatenate([self._sum, np.zeros((grow, self.width, 3), np.float32)])
            self._weight = np.concatenate([self._weight, np.zeros((grow, self.width), np.float32)])
        weights = feather(tile)
        rows = slice(tile.y - self._top, bottom)
        columns = slice(tile.x, tile.x + tile.width)
        values = np.asarray(pixels.convert("RGB"), dtype=np.float32)
        self._sum[rows, columns] += values * weights[:, :, None]
        self._weight[rows, columns] += weights

    def flush_above(self, row: int) -> None:
        """Rows above `row` get no more tiles: write them out and forget them."""
        count = min(row, self.height) - self._top
        if count <= 0:
            return
        done = self._sum[:count] / np.maximum(self._weight[:count], 1e-6)[:, :, None]
        strip = Image.fromarray(np.clip(done + 0.5, 0, 255).astype(np.uint8), "RGB")
        self.result.paste(strip, (0, self._top))
        self._sum, self._weight = self._sum[count:].copy(), self._weight[count:].copy()
        self._top += count

    def end_row(self, rows: list[list[Tile]], index: int) -> None:
        """Row `index` of `rows` is blended in: flush what the next row cannot reach."""
        self.flush_above(rows[index + 1][0].y if index + 1 < len(rows) else self.height)

    def finish(self) -> Image.Image:
        self.flush_above(self.height)
        return self.result
