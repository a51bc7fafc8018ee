"""The interface the docker uses to reach the canvas.

`krita_adapter.KritaCanvas` implements it on a real Krita document; tests implement
it on plain bytes. Pixels cross it as straight (not premultiplied) 8-bit RGBA or
BGRA, row by row, in the order the canvas names (`pixel_order`): Krita's own data is
BGRA, and Qt reads that order natively, so no byte is shuffled on the GUI thread.

The canvas only ever receives results the artist applied: nothing temporary is put
into the document (Krita's scripting API records every layer it adds or removes in
the undo history and marks the document modified), so a job's input is always the
artist's own image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .geometry import Rect

RGBA = "RGBA"
BGRA = "BGRA"


class CanvasError(Exception):
    """The canvas cannot do what was asked; the message says why and what to do."""


@dataclass(frozen=True)
class LayerImage:
    """Pixels to become a layer: `data` has `rect.width * rect.height * 4` bytes in
    the canvas's `pixel_order`."""

    name: str
    rect: Rect
    data: bytes


@dataclass(frozen=True)
class LayerInfo:
    """A layer a control can follow: `layer_id` stays the same while the layer
    exists (Krita's unique id), `name` is what the artist sees."""

    layer_id: str
    name: str


class CanvasAdapter(Protocol):
    #: RGBA or BGRA: the byte order of what `read_pixels` returns and layers take.
    pixel_order: str

    def canvas_size(self) -> tuple[int, int] | None:
        """Width and height of the active document, or None when none is open."""
        ...

    def document_id(self) -> str:
        """Something that tells documents apart, so results go where they were made."""
        ...

    def selection_bounds(self) -> Rect | None:
        """Bounds of the active selection, or None when nothing is selected."""
        ...

    def read_pixels(self, rect: Rect) -> bytes:
        """The visible (merged) image in `rect`, 4 bytes a pixel in `pixel_order`;
        raises CanvasError when the document's colours cannot be sent."""
        ...

    def read_mask(self, rect: Rect) -> bytes:
        """The selection in `rect`, one byte per pixel, grey levels kept."""
        ...

    def insert_layers(self, images: list[LayerImage], group_name: str | None) -> list[str]:
        """New paint layers above the active one; in a new group when `group_name` is
        given. Never changes existing layers. Returns the new layers' ids."""
        ...

    def list_layers(self) -> list[LayerInfo]:
        """The paint layers and groups of the active document, top first, hidden ones
        included (a hidden depth layer is still a good control)."""
        ...

    def read_layer_pixels(self, layer_id: str, rect: Rect) -> bytes:
        """One layer's own pixels in `rect` (a group's: its merged content), visible
        or not, 4 bytes a pixel in `pixel_order`; raises CanvasError when the layer is
        gone or its colours cannot be sent. Never changes the layer."""
        ...


class DocumentNotes(Protocol):
    """Data kept inside the active document's file (Krita: annotations, saved in the
    `.kra`). Optional: a canvas without it keeps no history with the document."""

    def read_note(self, kind: str) -> bytes | None:
        """The note of this kind in the active document, or None."""
        ...

    def write_note(self, kind: str, description: str, data: bytes) -> None:
        """Keep `data` in the active document (saved with it when the artist saves)."""
        ...


class DocumentCanvas(CanvasAdapter, Protocol):
    """A canvas whose document itself can change size, and that can open a new
    document: what Upscale and Expand need beyond reading pixels and adding layers.
    Each call is one step the artist can undo (Edit > Undo) or a new document."""

    def resize_canvas(self, left: int, top: int, width: int, height: int) -> None:
        """The canvas becomes `width` x `height`, the old picture (every layer, pixels
        unchanged) moved by `left`, `top` (Image > Resize Canvas)."""
        ...

    def scale_canvas(self, width: int, height: int) -> None:
        """Every layer scaled to the new size (Image > Scale Image To New Size)."""
        ...

    def open_document(self, image: LayerImage) -> None:
        """A new document of the image's size holding it as a layer, shown in a view
        and made the active one; the current document is not touched."""
        ...
