"""Expand (outpaint): what growing the canvas on some sides means for the inpaint
that fills the new area. Plain Python, so every size and mask rule is testable.

The canvas grows by `left`, `top`, `right`, `bottom` pixels; the old picture keeps its
pixels and lands at (`left`, `top`) of the new canvas. The region sent is the new
strips plus a margin of the old picture around them (the model continues what it
sees), the mask is the new area, fully, and fades out over a few pixels into the old
picture so the seam blends. The mask is sent as it is (no server grow or feather):
those would also fade the new area's own edge, leaving it partly transparent.
"""

from __future__ import annotations

from dataclasses import dataclass

from .geometry import Rect, canvas_rect

#: The most an expand may add on one side: the server's largest side is 8192.
MAX_EXPAND = 4096


class ExpandError(Exception):
    """Why the canvas cannot be expanded as asked, in words for the artist."""


@dataclass(frozen=True)
class Sides:
    """Pixels added on each side."""

    left: int = 0
    top: int = 0
    right: int = 0
    bottom: int = 0

    @property
    def is_empty(self) -> bool:
        return not (self.left or self.top or self.right or self.bottom)

    @classmethod
    def chosen(cls, pixels: int, left: bool, top: bool, right: bool, bottom: bool) -> Sides:
        """`pixels` on each ticked side."""
        return cls(pixels * left, pixels * top, pixels * right, pixels * bottom)


@dataclass(frozen=True)
class Expansion:
    """A canvas of `old_size` grown by `sides`."""

    old_size: tuple[int, int]
    sides: Sides

    @property
    def new_size(self) -> tuple[int, int]:
        s = self.sides
        return self.old_size[0] + s.left + s.right, self.old_size[1] + s.top + s.bottom

    @property
    def old_rect(self) -> Rect:
        """Where the old picture lies in the new canvas."""
        return Rect(self.sides.left, self.sides.top, *self.old_size)

    def strips(self) -> list[Rect]:
        """The new area as up to four strips (corners belong to the top and bottom)."""
        old, (width, height), s = self.old_rect, self.new_size, self.sides
        found = [
            Rect(0, 0, s.left, height),
            Rect(old.right, 0, s.right, height),
            Rect(0, 0, width, s.top),
            Rect(0, old.bottom, width, s.bottom),
        ]
        return [strip for strip in found if not strip.is_empty]

    def context_for(self, margin: int) -> int:
        """How much of the old picture the model sees around the strips: the context
        margin setting, but at least as much as the widest strip (a thin margin beside
        a wide strip gives the model too little picture to continue)."""
        s = self.sides
        return max(margin, s.left, s.top, s.right, s.bottom)

    def region(self, context: int) -> Rect:
        """The bounding box of the new strips grown by `context` pixels into the old
        picture, within the new canvas: what the model sees and repaints."""
        canvas = canvas_rect(*self.new_size)
        grown = [strip.grown(max(0, context)).intersected(canvas) for strip in self.strips()]
        left, top = min(r.x for r in grown), min(r.y for r in grown)
        right, bottom = max(r.right for r in grown), max(r.bottom for r in grown)
        return Rect(left, top, right - left, bottom - top)

    def mask(self, region: Rect, feather: int) -> bytes:
        """One byte a pixel of `region`: 255 on the new area, then falling over
        `feather` pixels into the old picture along the grown sides, 0 beyond."""
        old, s = self.old_rect, self.sides
        ramp = [round(255 * (feather - d + 1) / (feather + 1)) for d in range(1, feather + 1)]

        def level(distance: int) -> int:
            """`distance` 1 = the old picture's outermost pixel on a grown side."""
            return ramp[distance - 1] if 1 <= distance <= feather else 0

        columns = bytearray(region.width)
        for i, x in enumerate(range(region.x, region.right)):
            if x < old.x or x >= old.right:
                columns[i] = 255
                continue
            near = [x - old.x + 1] if s.left else []
            near += [old.right - x] if s.right else []
            columns[i] = level(min(near)) if near else 0
        rows = []
        for y in range(region.y, region.bottom):
            if y < old.y or y >= old.bottom:
                rows.append(b"\xff" * region.width)
                continue
            near = [y - old.y + 1] if s.top else []
            near += [old.bottom - y] if s.bottom else []
            floor = level(min(near)) if near else 0
            # max(column, row) per pixel, in C: a table maps each level to the larger
            table = bytes(max(value, floor) for value in range(256))
            rows.append(bytes(columns).translate(table))
        return b"".join(rows)

    def pixels(self, region: Rect, old_pixels: bytes) -> bytes:
        """The region's pixels in the new canvas, made from the old picture's pixels
        of `self.old_part(region)` (4 bytes a pixel): transparent on the new area, so
        the server's fill decides what it holds."""
        part = self.old_part(region)
        stride = part.width * 4
        if len(old_pixels) != stride * part.height:
            raise ExpandError("The picture's pixels do not match the region; try again.")
        old = self.old_rect
        before = b"\x00" * (max(0, old.x - region.x) * 4)
        after = b"\x00" * (max(0, region.right - old.right) * 4)
        empty = b"\x00" * (region.width * 4)
        rows = []
        for y in range(region.y, region.bottom):
            row = y - old.y
            if 0 <= row < old.height and part.width > 0:
                start = (row - part.y) * stride
                rows.append(before + old_pixels[start : start + stride] + after)
            else:
                rows.append(empty)
        return b"".join(rows)

    def old_part(self, region: Rect) -> Rect:
        """The part of `region` the old picture covers, in the OLD canvas's
        coordinates: what to read from the document before it grows."""
        inside = region.intersected(self.old_rect)
        if inside.is_empty:
            return Rect(0, 0, 0, 0)
        s = self.sides
        return Rect(inside.x - s.left, inside.y - s.top, inside.width, inside.height)


def plan_expansion(canvas: tuple[int, int] | None, sides: Sides) -> Expansion:
    """The expansion, or ExpandError when it cannot be done."""
    if canvas is None:
        raise ExpandError("Open or create a document first.")
    if canvas[0] <= 0 or canvas[1] <= 0:
        raise ExpandError("The document has no pixels.")
    if sides.is_empty:
        raise ExpandError("Tick at least one side to expand, and a number of pixels.")
    if min(sides.left, sides.top, sides.right, sides.bottom) < 0:
        raise ExpandError("Expand adds pixels; to crop, use Image > Resize Canvas.")
    if max(sides.left, sides.top, sides.right, sides.bottom) > MAX_EXPAND:
        raise ExpandError(f"Expand by at most {MAX_EXPAND} pixels a side.")
    return Expansion(canvas, sides)
