"""Inpainting geometry on the server side: working sizes, mask growth and feathering,
and the RGBA result of the inpaint contract (docs/architecture.md).

The artist's selection arrives as an 8-bit mask at the region's own resolution; grow
and feather are in those pixels, so they mean the same thing whatever the model's
working size is. The model then repaints every pixel the result can show (alpha > 0).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageFilter


def working_size(width: int, height: int, target: int, multiple: int = 8) -> tuple[int, int]:
    """Scale (width, height) to about target x target pixels, aspect kept, to multiples of 8."""
    scale = math.sqrt((target * target) / (width * height))
    w = max(multiple, round(width * scale / multiple) * multiple)
    h = max(multiple, round(height * scale / multiple) * multiple)
    return w, h


def snap_size(width: int, height: int, multiple: int = 8) -> tuple[int, int]:
    """Round a requested txt2img size down to the model's multiple (never below it)."""
    return max(multiple, width // multiple * multiple), max(multiple, height // multiple * multiple)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Square dilation by `radius` pixels, separable so it costs O(radius) passes."""
    out = mask
    for axis in (0, 1):
        grown = out.copy()
        for shift in range(1, radius + 1):
            forward = np.roll(out, shift, axis=axis)
            backward = np.roll(out, -shift, axis=axis)
            # np.roll wraps around; blank the wrapped rows/columns.
            if axis == 0:
                forward[:shift, :] = 0
                backward[-shift:, :] = 0
            else:
                forward[:, :shift] = 0
                backward[:, -shift:] = 0
            np.maximum(grown, forward, out=grown)
            np.maximum(grown, backward, out=grown)
        out = grown
    return out


def prepare_mask(mask: Image.Image, grow: int, feather: int) -> Image.Image:
    """Grow then feather the selection mask; grey levels of soft selections are kept.

    The blur is centred on the grown edge, then clipped to `feather` pixels beyond it,
    so pixels deep inside keep their selected level and pixels further than
    grow + feather from the selection are exactly 0.
    """
    values = np.asarray(mask.convert("L"), dtype=np.uint8)
    if grow > 0:
        values = _dilate(values, grow)
    if feather > 0:
        blurred = Image.fromarray(values, mode="L").filter(ImageFilter.GaussianBlur(feather / 2))
        values = np.minimum(np.asarray(blurred, dtype=np.uint8), _dilate(values, feather))
    return Image.fromarray(values, mode="L")


def repaint_area(alpha: Image.Image) -> Image.Image:
    """The binary mask the model repaints: every pixel the result will show."""
    values = np.asarray(alpha, dtype=np.uint8)
    return Image.fromarray(np.where(values > 0, 255, 0).astype(np.uint8), mode="L")


def has_transparency(image: Image.Image) -> bool:
    """Whether any pixel is less than opaque (those are filled, never read as white)."""
    if "A" not in image.getbands() and "transparency" not in image.info:
        return False
    lowest = image.convert("RGBA").getchannel("A").getextrema()[0]
    return isinstance(lowest, int) and lowest < 255


def flatten_rgb(
    image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)
) -> Image.Image:
    """RGB on a flat `background`: for pictures that are shown or analysed as they
    look (control images). What the model starts from is filled instead (kd_server.fill)."""
    if image.mode == "RGB":
        return image
    rgba = image.convert("RGBA")
    base = Image.new("RGB", rgba.size, background)
    base.paste(rgba, mask=rgba.getchannel("A"))
    return base


def compose_result(
    generated: Image.Image, alpha: Image.Image, size: tuple[int, int]
) -> Image.Image:
    """Scale the model's output back to the region and attach the feathered mask as alpha."""
    rgb = generated.convert("RGB")
    if rgb.size != size:
        rgb = rgb.resize(size, Image.Resampling.LANCZOS)
    result = rgb.convert("RGBA")
    result.putalpha(alpha)
    return result
