"""What a click on Generate means for the current canvas: the task, the region and
the size asked of the server. Plain Python, so every combination is testable.

- A selection: inpaint its region (bounds + context margin, clamped), at any strength.
- No selection, strength 100%: text-to-image for the whole canvas, generated near the
  model's working resolution with the canvas's aspect; a canvas larger than that gets
  the server's hi-res pass to its own size (protocol 5, the *hi-res fix* setting),
  else the result is scaled to the canvas.
- No selection, below 100%: image-to-image of the whole canvas.

Also what an image-to-image or inpaint job's area to repaint holds (`fill_for`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .geometry import Rect, canvas_rect, region_for_selection, txt2img_size
from .protocol import FillMode, Task

#: The largest side the server's hi-res pass and upscale reach (protocol 5), and the
#: smallest it takes. Neither is held to the server's pixel budget: it works in tiles.
MAX_SIDE = 8192
MIN_SIDE = 64


class PlanError(Exception):
    """Why nothing can be generated now, in words for the artist."""


@dataclass(frozen=True)
class Plan:
    task: Task
    region: Rect
    width: int | None = None  # txt2img request size
    height: int | None = None
    strength: float = 1.0
    #: txt2img only: the hi-res pass's final size (the first pass is `width` x `height`)
    hires: tuple[int, int] | None = None


def hires_size(canvas_width: int, canvas_height: int) -> tuple[int, int]:
    """The size a hi-res pass asks for to fill a canvas: the canvas's own, so the
    result needs no scaling; a canvas past the server's largest side gets the largest
    picture of its aspect within it (the plugin scales the rest)."""
    scale = min(1.0, MAX_SIDE / max(canvas_width, canvas_height))
    return (
        max(MIN_SIDE, min(MAX_SIDE, round(canvas_width * scale))),
        max(MIN_SIDE, min(MAX_SIDE, round(canvas_height * scale))),
    )


def wants_hires(canvas: tuple[int, int], first_pass: tuple[int, int]) -> bool:
    """A canvas larger than the first pass on either side gains from a hi-res pass;
    a smaller one only needs the result scaled down (as does a sliver thinner than
    the server's smallest side)."""
    larger = canvas[0] > first_pass[0] or canvas[1] > first_pass[1]
    return larger and min(canvas) >= MIN_SIDE


def has_transparency(pixels: bytes) -> bool:
    """Whether any pixel of 4-byte RGBA or BGRA data is not fully opaque (alpha is the
    fourth byte in both orders). Counting in C: a 4096x4096 region stays quick."""
    alpha = pixels[3::4]
    return alpha.count(255) != len(alpha)


def fill_for(task: Task, transparent: bool) -> FillMode:
    """What the area to repaint holds before denoising, per action:

    - inpaint of a selection over an opaque picture: the picture itself (keep), so a
      low strength changes it gently;
    - inpaint where the region has transparent pixels: the nearest picture stretched
      into them (edge), so an empty area is not denoised from flat grey;
    - image to image of a canvas with transparent pixels: the picture blurred into
      them (blur), a softer guess over a larger area;
    - otherwise keep."""
    if not transparent:
        return FillMode.KEEP
    return FillMode.EDGE if task is Task.INPAINT else FillMode.BLUR


#: Said (as a notice, the job goes on) when a selection reaches past the canvas.
PAST_THE_EDGE = (
    "The selection reaches past the canvas: only its part on the canvas is inpainted. "
    "To paint beyond the canvas, use Expand."
)


def reaches_past(selection: Rect | None, canvas_size: tuple[int, int] | None) -> bool:
    """Krita 5.1.5 keeps a selection's part outside the canvas (measured in real
    Krita: a selection 100 px past the right edge reads back whole). The region is
    clamped to the canvas all the same; the artist is told, and pointed to Expand."""
    if selection is None or selection.is_empty or canvas_size is None:
        return False
    inside = selection.intersected(canvas_rect(*canvas_size))
    return inside != selection and not inside.is_empty


def action_label(strength_percent: int, has_selection: bool) -> str:
    """The Generate button's label says what will happen."""
    if has_selection:
        return "Inpaint"
    return "Generate" if strength_percent >= 100 else "Refine"


def make_plan(
    canvas_size: tuple[int, int] | None,
    selection: Rect | None,
    strength_percent: int,
    context_margin: int,
    working_resolution: int,
    hires: bool = False,
) -> Plan:
    """`hires`: the server has the hi-res pass and the artist wants it."""
    if canvas_size is None:
        raise PlanError("Open or create a document first.")
    width, height = canvas_size
    if width <= 0 or height <= 0:
        raise PlanError("The document has no pixels.")
    strength = max(1, min(100, strength_percent)) / 100.0
    if selection is not None and not selection.is_empty:
        region = region_for_selection(selection, width, height, context_margin)
        if region.is_empty:
            raise PlanError(
                "The selection lies outside the canvas. Select part of the image, "
                "or deselect (Ctrl+Shift+A) to work on the whole canvas."
            )
        return Plan(Task.INPAINT, region, strength=strength)
    whole = canvas_rect(width, height)
    if strength_percent >= 100:
        first = txt2img_size(width, height, working_resolution)
        final = hires_size(width, height) if hires and wants_hires(canvas_size, first) else None
        return Plan(Task.TXT2IMG, whole, first[0], first[1], 1.0, final)
    return Plan(Task.IMG2IMG, whole, strength=strength)
