"""Pixel work of the A1111 layer: decoding, A1111's resize modes, mask crops and paste-back.

A1111 renders img2img at the request's `width` x `height` (the init image is fitted
to it by `resize_mode`) and returns whole RGB pictures, while our engine works on a
region and returns, for inpainting, an RGBA patch whose alpha is the feathered mask.
These helpers bridge the two: fit the inputs, cut the region the engine should see,
and paste its patch back into the fitted picture.
"""

from __future__ import annotations

import base64

from PIL import Image

from kd_server.api.imaging import PNG_SIGNATURE, ImageInputError, decode_base64, open_image

Box = tuple[int, int, int, int]

#: A1111's `resize_mode` values.
JUST_RESIZE, CROP_AND_RESIZE, RESIZE_AND_FILL, LATENT_RESIZE = 0, 1, 2, 3

_FORMATS = {PNG_SIGNATURE: "PNG", b"\xff\xd8\xff": "JPEG", b"RIFF": "WEBP"}


def decode_image(data: str, field: str, max_pixels: int) -> Image.Image:
    """Base64 PNG, JPEG or WebP (data-URI prefix optional) -> a loaded PIL image.

    A1111 accepts any image PIL reads, and scripts often send the bytes of a .jpg;
    every format gets v1's checks (pixel count from the header, readable, 8x8 or more).
    """
    raw = decode_base64(data, field)
    fmt = next((f for sig, f in _FORMATS.items() if raw.startswith(sig)), None)
    if fmt is None:
        raise ImageInputError(field, "must be a base64 PNG, JPEG or WebP image")
    return open_image(raw, fmt, field, max_pixels)


def fit(image: Image.Image, width: int, height: int, mode: int) -> Image.Image:
    """Fit `image` to width x height the way A1111's `resize_mode` does.

    0 stretches; 1 scales to cover and centre-crops; 2 scales to fit and fills the
    bands by stretching the image's edge rows or columns; 3 (A1111's latent upscale)
    is done in pixel space, like 0.
    """
    if image.size == (width, height):
        return image
    if mode == CROP_AND_RESIZE:
        return _cover(image, width, height)
    if mode == RESIZE_AND_FILL:
        return _contain_and_fill(image, width, height)
    return image.resize((width, height), Image.Resampling.LANCZOS)


def _cover(image: Image.Image, width: int, height: int) -> Image.Image:
    scale = max(width / image.width, height / image.height)
    w, h = max(width, round(image.width * scale)), max(height, round(image.height * scale))
    scaled = image.resize((w, h), Image.Resampling.LANCZOS)
    left, top = (w - width) // 2, (h - height) // 2
    return scaled.crop((left, top, left + width, top + height))


def _contain_and_fill(image: Image.Image, width: int, height: int) -> Image.Image:
    scale = min(width / image.width, height / image.height)
    w = min(width, max(1, round(image.width * scale)))
    h = min(height, max(1, round(image.height * scale)))
    scaled = image.resize((w, h), Image.Resampling.LANCZOS)
    canvas = Image.new(image.mode, (width, height))
    left, top = (width - w) // 2, (height - h) // 2
    canvas.paste(scaled, (left, top))
    bottom, right = height - top - h, width - left - w
    bands = (  # (source strip of `scaled`, size of the band, where it goes)
        ((0, 0, w, 1), (w, top), (left, 0)),
        ((0, h - 1, w, h), (w, bottom), (left, top + h)),
        ((0, 0, 1, h), (left, h), (0, top)),
        ((w - 1, 0, w, h), (right, h), (left + w, top)),
    )
    for strip, size, where in bands:
        if size[0] > 0 and size[1] > 0:
            canvas.paste(scaled.crop(strip).resize(size), where)
    return canvas


def mask_box(mask: Image.Image, margin: int, min_size: int = 8) -> Box | None:
    """The bounding box of the mask's non-zero pixels grown by `margin`, clamped to the
    image and at least `min_size` on each side; None when the mask is empty."""
    box = mask.getbbox()
    if box is None:
        return None
    left, top, right, bottom = box
    left, top = max(0, left - margin), max(0, top - margin)
    right, bottom = min(mask.width, right + margin), min(mask.height, bottom + margin)
    left, right = _at_least(left, right, min_size, mask.width)
    top, bottom = _at_least(top, bottom, min_size, mask.height)
    return left, top, right, bottom


def _at_least(start: int, end: int, size: int, limit: int) -> tuple[int, int]:
    """Widen [start, end) around its centre to `size` (or the whole axis if shorter)."""
    if end - start >= size or limit <= size:
        return (start, end) if end - start >= size else (0, limit)
    centre = (start + end) // 2
    start = min(max(0, centre - size // 2), limit - size)
    return start, start + size


def paste_back(base: Image.Image, box: Box, patch: Image.Image) -> Image.Image:
    """Blend the engine's RGBA patch into `base` at `box` through its alpha (RGB out)."""
    out = base.convert("RGB").copy()
    patch = patch.convert("RGBA")
    if patch.size != (box[2] - box[0], box[3] - box[1]):
        patch = patch.resize((box[2] - box[0], box[3] - box[1]), Image.Resampling.LANCZOS)
    out.paste(patch.convert("RGB"), box[:2], mask=patch.getchannel("A"))
    return out


def to_png_base64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")
