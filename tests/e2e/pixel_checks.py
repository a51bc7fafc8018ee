"""Pixel checks on what the scenarios exported from Krita (runs in the venv: numpy, PIL).

Masks follow the server's contract (DESIGN.md, backend masks.py): the result's alpha
is the selection grown by `mask_grow` and feathered by `mask_feather` pixels, exactly
0 further than grow + feather from the selection (square distance), and the selected
level deep inside.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def load_rgba(path: Path) -> np.ndarray:
    """H x W x 4, straight alpha, as Krita's layer holds it."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGBA"), dtype=np.uint8).copy()


def load_grey(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("L"), dtype=np.uint8).copy()


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Square (Chebyshev) dilation of a boolean mask, edges not wrapped: rows, then columns."""
    out = mask.copy()
    for axis in (0, 1):
        grown = out.copy()
        for shift in range(1, radius + 1):
            if axis == 0:
                grown[shift:, :] |= out[:-shift, :]
                grown[:-shift, :] |= out[shift:, :]
            else:
                grown[:, shift:] |= out[:, :-shift]
                grown[:, :-shift] |= out[:, shift:]
        out = grown
    return out


def erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Square erosion; the canvas edge does not erode (selection can touch it)."""
    return ~dilate(~mask, radius)


def bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x, y, w, h) of the True pixels, or None."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def inpaint_facts(
    layer: np.ndarray,
    selection: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    grow: int,
    feather: int,
) -> dict[str, Any]:
    """Numbers the inpaint tests assert on, gathered in one place so a failure shows all."""
    alpha = layer[..., 3]
    selected = selection > 0
    full = selection == 255
    reach = dilate(selected, grow + feather + 1)
    interior = erode(full, 4) & full
    outside = ~reach
    changed = np.any(before != after, axis=-1)
    return {
        "selected_px": int(selected.sum()),
        "visible_px": int((alpha > 0).sum()),
        "alpha_beyond_feather_max": int(alpha[outside].max()) if outside.any() else 0,
        "alpha_inside_min": int(alpha[full].min()) if full.any() else None,
        "alpha_interior_min": int(alpha[interior].min()) if interior.any() else None,
        "visible_bbox": bbox(alpha > 0),
        "selection_bbox": bbox(selected),
        "projection_changed_outside_px": int(changed[outside].sum()),
        "projection_changed_inside_px": int(changed[full].sum()),
        "full_px": int(full.sum()),
    }
