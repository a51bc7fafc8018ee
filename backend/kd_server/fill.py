"""What the area to repaint holds before denoising (`FillMode`), and what transparent
pixels become.

img2img and inpaint start from the pixels they are given: below strength 1 the
sampler keeps much of them, so the area to repaint must hold something the model can
build on. Keeping the old content is right for a retouch; an expanded canvas's empty
strip or a removed object wants the surrounding colours instead (blurred in, or the
edge pixels stretched), a flat grey or random colours. Transparent pixels have no
colour at all, so they are always part of the area to fill, never white paper: under
KEEP they become neutral grey (what `FillMode.KEEP` promises in generation.py, and the
colour an inpaint model's own empty canvas has). docs/fill.md describes each mode.

Everything here is numpy and PIL on the working-size picture, once per job (well
under a second at a megapixel on two CPU cores; docs/fill.md has the measurements).
"""

from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image

from kd_server.generation import FillMode

#: Mid grey: what NEUTRAL paints, the same grey txt2img gives an inpaint model.
NEUTRAL_GREY = 127
#: NOISE paints one random colour per cell of this many pixels: the VAE turns 8x8
#: pixels into one latent, and per-pixel grain would average to grey in it.
NOISE_CELL = 8
#: A source pixel at least this opaque seeds the edge extension.
_SEED_ALPHA = 0.5


def apply(
    image: Image.Image,
    mode: FillMode,
    area: Image.Image | None = None,
    seed: int | None = None,
) -> Image.Image:
    """The RGB picture the model starts from.

    `image` is RGB or RGBA; `area` (L, same size; None: nothing) is the area to
    repaint, pixels of 128 and more belonging to it. Under every mode but KEEP the area
    is filled; transparent pixels (alpha 0) are filled under every mode (KEEP: grey),
    and partly transparent ones are laid over what the fill gives there. `seed` makes
    NOISE repeatable (None: random).
    """
    if image.mode == "RGB" and (area is None or mode is FillMode.KEEP):
        return image  # nothing transparent, nothing to fill: untouched (today's pixels)
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
    rgb, alpha = rgba[..., :3], rgba[..., 3] / 255.0
    to_fill = alpha <= 0
    if area is not None and mode is not FillMode.KEEP:
        to_fill |= np.asarray(area.convert("L"), dtype=np.uint8) >= 128
    if not to_fill.any() and (alpha >= 1).all():
        return image.convert("RGB")
    effective = FillMode.NEUTRAL if mode is FillMode.KEEP else mode
    weight = np.where(to_fill, 0.0, alpha).astype(np.float32)
    filled = _FILLERS[effective](rgb, weight, seed)
    under = alpha[..., None]
    out = np.where(to_fill[..., None], filled, rgb * under + filled * (1 - under))
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "RGB")


# ---------------------------------------------------------------------- the modes
# Each filler gets the picture (float RGB, H x W x 3), how much each pixel may be used
# as a source (0 in the area to fill, the alpha elsewhere) and the seed, and returns a
# colour for every pixel; `apply` decides where it is used.


def _neutral(rgb: np.ndarray, weight: np.ndarray, seed: int | None) -> np.ndarray:
    return np.full_like(rgb, NEUTRAL_GREY)


def _noise(rgb: np.ndarray, weight: np.ndarray, seed: int | None) -> np.ndarray:
    """Random colours, one per NOISE_CELL square, the same for the same seed."""
    height, width = weight.shape
    rng = np.random.default_rng(random.getrandbits(32) if seed is None else seed)
    cells = rng.integers(
        0, 256, (math.ceil(height / NOISE_CELL), math.ceil(width / NOISE_CELL), 3), np.uint8
    )
    grown = np.repeat(np.repeat(cells, NOISE_CELL, axis=0), NOISE_CELL, axis=1)
    return grown[:height, :width].astype(np.float32)


def _blur(rgb: np.ndarray, weight: np.ndarray, seed: int | None) -> np.ndarray:
    """The surroundings heavily blurred into the area.

    A normalised blur at halving radii (coarse to fine) gives every pixel the colour of
    the source pixels around it, the nearer ones winning; it stops at a radius of
    1/16 of the picture and is blurred once more at that radius, so the area holds
    smooth colour washes that meet its border's colours, not the border's texture.
    """
    if not weight.any():
        return _neutral(rgb, weight, seed)
    height, width = weight.shape
    longest = max(height, width)
    finest = max(2.0, longest / 16)
    mean = (rgb * weight[..., None]).sum(axis=(0, 1)) / weight.sum()
    filled = np.broadcast_to(mean, rgb.shape).astype(np.float32).copy()
    radius = float(longest)
    while radius >= finest:
        total = _box_blur(weight, radius)
        colour = np.stack([_box_blur(rgb[..., c] * weight, radius) for c in range(3)], axis=-1)
        known = total > 1e-3
        filled[known] = colour[known] / total[known, None]
        radius /= 2
    return np.stack([_smooth(filled[..., c], finest) for c in range(3)], axis=-1)


