"""Pixel buffers to and from PNG with QImage (Krita's Python has no numpy or PIL).

QImage is safe to use outside the GUI thread, so encoding can run in the same worker
that sends the request.
"""

from __future__ import annotations

from PyQt5.QtCore import QBuffer, QByteArray, QIODevice, QSize, Qt
from PyQt5.QtGui import QImage


class ImageError(Exception):
    """Bytes that are not an image the plugin can read."""


def swap_red_blue(data: bytes) -> bytes:
    """BGRA <-> RGBA for 4-byte pixels (Krita's 8-bit RGBA data is BGRA in memory)."""
    out = bytearray(data)
    out[0::4] = data[2::4]
    out[2::4] = data[0::4]
    return bytes(out)


def _encode(image: QImage) -> bytes:
    array = QByteArray()
    buffer = QBuffer(array)
    buffer.open(QIODevice.WriteOnly)
    if not image.save(buffer, "PNG"):
        raise ImageError("Could not encode the image as PNG.")
    buffer.close()
    return bytes(array)


def rgba_image(rgba: bytes, width: int, height: int) -> QImage:
    if len(rgba) != width * height * 4:
        raise ImageError(f"Expected {width * height * 4} bytes of RGBA, got {len(rgba)}.")
    return QImage(rgba, width, height, width * 4, QImage.Format_RGBA8888).copy()


def encode_rgba_png(rgba: bytes, width: int, height: int) -> bytes:
    return _encode(rgba_image(rgba, width, height))


def encode_mask_png(mask: bytes, width: int, height: int) -> bytes:
    """An 8-bit greyscale PNG: white = repaint, grey levels of soft selections kept."""
    if len(mask) != width * height:
        raise ImageError(f"Expected {width * height} mask bytes, got {len(mask)}.")
    image = QImage(mask, width, height, width, QImage.Format_Grayscale8).copy()
    return _encode(image)


def decode(data: bytes) -> QImage:
    image = QImage()
    if not image.loadFromData(data):
        raise ImageError("The server sent an image the plugin cannot read.")
    return image


def to_rgba(image: QImage, width: int, height: int) -> bytes:
    """Straight RGBA bytes of `image`, scaled smoothly to `width` x `height` when its
    size differs (text-to-image results are generated at the working size)."""
    if image.size() != QSize(width, height):
        image = image.scaled(width, height, Qt.IgnoreAspectRatio, Qt.SmoothTransformation)
    image = image.convertToFormat(QImage.Format_RGBA8888)
    stride = width * 4
    pointer = image.constBits()
    pointer.setsize(image.bytesPerLine() * height)
    raw = bytes(pointer)
    if image.bytesPerLine() == stride:
        return raw
    line = image.bytesPerLine()
    return b"".join(raw[row * line : row * line + stride] for row in range(height))


def png_to_rgba(data: bytes, width: int, height: int) -> bytes:
    return to_rgba(decode(data), width, height)
