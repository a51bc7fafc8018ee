"""Pixel buffers to and from PNG with QImage (Krita's Python has no numpy or PIL).

QImage (unlike QPixmap) is safe to use outside the GUI thread, so every function here
can run in a worker: encoding what is sent, decoding what comes back, scaling the
docker's views. The GUI thread only turns the small finished images into pixmaps.

Buffers are straight-alpha 8-bit RGBA or BGRA (`canvas.RGBA`, `canvas.BGRA`); BGRA is
QImage's ARGB32 on the little-endian machines Krita runs on, so Krita's own byte
order is read and written as it is, without shuffling bytes in Python.
"""

from __future__ import annotations

from dataclasses import dataclass

from .canvas import BGRA, RGBA
from .qt import QBuffer, QByteArray, QImage, QIODevice, QPainter, QSize, Qt, image_bytes

THUMBNAIL = 72  # history icons
VIEW = 512  # the docker's view of a result or a live preview, longest side


class ImageError(Exception):
    """Bytes that are not an image the plugin can read."""


def swap_red_blue(data: bytes) -> bytes:
    """BGRA <-> RGBA for 4-byte pixels."""
    out = bytearray(data)
    out[0::4] = data[2::4]
    out[2::4] = data[0::4]
    return bytes(out)


def _format(order: str) -> QImage.Format:
    if order == RGBA:
        return QImage.Format.Format_RGBA8888
    if order == BGRA:
        return QImage.Format.Format_ARGB32
    raise ImageError(f"Unknown pixel order {order!r}.")


def _encode(image: QImage) -> bytes:
    array = QByteArray()
    buffer = QBuffer(array)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    if not image.save(buffer, "PNG"):
        raise ImageError("Could not encode the image as PNG.")
    buffer.close()
    return bytes(array)


def image_png(image: QImage) -> bytes:
    """A QImage as PNG bytes (a thumbnail kept with the document)."""
    return _encode(image)


def pixels_image(data: bytes, width: int, height: int, order: str = RGBA) -> QImage:
    """A QImage owning a copy of `data` (4 bytes a pixel in `order`)."""
    if len(data) != width * height * 4:
        raise ImageError(f"Expected {width * height * 4} bytes of {order}, got {len(data)}.")
    return QImage(data, width, height, width * 4, _format(order)).copy()


def rgba_image(rgba: bytes, width: int, height: int) -> QImage:
    return pixels_image(rgba, width, height, RGBA)


def encode_png(data: bytes, width: int, height: int, order: str = RGBA) -> bytes:
    return _encode(pixels_image(data, width, height, order))


def encode_png_sized(
    data: bytes, width: int, height: int, order: str, size: tuple[int, int]
) -> bytes:
    """PNG of the pixels scaled smoothly to `size`: a text-to-image job's control
    image must have the request's size, not the canvas's."""
    image = pixels_image(data, width, height, order)
    if (width, height) != size:
        image = image.scaled(
            size[0],
            size[1],
            Qt.AspectRatioMode.IgnoreAspectRatio,
            Qt.TransformationMode.SmoothTransformation,
        )
    return _encode(image)


def file_to_png(path: str) -> bytes:
    """An image file (PNG, JPEG, WebP, … whatever Qt reads) as PNG bytes, for a
    reference picture; ImageError with the file's name when it cannot be read."""
    image = QImage(path)
    if image.isNull():
        raise ImageError(f"Could not read the image file {path}.")
    return _encode(image)


def encode_rgba_png(rgba: bytes, width: int, height: int) -> bytes:
    return encode_png(rgba, width, height, RGBA)


def encode_mask_png(mask: bytes, width: int, height: int) -> bytes:
    """An 8-bit greyscale PNG: white = repaint, grey levels of soft selections kept."""
    if len(mask) != width * height:
        raise ImageError(f"Expected {width * height} mask bytes, got {len(mask)}.")
    image = QImage(mask, width, height, width, QImage.Format.Format_Grayscale8).copy()
    return _encode(image)


def decode(data: bytes) -> QImage:
    image = QImage()
    if not image.loadFromData(data):
        raise ImageError("The server sent an image the plugin cannot read.")
    return image


def to_pixels(image: QImage, width: int, height: int, order: str = RGBA) -> bytes:
    """Straight bytes of `image` in `order`, scaled smoothly to `width` x `height`
    when its size differs (text-to-image results are generated at the working size)."""
    if image.size() != QSize(width, height):
        image = image.scaled(
            width,
            height,
            Qt.AspectRatioMode.IgnoreAspectRatio,
            Qt.TransformationMode.SmoothTransformation,
        )
    image = image.convertToFormat(_format(order))
    stride = width * 4
    raw = image_bytes(image)
    if not raw:  # a null image: nothing could be converted
        raise ImageError("The image could not be converted for the canvas.")
    if image.bytesPerLine() == stride:
        return raw
    line = image.bytesPerLine()
    return b"".join(raw[row * line : row * line + stride] for row in range(height))


def to_rgba(image: QImage, width: int, height: int) -> bytes:
    return to_pixels(image, width, height, RGBA)


def png_to_pixels(data: bytes, width: int, height: int, order: str = RGBA) -> bytes:
    return to_pixels(decode(data), width, height, order)


def png_to_rgba(data: bytes, width: int, height: int) -> bytes:
    return png_to_pixels(data, width, height, RGBA)


def fit(width: int, height: int, longest: int) -> QSize:
    """`width` x `height` shrunk (never grown) so its longest side is `longest`."""
    scale = min(1.0, longest / max(1, width, height))
    return QSize(max(1, round(width * scale)), max(1, round(height * scale)))


def backdrop(data: bytes, width: int, height: int, order: str, longest: int = VIEW) -> QImage:
    """A small copy of the pixels a job was made from, to show its results over."""
    image = pixels_image(data, width, height, order)
    size = fit(width, height, longest)
    return image.scaled(
        size, Qt.AspectRatioMode.IgnoreAspectRatio, Qt.TransformationMode.SmoothTransformation
    )


@dataclass(frozen=True)
class ResultViews:
    """What the docker shows of one result: the result over what it was made from
    (so an inpainted patch is seen in place), and a history icon."""

    view: QImage
    thumbnail: QImage


def result_views(
    png: bytes, width: int, height: int, under: QImage | None = None, longest: int = VIEW
) -> ResultViews:
    """Decode a result and make its views, at the aspect of its region (`width` x
    `height`), drawn over `under` when given. Runs in a worker."""
    result = decode(png)
    size = fit(width, height, longest)
    view = QImage(size, QImage.Format.Format_ARGB32_Premultiplied)
    view.fill(Qt.GlobalColor.transparent)
    painter = QPainter(view)
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    if under is not None and not under.isNull():
        painter.drawImage(view.rect(), under)
    painter.drawImage(view.rect(), result)
    painter.end()
    thumbnail = view.scaled(
        THUMBNAIL,
        THUMBNAIL,
        Qt.AspectRatioMode.KeepAspectRatio,
        Qt.TransformationMode.SmoothTransformation,
    )
    return ResultViews(view, thumbnail)


def preview_image(jpeg: bytes, longest: int = VIEW) -> QImage:
    """A live preview frame, decoded and shrunk for the docker. Runs in a worker."""
    image = decode(jpeg)
    size = fit(image.width(), image.height(), longest)
    if size != image.size():
        image = image.scaled(
            size, Qt.AspectRatioMode.IgnoreAspectRatio, Qt.TransformationMode.SmoothTransformation
        )
    return image
