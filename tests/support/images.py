"""Deterministic test pictures standing in for an artist's canvas."""

from __future__ import annotations

import numpy as np
from PIL import Image


def painted(width: int, height: int) -> Image.Image:
    """Gradients plus an XOR pattern: structure in every region, no two rows alike."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x ^ y) & 255], -1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def rect_mask(
    size: tuple[int, int], box: tuple[int, int, int, int], level: int = 255
) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(level, box)
    return mask
