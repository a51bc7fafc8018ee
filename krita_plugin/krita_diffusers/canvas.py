"""The interface the docker uses to reach the canvas.

`krita_adapter.KritaCanvas` implements it on a real Krita document; tests implement
it on plain bytes. Pixels cross it as straight (not premultiplied) RGBA, 8 bits per
channel, row by row, so nothing outside the adapter knows Krita's channel order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .geometry import Rect


class CanvasError(Exception):
    """The canvas cannot do what was asked; the message says why and what to do."""


@dataclass(frozen=True)
class LayerImage:
    """Pixels to become a layer: `rgba` has `rect.width * rect.height * 4` bytes."""

    name: str
    rect: Rect
    rgba: bytes


class CanvasAdapter(Protocol):
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
        """The visible (merged) image in `rect` as RGBA; raises CanvasError when the
        document's colours cannot be sent."""
        ...

    def read_mask(self, rect: Rect) -> bytes:
        """The selection in `rect`, one byte per pixel, grey levels kept."""
        ...

    def insert_layers(self, images: list[LayerImage], group_name: str | None) -> None:
        """New paint layers above the active one; in a new group when `group_name` is
        given. Never changes existing layers."""
        ...

    def show_preview(self, image: LayerImage) -> None:
        """Show `image` as the one temporary preview layer, replacing any earlier."""
        ...

    def clear_preview(self) -> None: ...
