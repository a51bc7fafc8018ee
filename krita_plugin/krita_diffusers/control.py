"""Control layers: which ControlNets a checkpoint can use, what each docker row
becomes in a job, and why a row cannot be sent. Plain Python, so every rule is
testable without Qt widgets or Krita.

A row names a layer of the document (read, never changed), a choice of model and
mode, and a strength. The layer's pixels for exactly the job's region are read when
Generate is pressed, so the control lines up with what is generated.
"""

from __future__ import annotations

from dataclasses import dataclass

from .protocol import ControlModel, ModelList

#: The modes the server understands (`docs/protocol.md`, "Control layers").
MODES = (
    "depth",
    "canny",
    "lineart",
    "scribble",
    "softedge",
    "pose",
    "tile",
    "normal",
    "segment",
)

#: Words in a ControlNet's file name that say its mode; the first found wins, so
#: longer names come before the names they contain ("lineart" before "line").
_NAME_HINTS = (
    ("depth", "depth"),
    ("canny", "canny"),
    ("lineart", "lineart"),
    ("scribble", "scribble"),
    ("softedge", "softedge"),
    ("hed", "softedge"),
    ("pidi", "softedge"),
    ("openpose", "pose"),
    ("pose", "pose"),
    ("tile", "tile"),
    ("normal", "normal"),
    ("seg", "segment"),
    ("line", "lineart"),
    ("edge", "canny"),
)


@dataclass(frozen=True)
class ControlChoice:
    """One entry of a row's model picker: a model and the mode sent with it."""

    model: str
    mode: str | None
    union: bool = False

    @property
    def label(self) -> str:
        return f"{self.model} ({self.mode})" if self.mode else self.model


@dataclass(frozen=True)
class ControlRow:
    """What the artist set in one control row of the docker."""

    layer_id: str | None
    choice: ControlChoice | None
    strength: float = 1.0
    start: float = 0.0  # the fraction of the steps it acts on: from `start` to `end`
    end: float = 1.0


class ControlError(Exception):
    """Why a control row cannot be sent, in words for the artist."""


def mode_from_name(name: str) -> str | None:
    """The mode a plain ControlNet's file name says (`control_v11f1p_sd15_depth` ->
    depth), or None: the server then uses the image exactly as sent."""
    lowered = name.lower()
    for word, mode in _NAME_HINTS:
        if word in lowered:
            return mode
    return None


def base_family(family: str | None) -> str:
    """`sd15-inpaint` -> `sd15`: ControlNets serve every checkpoint of their base."""
    return (family or "").split("-", 1)[0]


def models_for(models: ModelList, checkpoint: str | None) -> list[ControlModel]:
    """The ControlNets (plain and union) that fit `checkpoint`'s family (the server's
    default when None). IP-Adapters go in `reference`, not here."""
    family = base_family(models.family_of(checkpoint))
    return [
        control
        for control in models.controls
        if control.kind in ("controlnet", "union") and base_family(control.family) == family
    ]


def choices_for(models: ModelList, checkpoint: str | None) -> list[ControlChoice]:
    """The picker's entries: a plain ControlNet once, with the mode its name says; a
    union model once per mode, since it needs one."""
    choices: list[ControlChoice] = []
    for control in models_for(models, checkpoint):
        if control.kind == "union":
            choices.extend(ControlChoice(control.name, mode, True) for mode in MODES)
        else:
            choices.append(ControlChoice(control.name, mode_from_name(control.name)))
    return choices


def check_row(number: int, row: ControlRow, layer_ids: set[str]) -> ControlChoice:
    """The row's choice when it can be sent; else ControlError saying what to do.
    `number` counts from 1, as the docker shows rows."""
    if row.choice is None:
        raise ControlError(
            f"Control {number}: no control model fits this checkpoint. Put a ControlNet "
            "for its family in the server's controlnet folder, or remove the control."
        )
    if row.layer_id is None:
        raise ControlError(f"Control {number}: pick the layer it should follow.")
    if row.layer_id not in layer_ids:
        raise ControlError(
            f"Control {number}: its layer is not in this document any more; pick another."
        )
    if not 0.0 <= row.strength <= 2.0:
        raise ControlError(f"Control {number}: strength must be between 0 and 2.")
    if not 0.0 <= row.start < row.end <= 1.0:
        raise ControlError(
            f"Control {number}: its range must start before it ends (between 0 and 1)."
        )
    return row.choice


def check_rows(rows: list[ControlRow], layer_ids: set[str]) -> list[ControlChoice]:
    """Every row's choice, or ControlError for the first that cannot be sent. Union
    and plain ControlNets cannot share a job (the server refuses the mix)."""
    chosen = [check_row(number, row, layer_ids) for number, row in enumerate(rows, 1)]
    if len({choice.union for choice in chosen}) > 1:
        raise ControlError(
            "A union ControlNet and single-mode ControlNets cannot be used in one job: "
            "use the union model for every control, or none."
        )
    return chosen


def reference_models_for(models: ModelList, checkpoint: str | None) -> list[str]:
    """The IP-Adapters that fit `checkpoint`'s family (the server lists one only when
    its image encoder is there too)."""
    family = base_family(models.family_of(checkpoint))
    return [
        control.name
        for control in models.controls
        if control.kind == "ip-adapter" and base_family(control.family) == family
    ]


@dataclass(frozen=True)
class ReferenceSetting:
    """The reference the artist set: an IP-Adapter and a picture, from a layer of
    the document (`layer_id`) or an image file (`path`)."""

    model: str | None
    layer_id: str | None = None
    path: str | None = None
    weight: float = 0.6


def check_reference(reference: ReferenceSetting, layer_ids: set[str]) -> str:
    """The reference's model when it can be sent; else ControlError with what to do."""
    if reference.model is None:
        raise ControlError(
            "Reference: no IP-Adapter fits this checkpoint. Put one (with its image "
            "encoder) in the server's ipadapter folder, or turn the reference off."
        )
    if reference.path is None and reference.layer_id is None:
        raise ControlError("Reference: pick a layer or an image file.")
    if reference.path is None and reference.layer_id not in layer_ids:
        raise ControlError("Reference: its layer is not in this document any more.")
    if not 0.0 <= reference.weight <= 2.0:
        raise ControlError("Reference: weight must be between 0 and 2.")
    return reference.model


def preprocess_layer_name(mode: str) -> str:
    """The name of the layer "From canvas" adds: its mode, so the artist sees what
    it is for, e.g. `Depth (control)`."""
    return f"{mode.capitalize()} (control)"
