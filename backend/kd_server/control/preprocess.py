"""A picture -> the control image a ControlNet of a given mode expects.

ControlNets are trained on one look per mode: edges and lines light on black, depth
near-white to far-black, a pose as a coloured skeleton on black. Artists work the
other way round (black lines on white paper, lines on a transparent layer), so every
control image is normalised, and `preprocess` derives it from a picture first:

| mode | normalised (always) | preprocessed (`preprocess=True`) |
|---|---|---|
| canny | lines light on black | Canny edges (two thresholds) |
| lineart, scribble, softedge | lines light on black | the same (pass-through) |
| depth | transparent = far (black) | depth estimated from the picture |
| pose | transparent = black | pass-through: send a drawn skeleton |
| tile, normal, segment, none | transparent = black | pass-through |

Lines on a transparent layer are read from its alpha: what is painted is a line,
whatever its colour. An opaque line image brighter than mid-grey on average is taken
to be dark lines on a light ground and inverted.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageOps

from kd_server.control.canny import canny
from kd_server.generation import ControlMode
from kd_server.masks import flatten_rgb

LINE_MODES = frozenset(
    {ControlMode.CANNY, ControlMode.LINEART, ControlMode.SCRIBBLE, ControlMode.SOFTEDGE}
)
#: Modes whose preprocessing is real work (the others pass the picture through).
DERIVED_MODES = frozenset({ControlMode.CANNY, ControlMode.DEPTH})

DepthFunction = Callable[[Image.Image], Image.Image]


def control_image(
    image: Image.Image,
    mode: ControlMode | None,
    preprocess: bool,
    depth: DepthFunction | None = None,
    low_threshold: int = 100,
    high_threshold: int = 200,
    resolution: int | None = None,
) -> Image.Image:
    """The RGB control image of `image`'s size. `depth` estimates depth (needed only for
    preprocessed depth); `resolution` is the short side preprocessing works at (edges
    are as thick at every size), None: the image's own size."""
    if preprocess and mode in DERIVED_MODES:
        picture = on_black(image) if mode is ControlMode.DEPTH else on_white(image)
        work = _scaled(picture, resolution)
        if mode is ControlMode.CANNY:
            edges = canny(np.asarray(work.convert("RGB")), low_threshold, high_threshold)
            return _edges_at(Image.fromarray(edges, mode="L"), image.size).convert("RGB")
        assert depth is not None, "a depth estimator is needed for depth preprocessing"
        result = depth(work)
        if result.size != image.size:
            result = result.resize(image.size, Image.Resampling.BILINEAR)
        return result
    if mode in LINE_MODES:
        return light_lines(image)
    return on_black(image)


def _edges_at(edges: Image.Image, size: tuple[int, int]) -> Image.Image:
    """An edge map at another size, still one-bit: shrinking keeps every pixel that
    held an edge (averaging would fade thin lines to grey), growing keeps them hard."""
    if edges.size == size:
        return edges
    if edges.width > size[0]:
        return edges.resize(size, Image.Resampling.BOX).point(lambda v: 255 if v else 0)
    return edges.resize(size, Image.Resampling.NEAREST)


def _scaled(image: Image.Image, resolution: int | None) -> Image.Image:
    if resolution is None or min(image.size) == resolution:
        return image
    factor = resolution / min(image.size)
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, Image.Resampling.LANCZOS)


def _has_transparency(image: Image.Image) -> bool:
    if image.mode not in ("RGBA", "LA"):
        return False
    lowest, _ = image.getchannel("A").getextrema()
    return bool(lowest < 255)  # type: ignore[operator]


def on_black(image: Image.Image) -> Image.Image:
    """RGB, transparent parts black (far, empty)."""
    return flatten_rgb(image, (0, 0, 0))


def on_white(image: Image.Image) -> Image.Image:
    """RGB, transparent parts white (an empty sheet, for edge finding)."""
    return flatten_rgb(image, (255, 255, 255))


def light_lines(image: Image.Image) -> Image.Image:
    """Lines light on black, from lines on a transparent layer (its alpha), or from an
    opaque image of either polarity (dark lines on light are inverted)."""
    if _has_transparency(image):
        grey = image.convert("RGBA").getchannel("A")
    else:
        grey = image.convert("L")
        if np.asarray(grey, dtype=np.float32).mean() > 127.5:
            grey = ImageOps.invert(grey)
    return grey.convert("RGB")
