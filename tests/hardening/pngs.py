"""PNG files made by hand, good and bad, for the bad-input tests.

A PNG is a signature and chunks (length, type, data, CRC). Writing chunks ourselves
gives files no encoder would produce: a header that declares 100 000 x 100 000
pixels over a few bytes of data, a zero width, a cut-off stream.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
from PIL import Image

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def header_only_png(width: int, height: int, depth: int = 8, colour: int = 2) -> bytes:
    """A PNG whose header declares `width` x `height` with a tiny compressed stream: a
    decompression bomb when the size is huge, an invalid file when it is zero."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    row = b"\x00" + b"\x00" * 3  # one filter byte and one pixel: far too little data
    return (
        SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(row)) + chunk(b"IEND", b"")
    )


def encode(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str) -> bytes:
    return base64.b64decode(text)


def gradient(width: int = 64, height: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 4 % 256, y * 4 % 256, (x ^ y) % 256], -1).astype(np.uint8)


def rgb(width: int = 64, height: int = 64) -> Image.Image:
    return Image.fromarray(gradient(width, height), "RGB")


def grey16(width: int = 64, height: int = 64) -> bytes:
    values = (gradient(width, height)[..., 0].astype(np.uint16) * 257).astype(">u2")
    return encode(Image.frombytes("I;16B", (width, height), values.tobytes()))


def rgb16(width: int = 64, height: int = 64) -> bytes:
    """16 bits per channel RGB, written by hand (Pillow cannot write it)."""
    values = gradient(width, height).astype(">u2") * 257
    rows = b"".join(b"\x00" + values[y].tobytes() for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )


def palette(transparent: bool = False) -> bytes:
    image = rgb().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return encode(image, transparency=0) if transparent else encode(image)


def mask(width: int = 64, height: int = 64, level: int = 255) -> Image.Image:
    image = Image.new("L", (width, height), 0)
    image.paste(level, (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
    return image
