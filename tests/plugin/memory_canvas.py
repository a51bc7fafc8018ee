"""A canvas in memory implementing the plugin's `CanvasAdapter`.

It is a test canvas, not a stand-in for the server: it holds pixels, a soft
selection and the layers the plugin inserts, so tests can check what lands where.
"""

from __future__ import annotations

from dataclasses import dataclass

from krita_diffusers.canvas import RGBA, CanvasError, LayerImage, LayerInfo
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
        self.own_layers: dict[str, tuple[str, bytearray]] = {}  # the artist's, by id
        self.resizes: list[tuple[int, int, int, int]] = []  # resize_canvas calls
        self.scales: list[tuple[int, int]] = []  # scale_canvas calls
        self.documents: list[LayerImage] = []  # new documents opened, with their layer
        #: what each document's file keeps (Krita: annotations in the .kra), by doc id
        self.notes: dict[str, dict[str, bytes]] = {}

    def read_note(self, kind: str) -> bytes | None:
        return self.notes.get(self.doc, {}).get(kind) if self.open else None

    def write_note(self, kind: str, description: str, data: bytes) -> None:
        if self.open:
            self.notes.setdefault(self.doc, {})[kind] = data

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

    def insert_layers(self, images, group_name) -> list[str]:
        ids = []
        for image in images:
            assert len(image.data) == image.rect.width * image.rect.height * 4
            self.layers.append(InsertedLayer(image, group_name))
            ids.append(f"inserted-{len(self.layers)}")
        return ids

    def add_layer(self, layer_id: str, name: str, rgba=(0, 0, 0, 0)) -> None:
        """A layer of the artist's, the size of the canvas, filled with `rgba`."""
        self.own_layers[layer_id] = (name, bytearray(bytes(rgba) * (self.width * self.height)))

    def paint(self, layer_id: str, rect: Rect, rgba) -> None:
        """Fill `rect` of one of the artist's layers."""
        data = self.own_layers[layer_id][1]
        for y in range(rect.y, rect.bottom):
            start = (y * self.width + rect.x) * 4
            data[start : start + rect.width * 4] = bytes(rgba) * rect.width

    def list_layers(self) -> list[LayerInfo]:
        own = [LayerInfo(layer_id, name) for layer_id, (name, _) in self.own_layers.items()]
        inserted = [
            LayerInfo(f"inserted-{number}", layer.image.name)
            for number, layer in enumerate(self.layers, 1)
        ]
        return own + inserted

    def read_layer_pixels(self, layer_id: str, rect: Rect) -> bytes:
        if layer_id.startswith("inserted-"):
            image = self.layers[int(layer_id.split("-")[1]) - 1].image
            return self._crop_inserted(image, rect)
        if layer_id not in self.own_layers:
            raise CanvasError("That layer is not in the document any more.")
        data = self.own_layers[layer_id][1]
        rows = []
        for y in range(rect.y, rect.bottom):
            start = (y * self.width + rect.x) * 4
            rows.append(bytes(data[start : start + rect.width * 4]))
        return b"".join(rows)

    def _crop_inserted(self, image: LayerImage, rect: Rect) -> bytes:
        """An inserted layer's pixels in `rect` (transparent outside it)."""
        out = bytearray(rect.width * rect.height * 4)
        for y in range(rect.y, rect.bottom):
            for x in range(rect.x, rect.right):
                ix, iy = x - image.rect.x, y - image.rect.y
                if 0 <= ix < image.rect.width and 0 <= iy < image.rect.height:
                    src = (iy * image.rect.width + ix) * 4
                    dst = ((y - rect.y) * rect.width + (x - rect.x)) * 4
                    out[dst : dst + 4] = image.data[src : src + 4]
        return bytes(out)

    # Upscale and Expand (`canvas.DocumentCanvas`)

    def resize_canvas(self, left: int, top: int, width: int, height: int) -> None:
        """Krita's Resize Canvas: new area transparent, everything moved by left/top."""
        old_width, old_height = self.width, self.height

        def moved(data: bytes, size: int) -> bytearray:
            out = bytearray(width * height * size)
            for y in range(old_height):
                ny = y + top
                if not 0 <= ny < height:
                    continue
                for x in range(old_width):
                    nx = x + left
                    if 0 <= nx < width:
                        src, dst = (y * old_width + x) * size, (ny * width + nx) * size
                        out[dst : dst + size] = data[src : src + size]
            return out

        self.pixels = bytes(moved(self.pixels, 4))
        self.own_layers = {
            key: (name, moved(bytes(data), 4)) for key, (name, data) in self.own_layers.items()
        }
        self.layers = [
            InsertedLayer(
                LayerImage(
                    layer.image.name,
                    Rect(
                        layer.image.rect.x + left,
                        layer.image.rect.y + top,
                        layer.image.rect.width,
                        layer.image.rect.height,
                    ),
                    layer.image.data,
                ),
                layer.group,
            )
            for layer in self.layers
        ]
        self.deselect()
        self.width, self.height = width, height
        self.resizes.append((left, top, width, height))

    def scale_canvas(self, width: int, height: int) -> None:
        """Nearest-neighbour scaling of the picture and the artist's layers."""

        def scaled(data: bytes) -> bytes:
            rows = []
            for y in range(height):
                sy = y * self.height // height
                row = bytearray()
                for x in range(width):
                    sx = x * self.width // width
                    start = (sy * self.width + sx) * 4
                    row += data[start : start + 4]
                rows.append(bytes(row))
            return b"".join(rows)

        self.pixels = scaled(self.pixels)
        self.own_layers = {
            key: (name, bytearray(scaled(bytes(data))))
            for key, (name, data) in self.own_layers.items()
        }
        self.deselect()
        self.width, self.height = width, height
        self.scales.append((width, height))

    def open_document(self, image: LayerImage) -> None:
        assert len(image.data) == image.rect.width * image.rect.height * 4
        self.documents.append(image)
