"""Canny edges with two thresholds, in numpy (no OpenCV dependency).

The thresholds mean what they mean in A1111's ControlNet extension (which calls
OpenCV's Canny on the 8-bit picture): the gradient is the 3x3 Sobel gradient of the
0..255 intensities, measured as |gx| + |gy|, taken from the colour channel where it is
strongest. Edges are thinned to one pixel (non-maximum suppression), pixels above
`high` are edges, pixels between `low` and `high` are edges where they connect to one.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float32]


def canny(rgb: NDArray[np.uint8], low: float, high: float) -> NDArray[np.uint8]:
    """Edges of an HxWx3 (or HxW) 8-bit image: 255 on edges, 0 elsewhere."""
    low, high = min(low, high), max(low, high)
    magnitude, gx, gy = _gradient(rgb)
    thin = _non_maximum_suppression(magnitude, gx, gy)
    edges = _hysteresis(thin, low, high)
    return (edges * 255).astype(np.uint8)


def _sobel(channel: Array) -> tuple[Array, Array]:
    padded = np.pad(channel, 1, mode="reflect")

    def at(dy: int, dx: int) -> Array:
        h, w = channel.shape
        return padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    gx = (at(-1, 1) + 2 * at(0, 1) + at(1, 1)) - (at(-1, -1) + 2 * at(0, -1) + at(1, -1))
    gy = (at(1, -1) + 2 * at(1, 0) + at(1, 1)) - (at(-1, -1) + 2 * at(-1, 0) + at(-1, 1))
    return gx, gy


def _gradient(image: NDArray[np.uint8]) -> tuple[Array, Array, Array]:
    """Per pixel: the strongest channel's L1 gradient magnitude and its components."""
    pixels = image.astype(np.float32)
    channels = [pixels] if pixels.ndim == 2 else [pixels[..., c] for c in range(pixels.shape[2])]
    best_mag = best_gx = best_gy = None
    for channel in channels:
        gx, gy = _sobel(channel)
        mag = np.abs(gx) + np.abs(gy)
        if best_mag is None or best_gx is None or best_gy is None:
            best_mag, best_gx, best_gy = mag, gx, gy
            continue
        stronger = mag > best_mag
        best_mag = np.where(stronger, mag, best_mag)
        best_gx = np.where(stronger, gx, best_gx)
        best_gy = np.where(stronger, gy, best_gy)
    assert best_mag is not None and best_gx is not None and best_gy is not None
    return best_mag, best_gx, best_gy


def _non_maximum_suppression(mag: Array, gx: Array, gy: Array) -> Array:
    """Keep a pixel only where it is the ridge across the edge (4 directions)."""
    angle = (np.degrees(np.arctan2(gy, gx)) + 180.0) % 180.0
    padded = np.pad(mag, 1)
    h, w = mag.shape

    def shifted(dy: int, dx: int) -> Array:
        return padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    # across a horizontal gradient the neighbours are left/right, and so on
    sectors = [
        ((angle < 22.5) | (angle >= 157.5), (0, -1), (0, 1)),
        ((angle >= 22.5) & (angle < 67.5), (-1, -1), (1, 1)),
        ((angle >= 67.5) & (angle < 112.5), (-1, 0), (1, 0)),
        ((angle >= 112.5) & (angle < 157.5), (-1, 1), (1, -1)),
    ]
    keep = np.zeros(mag.shape, dtype=bool)
    for sector, before, after in sectors:
        ridge = (mag > shifted(*before)) & (mag >= shifted(*after))
        keep |= sector & ridge
    return np.where(keep, mag, 0.0).astype(np.float32)


def _hysteresis(mag: Array, low: float, high: float) -> NDArray[np.bool_]:
    """Weak edges survive where their 8-connected component holds a strong one."""
    candidates = mag > low
    strong = mag > high
    if not strong.any():
        return strong
    labels = _components(candidates)
    kept = np.unique(labels[strong])
    return candidates & np.isin(labels, kept)


def _components(mask: NDArray[np.bool_]) -> NDArray[np.int64]:
    """8-connected component labels of `mask` (the smallest pixel index of each),
    by min-label propagation with pointer jumping: a few dozen vectorised rounds
    even for long edges, instead of one round per pixel of the longest path."""
    h, w = mask.shape
    big = h * w
    index = np.arange(big, dtype=np.int64).reshape(h, w)
    labels = np.where(mask, index, big)
    while True:
        padded = np.pad(labels, 1, constant_values=big)
        lowest = labels.copy()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dy or dx:
                    lowest = np.minimum(lowest, padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w])
        lowest = np.where(mask, lowest, big)
        flat = np.append(lowest.ravel(), big)
        while True:  # pointer jumping: follow each label to its own label
            jumped = flat[flat]
            if np.array_equal(jumped, flat):
                break
            flat = jumped
        lowest = flat[:-1].reshape(h, w)
        if np.array_equal(lowest, labels):
            return labels
        labels = lowest
