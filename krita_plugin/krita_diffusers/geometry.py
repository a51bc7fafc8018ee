"""Rectangles and sizes for the region the plugin sends to the server.

Plain Python, no Qt: the region rules are the core of inpainting and need to be easy
to test on any edge case (selections touching or leaving the canvas, odd sizes).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rect:
    """An axis-aligned pixel rectangle; `x`, `y` is the top-left corner."""

    x: int
    y: int
    width: int
    height: int

    @property
    def right(self) -> int:
        """One past the last column, so `right - x == width`."""
        return self.x + self.width

    @property
    def bottom(self) -> int:
        """One past the last row."""
        return self.y + self.height

    @property
    def is_empty(self) -> bool:
        return self.width <= 0 or self.height <= 0

    def grown(self, margin: int) -> Rect:
        """The rectangle with `margin` pixels added on every side."""
        return Rect(
            self.x - margin, self.y - margin, self.width + 2 * margin, self.height + 2 * margin
        )

    def intersected(self, other: Rect) -> Rect:
        """The overlap of two rectangles; empty (zero size) when they do not touch."""
        left, top = max(self.x, other.x), max(self.y, other.y)
        right, bottom = min(self.right, other.right), min(self.bottom, other.bottom)
        if right <= left or bottom <= top:
            return Rect(left, top, 0, 0)
        return Rect(left, top, right - left, bottom - top)


def canvas_rect(width: int, height: int) -> Rect:
    return Rect(0, 0, width, height)


def region_for_selection(
    selection: Rect, canvas_width: int, canvas_height: int, margin: int
) -> Rect:
    """The region sent for an inpaint: the selection's bounds grown by a context margin
    (so the model sees the surroundings), clamped to the canvas.

    A selection can reach past the canvas in Krita; only its part on the canvas counts.
    The result is empty when the selection lies wholly outside the canvas, and the
    caller says so to the artist instead of sending nothing.
    """
    canvas = canvas_rect(canvas_width, canvas_height)
    on_canvas = selection.intersected(canvas)
    if on_canvas.is_empty:
        return on_canvas
    return on_canvas.grown(max(0, margin)).intersected(canvas)


def round_to_multiple(value: float, multiple: int) -> int:
    """Nearest multiple of `multiple`, never below `multiple` itself."""
    return max(multiple, round(value / multiple) * multiple)


def txt2img_size(canvas_width: int, canvas_height: int, working: int) -> tuple[int, int]:
    """Width and height to ask for when generating a whole canvas from nothing.

    The models work best near their working resolution (about `working`x`working`
    pixels in area), so the request keeps the canvas's aspect at that area, in
    multiples of 8; the plugin scales the result to the canvas when inserting it.
    Very long canvases are capped at 4:1 so neither side gets absurdly small.
    """
    if canvas_width <= 0 or canvas_height <= 0:
        raise ValueError("the canvas has no pixels")
    aspect = min(4.0, max(0.25, canvas_width / canvas_height))
    area = float(working * working)
    height = (area / aspect) ** 0.5
    width = height * aspect
    return round_to_multiple(width, 8), round_to_multiple(height, 8)
