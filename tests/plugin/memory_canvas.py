"""A canvas in memory implementing the plugin's `CanvasAdapter`.

It is a test canvas, not a stand-in for the server: it holds pixels, a soft
selection and the layers the plugin inserts, so tests can check what lands where.
"""

from __future__ import annotations

from dataclasses import dataclass

from krita_diffusers.canvas import RGBA, CanvasError, LayerImage
from krita_diffusers.geometry import Rect


@dataclass
class InsertedLayer:
    image: LayerImage
    group: str | None


class MemoryCanvas:
    pixel_order = RGBA

    def __init__(self, width: int = 64, height: int = 64, rgba=(200, 120, 40, 255)) -> None:
        self.width, self.height = width, height
        self.pixels = bytes(rgba) * (width * height)
        self.mask: bytearray | None = None
        self.selection: Rect | None = None
        self.layers: list[InsertedLayer] = []
        self.open = True
        self.refuse_reading = ""
        self.doc = "memory-doc"

    def select(self, rect: Rect, level: int = 255) -> None:
        """A rectangular selection; `level` < 255 makes it soft (partly selected)."""
        self.selection = rect
        self.mask = bytearray(self.width * self.height)
        for y in range(rect.y, rect.bottom):
            start = y * self.width + rect.x
            self.mask[start : start + rect.width] = bytes([level]) * rect.width

    def deselect(self) -> None:
        self.selection, self.mask = None, None

    def canvas_size(self):
        return (self.width, self.height) if self.open else None

    def document_id(self) -> str:
        return self.doc if self.open else ""

    def selection_bounds(self):
        return self.selection

    def read_pixels(self, rect: Rect) -> bytes:
        if self.refuse_reading:
            raise CanvasError(self.refuse_reading)
        rows = []
        for y in range(rect.y, rect.bottom):
            start = (y * self.width + rect.x) * 4
            rows.append(self.pixels[start : start + rect.width * 4])
        return b"".join(rows)

    def read_mask(self, rect: Rect) -> bytes:
        if self.mask is None:
            return b"\xff" * (rect.width * rect.height)
        return b"".join(
            bytes(self.mask[y * self.width + rect.x : y * self.width + rect.right])
            for y in range(rect.y, rect.bottom)
        )

    def insert_layers(self, images, group_name) -> None:
        for image in images:
            assert len(image.data) == image.rect.width * image.rect.height * 4
            self.layers.append(InsertedLayer(image, group_name))
