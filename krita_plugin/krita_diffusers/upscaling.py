"""What a click on Upscale means: the size asked for, the upscaler, the refine, and
where the result goes. Plain Python, so every rule is testable without Qt or a server.

The whole visible canvas is sent; the server enlarges it (an upscaler model, or
Lanczos) and refines it tile by tile with the prompt at a low strength (protocol 5,
the `upscale` task). The plugin always asks for an exact width and height (a factor
is turned into one here), so it knows the result's size before it arrives.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .planning import MAX_SIDE, MIN_SIDE
from .protocol import Enlarge, ModelList

#: The factors the docker offers; anything else is a target size.
FACTORS = (1.5, 2.0, 4.0)
LANCZOS = "Lanczos (no model)"


class UpscaleError(Exception):
    """Why the canvas cannot be upscaled as asked, in words for the artist."""


class Destination(str, enum.Enum):
    """Where an upscaled result goes when applied."""

    NEW_DOCUMENT = "document"  # a new document of the new size; this one is untouched
    LAYER = "layer"  # this document scaled to the new size, the result a layer on top


@dataclass(frozen=True)
class UpscaleChoice:
    """What the artist set in the Upscale section. `factor` None: the target
    `width` x `height`. `strength_percent` 0 = enlarge only, no diffusion."""

    factor: float | None = 2.0
    width: int = 0
    height: int = 0
    upscaler: str | None = None  # None: Lanczos
    strength_percent: int = 35
    destination: Destination = Destination.NEW_DOCUMENT


def target_size(canvas: tuple[int, int] | None, choice: UpscaleChoice) -> tuple[int, int]:
    """The result's size: the canvas times the factor (rounded), or the target size.
    Refuses what the server cannot make (a side past 8192) or what would not grow."""
    if canvas is None:
        raise UpscaleError("Open or create a document first.")
    width, height = canvas
    if width <= 0 or height <= 0:
        raise UpscaleError("The document has no pixels.")
    if choice.factor is not None:
        target = (max(1, round(width * choice.factor)), max(1, round(height * choice.factor)))
    else:
        target = (choice.width, choice.height)
    if min(target) < 1:
        raise UpscaleError("Give the new width and height.")
    if min(target) < MIN_SIDE:
        raise UpscaleError(
            f"{target[0]}x{target[1]} is too small: the server makes at least "
            f"{MIN_SIDE} pixels a side. Choose a larger factor or size."
        )
    if max(target) > MAX_SIDE:
        raise UpscaleError(
            f"{target[0]}x{target[1]} is too large: the server makes at most "
            f"{MAX_SIDE} pixels a side. Choose a smaller factor or size."
        )
    if target[0] < width or target[1] < height or target == (width, height):
        raise UpscaleError(
            f"{target[0]}x{target[1]} is not larger than the canvas ({width}x{height}); "
            "choose a larger size (Image > Scale Image makes a picture smaller)."
        )
    return target


def enlarge(choice: UpscaleChoice, target: tuple[int, int]) -> Enlarge:
    """The `upscale` body: the exact size, the upscaler and the refine strength."""
    strength = max(0, min(100, choice.strength_percent)) / 100.0
    return Enlarge(width=target[0], height=target[1], upscaler=choice.upscaler, strength=strength)


@dataclass(frozen=True)
class UpscalerEntry:
    """One line of the docker's upscaler list: `name` None is Lanczos."""

    label: str
    name: str | None
    usable: bool = True
    reason: str = ""


def upscaler_entries(models: ModelList) -> list[UpscalerEntry]:
    """Lanczos first (always there, no model needed), then the server's upscalers;
    one the server cannot use stays listed, disabled, with its reason."""
    entries = [UpscalerEntry(LANCZOS, None)]
    for upscaler in models.upscalers:
        label = f"{upscaler.name} ({upscaler.scale}x)" if upscaler.scale else upscaler.name
        entries.append(UpscalerEntry(label, upscaler.name, upscaler.usable, upscaler.reason))
    return entries


def result_name(target: tuple[int, int], prompt: str) -> str:
    """The layer or document name of an upscaled result."""
    words = " ".join(prompt.split())
    size = f"Upscaled {target[0]}x{target[1]}"
    return f"{size}: {words[:40]}" if words else size
