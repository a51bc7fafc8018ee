"""What a click on Generate means for the current canvas: the task, the region and
the size asked of the server. Plain Python, so every combination is testable.

- A selection: inpaint its region (bounds + context margin, clamped), at any strength.
- No selection, strength 100%: text-to-image for the whole canvas, generated near the
  model's working resolution with the canvas's aspect and scaled to the canvas.
- No selection, below 100%: image-to-image of the whole canvas.
"""

from __future__ import annotations

from dataclasses import dataclass

from .geometry import Rect, canvas_rect, region_for_selection, txt2img_size
from .protocol import Task


class PlanError(Exception):
    """Why nothing can be generated now, in words for the artist."""


@dataclass(frozen=True)
class Plan:
    task: Task
    region: Rect
    width: int | None = None  # txt2img request size
    height: int | None = None
    strength: float = 1.0


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
) -> Plan:
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
        request_width, request_height = txt2img_size(width, height, working_resolution)
        return Plan(Task.TXT2IMG, whole, request_width, request_height, 1.0)
    return Plan(Task.IMG2IMG, whole, strength=strength)