def _edge(rgb: np.ndarray, weight: np.ndarray, seed: int | None) -> np.ndarray:
    """The nearest source pixel's colour: the area's border stretched into it."""
    seeds = weight >= _SEED_ALPHA
    if not seeds.any():
        seeds = weight > 0
    if not seeds.any():
        return _neutral(rgb, weight, seed)
    rows, cols = nearest_seed(seeds)
    return rgb[rows, cols]


_FILLERS = {
    FillMode.NEUTRAL: _neutral,
    FillMode.NOISE: _noise,
    FillMode.BLUR: _blur,
    FillMode.EDGE: _edge,
}


# ------------------------------------------------------------------------ helpers


def nearest_seed(seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of the nearest True pixel of `seeds`, for every pixel.

    Jump flooding: each pass looks at the 8 pixels `step` away and keeps the nearest
    seed they know; steps halve from the picture's size to 1, plus one more pass at
    1 (JFA+1), so a megapixel takes about 11 passes instead of one per pixel of
    distance. Ties and rare misses are off by a pixel at most, which a fill cannot show.
    """
    height, width = seeds.shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.int32)
    near_y = np.where(seeds, ys, -1).astype(np.int32)
    near_x = np.where(seeds, xs, -1).astype(np.int32)
    best = np.where(seeds, 0, np.iinfo(np.int64).max).astype(np.int64)
    step = 1 << max(0, (max(height, width) - 1).bit_length() - 1)
    steps = []
    while step >= 1:
        steps.append(step)
        step //= 2
    for step in [*steps, 1]:
        for dy in (-step, 0, step):
            for dx in (-step, 0, step):
                if dy == 0 and dx == 0:
                    continue
                cand_y = _shifted(near_y, dy, dx)
                cand_x = _shifted(near_x, dy, dx)
                valid = cand_y >= 0
                dist = (cand_y.astype(np.int64) - ys) ** 2 + (cand_x.astype(np.int64) - xs) ** 2
                better = valid & (dist < best)
                near_y = np.where(better, cand_y, near_y)
                near_x = np.where(better, cand_x, near_x)
                best = np.where(better, dist, best)
    return near_y, near_x


def _shifted(values: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """out[y, x] = values[y + dy, x + dx], -1 where that is outside the picture."""
    height, width = values.shape
    out = np.full_like(values, -1)
    if abs(dy) >= height or abs(dx) >= width:
        return out
    src_y = slice(max(0, dy), height + min(0, dy))
    dst_y = slice(max(0, -dy), height + min(0, -dy))
    src_x = slice(max(0, dx), width + min(0, dx))
    dst_x = slice(max(0, -dx), width + min(0, -dx))
    out[dst_y, dst_x] = values[src_y, src_x]
    return out


def _box_blur(values: np.ndarray, radius: float) -> np.ndarray:
    """A cheap wide blur of float values: box-shrink by `radius`, scale back bilinearly."""
    image = Image.fromarray(values.astype(np.float32), mode="F")
    width, height = image.size
    small = (max(1, round(width / radius)), max(1, round(height / radius)))
    shrunk = image.resize(small, Image.Resampling.BOX)
    return np.asarray(shrunk.resize(image.size, Image.Resampling.BILINEAR), dtype=np.float32)


def _smooth(values: np.ndarray, radius: float) -> np.ndarray:
    """About a Gaussian blur of float values: three box blurs along each axis, the
    picture's edge pixels repeated beyond it (PIL's own blurs take 8-bit images only)."""
    size = max(1, round(radius))
    out = values.astype(np.float64)
    for axis in (0, 1):
        for _ in range(3):
            out = _box_1d(out, size, axis)
    return out.astype(np.float32)


def _box_1d(values: np.ndarray, size: int, axis: int) -> np.ndarray:
    """The mean over 2 * size + 1 pixels along `axis`, by a running sum."""
    pad = [(0, 0), (0, 0)]
    pad[axis] = (size + 1, size)
    sums = np.cumsum(np.pad(values, pad, mode="edge"), axis=axis)
    length = values.shape[axis]
    upper = np.take(sums, np.arange(2 * size + 1, 2 * size + 1 + length), axis=axis)
    lower = np.take(sums, np.arange(0, length), axis=axis)
    return (upper - lower) / (2 * size + 1)
