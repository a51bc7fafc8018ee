"""Pixels across the wire: safe decoding of uploaded PNGs, preview JPEGs.

Uploaded images come from the network, so decoding is defensive: the pixel count is
read from the header and checked before any pixel is decompressed (a small PNG can
expand to gigabytes), only PNG is accepted, and every decoder failure becomes a
message about the field instead of a 500.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


class ImageInputError(ValueError):
    """An uploaded image that cannot be used; `str()` is "field: reason"."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field


def decode_png(data: str, field: str, max_pixels: int) -> Image.Image:
    """Base64 text (optionally a `data:image/png;base64,` URL) -> a loaded PIL image."""
    raw = decode_base64(data, field)
    if not raw.startswith(PNG_SIGNATURE):
        raise ImageInputError(field, "must be a PNG image (base64 of the .png file's bytes)")
    return open_image(raw, "PNG", field, max_pixels)


def open_image(raw: bytes, fmt: str, field: str, max_pixels: int) -> Image.Image:
    """Decode `raw` as `fmt` (a Pillow format name), checking the pixel count from the
    header before any pixel is decompressed; every decoder failure names the field."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw), formats=[fmt])
            width, height = image.size
            if width * height > max_pixels:
                raise ImageInputError(
                    field,
                    f"is {width}x{height} = {width * height} pixels; this server accepts at "
                    f"most {max_pixels} pixels per image",
                )
            image.load()
    except ImageInputError:
        raise
    except (
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        raise ImageInputError(field, f"is not a readable {fmt} ({_decoder_reason(exc)})") from exc
    if width < 8 or height < 8:
        raise ImageInputError(field, f"is {width}x{height}; it must be at least 8x8 pixels")
    return image


def _decoder_reason(exc: BaseException) -> str:
    """Pillow's complaint in words for a person, without object reprs such as
    `<_io.BytesIO object at 0x7f...>` that mean nothing to a client."""
    if isinstance(exc, UnidentifiedImageError):
        return "the data is damaged or is not an image"
    if isinstance(exc, EOFError) or "truncated" in str(exc).lower():
        return "the file is cut off"
    reason = re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the upload", str(exc)).strip()
    return reason or type(exc).__name__


def decode_base64(data: str, field: str) -> bytes:
    """Base64 text, with or without a data-URI prefix or line breaks, to bytes."""
    text = data.strip()
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    text = "".join(text.split())  # tolerate line-wrapped base64
    if not text:
        raise ImageInputError(field, "is empty")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageInputError(field, "is not valid base64") from exc


def _sixteen_to_eight(image: Image.Image) -> Image.Image:
    """16-bit greyscale -> 8-bit "L" by keeping the high byte (no clipping)."""
    values = np.asarray(image, dtype=np.uint32)
    return Image.fromarray((np.clip(values, 0, 65535) >> 8).astype(np.uint8), mode="L")


def as_picture(image: Image.Image) -> Image.Image:
    """Any PNG mode -> RGB, or RGBA where the PNG has transparency."""
    if image.mode in ("RGB", "RGBA"):
        return image
    if image.mode in _SIXTEEN_BIT_MODES:
        return _sixteen_to_eight(image).convert("RGB")
    has_alpha = image.mode in ("LA", "PA", "La", "RGBa") or "transparency" in image.info
    return image.convert("RGBA" if has_alpha else "RGB")


def as_mask(image: Image.Image, field: str = "mask") -> Image.Image:
    """An 8-bit PNG -> "L" (colour is converted to grey, alpha is ignored)."""
    if image.mode in _SIXTEEN_BIT_MODES or image.mode.startswith("I;16"):
        raise ImageInputError(
            field, "must be an 8-bit PNG; this one has 16 bits per pixel (save it as 8-bit grey)"
        )
    if image.mode == "L":
        return image
    if image.mode in ("LA", "La"):
        return image.getchannel("L")
    if image.mode in ("RGBA", "RGBa", "PA", "P"):
        return image.convert("RGB").convert("L")
    return image.convert("L")


def preview_jpeg(image: Image.Image, max_size: int, quality: int = 75) -> str:
    """A small base64 JPEG for `preview` events: shrunk to `max_size`, never enlarged."""
    preview = image.convert("RGB")
    if max(preview.size) > max_size:
        preview.thumbnail((max_size, max_size), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    preview.save(buffer, format="JPEG", quality=quality)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
