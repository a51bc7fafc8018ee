"""The ControlNet extension's units (`alwayson_scripts.controlnet.args`) -> our controls.

sd-webui-controlnet takes one dict per unit: `enabled`, `image`, `module` (the
preprocessor), `model`, `weight`, `guidance_start`/`guidance_end`, `control_mode`,
`resize_mode`, `processor_res`, `threshold_a`/`threshold_b` and more. Each enabled
unit becomes a `ControlInput` (or, for an `ip-adapter*` module, the job's reference),
its image fitted to the job's size by the unit's resize mode, as the extension does.

What we cannot honour is refused with a 422 naming the unit's field, when losing it
would change the picture (a preprocessor that needs a model this server does not
have, a control mode other than Balanced, a unit mask); what cannot change it is
ignored (low_vram, pixel_perfect's exact resolution, hr_option, save_detected_map).
docs/a1111.md has the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image

from kd_server.api.a1111 import images
from kd_server.api.errors import ApiError
from kd_server.api.imaging import ImageInputError, as_picture
from kd_server.config import Settings
from kd_server.generation import ControlInput, ControlMode, ReferenceInput
from kd_server.library import EntryKind, ModelLibrary

#: The script's name as A1111 matches it (any case).
SCRIPT = "controlnet"

#: Preprocessor modules we run: (mode, preprocess). Every depth estimator of the
#: extension is served by the installed Depth Anything.
MODULES: dict[str, tuple[ControlMode | None, bool]] = {
    "none": (None, False),
    "canny": (ControlMode.CANNY, True),
    "invert": (ControlMode.LINEART, False),
    "invert (from white bg & black line)": (ControlMode.LINEART, False),
    "depth": (ControlMode.DEPTH, True),
    "depth_midas": (ControlMode.DEPTH, True),
    "depth_zoe": (ControlMode.DEPTH, True),
    "depth_leres": (ControlMode.DEPTH, True),
    "depth_leres++": (ControlMode.DEPTH, True),
    "depth_anything": (ControlMode.DEPTH, True),
    "depth_anything_v2": (ControlMode.DEPTH, True),
    "tile_resample": (ControlMode.TILE, False),
}
#: Modules that make the unit an IP-Adapter reference (their CLIP encoding is ours).
REFERENCE_PREFIX = "ip-adapter"
#: The extension's `union_control_type` names for a union model with module none.
UNION_TYPES: dict[str, ControlMode] = {
    "depth": ControlMode.DEPTH,
    "canny/lineart/anime lineart/mlsd": ControlMode.CANNY,
    "hed/pidi/scribble/ted": ControlMode.SCRIBBLE,
    "openpose": ControlMode.POSE,
    "normal": ControlMode.NORMAL,
    "segment": ControlMode.SEGMENT,
    "tile": ControlMode.TILE,
}
RESIZE_MODES = {
    "just resize": images.JUST_RESIZE,
    "crop and resize": images.CROP_AND_RESIZE,
    "inner fit (scale to fit)": images.CROP_AND_RESIZE,
    "resize and fill": images.RESIZE_AND_FILL,
    "outer fit (shrink to fit)": images.RESIZE_AND_FILL,
}
BALANCED = ("balanced", 0)


def unsupported(where: str, message: str) -> ApiError:
    return ApiError(422, "unsupported_field", f"{where}: {message}")


def invalid(where: str, message: str) -> ApiError:
    return ApiError(422, "invalid_request", f"{where}: {message}")


@dataclass
class Units:
    """A request's enabled units, images fitted to the job's width x height."""

    controls: list[ControlInput] = field(default_factory=list)
    reference: ReferenceInput | None = None
    infotext: list[tuple[str, str]] = field(default_factory=list)

    def cropped(self, box: images.Box) -> Units:
        """The same units for the region an inpaint job repaints."""
        return Units(
            [replace(c, image=c.image.crop(box)) for c in self.controls],
            self.reference,
            self.infotext,
        )


def script_args(scripts: dict[str, Any]) -> tuple[str, list[Any]] | None:
    """(the key as sent, its args) of the ControlNet script, if the request has one."""
    for name, script in scripts.items():
        if name.lower() == SCRIPT:
            args = script.get("args") if isinstance(script, dict) else None
            return name, list(args) if isinstance(args, (list, tuple)) else []
    return None


def parse_units(
    scripts: dict[str, Any],
    library: ModelLibrary,
    settings: Settings,
    size: tuple[int, int],
    init: Image.Image | None = None,
) -> Units:
    """Each enabled unit as a control or the reference; `init` is img2img's fitted
    picture, which a unit without an image uses (as the extension does)."""
    found = script_args(scripts)
    units = Units()
    if found is None:
        return units
    name, args = found
    for index, unit in enumerate(args):
        if not isinstance(unit, dict) or not unit.get("enabled", True):
            continue
        where = f"alwayson_scripts.{name}.args[{index}]"
        _add_unit(units, unit, where, library, settings, size, init)
    return units


def _add_unit(
    units: Units,
    unit: dict[str, Any],
    where: str,
    library: ModelLibrary,
    settings: Settings,
    size: tuple[int, int],
    init: Image.Image | None,
) -> None:
    module = str(unit.get("module") or "none").strip().lower()
    _check_ignorable(unit, where)
    model = _model(library, unit.get("model"), where)
    image = _image(unit, where, settings, size, init)
    weight = _number(unit, "weight", 1.0, where)
    if not 0 <= weight <= 2:
        raise invalid(f"{where}.weight", f"must be between 0 and 2, not {weight:g}")
    start, end = (
        _number(unit, k, d, where) for k, d in (("guidance_start", 0), ("guidance_end", 1))
    )
    if not 0 <= start < end <= 1:
        raise invalid(
            f"{where}.guidance_end",
            f"must be above guidance_start, both in 0..1 (got {start:g}, {end:g})",
        )
    if module.startswith(REFERENCE_PREFIX) and "face_id" not in module:
        if units.reference is not None:
            raise unsupported(where, "one IP-Adapter unit per request is available")
        units.reference = ReferenceInput(model=model, image=image, weight=weight)
    else:
        mode, preprocess = _module(module, where)
        if mode is None:
            mode = _union_type(unit, where)
        units.controls.append(
            ControlInput(
                model=model,
                image=image,
                mode=mode,
                preprocess=preprocess,
                strength=weight,
                start=start,
                end=end,
                low_threshold=_threshold(unit, "threshold_a", 100),
                high_threshold=_threshold(unit, "threshold_b", 200),
            )
        )
    units.infotext.append(
        (
            f"ControlNet {len(units.infotext)}",
            f"Module: {module}, Model: {unit.get('model')}, Weight: {weight:g}, "
            f"Guidance Start: {start:g}, Guidance End: {end:g}",  # the infotext quotes it
        )
    )


def _module(module: str, where: str) -> tuple[ControlMode | None, bool]:
    found = MODULES.get(module)
    if found is None:
        raise unsupported(
            f"{where}.module",
            f"the preprocessor '{module}' needs a model this server does not have; send "
            "the image it would make with module 'none' (a drawn skeleton, line art), or "
            f"use one of: {', '.join(sorted(MODULES))}, ip-adapter*",
        )
    return found


def _union_type(unit: dict[str, Any], where: str) -> ControlMode | None:
    """A union model with module none needs the control type; others need none."""
    wanted = unit.get("union_control_type")
    if wanted in (None, "", "Unknown", "unknown"):
        return None
    mode = UNION_TYPES.get(str(wanted).strip().lower())
    if mode is None:
        raise invalid(
            f"{where}.union_control_type",
            f"'{wanted}' is not a control type; use one of {', '.join(UNION_TYPES)}",
        )
    return mode


def _check_ignorable(unit: dict[str, Any], where: str) -> None:
    control_mode = unit.get("control_mode", 0)
    lowered = control_mode.lower() if isinstance(control_mode, str) else control_mode
    if lowered not in BALANCED:
        raise unsupported(
            f"{where}.control_mode",
            f"'{control_mode}' is not available; only Balanced (0) is",
        )
    mask = unit.get("mask") or unit.get("mask_image")
    image = unit.get("image")
    if isinstance(image, dict):
        mask = mask or image.get("mask")
    if mask:
        raise unsupported(f"{where}.mask", "a unit mask is not available; leave it out")


def _model(library: ModelLibrary, reference: Any, where: str) -> str:
    """Our control model's name for the extension's "name [hash]" (or file name)."""
    from kd_server.api.a1111.translate import _candidates, _match

    text = str(reference or "").strip()
    if text in ("", "None", "none"):
        raise invalid(f"{where}.model", "is required: a model from /controlnet/model_list")
    entries = library.entries(EntryKind.CONTROL)
    found = _match([e.name for e in entries if e.usable], text)
    if found is None:
        by_hash = library.hashes.find(entries, text)
        found = by_hash.name if by_hash is not None else None
    if found is None:
        library.get(EntryKind.CONTROL, _candidates(text)[-1], "control model")  # raises
        raise AssertionError("unreachable")
    return found


def _image(
    unit: dict[str, Any],
    where: str,
    settings: Settings,
    size: tuple[int, int],
    init: Image.Image | None,
) -> Image.Image:
    data = unit.get("image", unit.get("input_image"))
    if isinstance(data, dict):
        data = data.get("image")
    if isinstance(data, list):
        data = data[0] if data else None
    if not data:
        if init is None:
            raise invalid(f"{where}.image", "is required for txt2img: a base64 image")
        return init
    try:
        picture = as_picture(images.decode_image(str(data), f"{where}.image", settings.max_pixels))
    except ImageInputError as exc:
        raise ApiError(422, "invalid_request", f"{exc}.") from exc
    return images.fit(picture, *size, _resize_mode(unit, where))


def _resize_mode(unit: dict[str, Any], where: str) -> int:
    mode = unit.get("resize_mode", "Crop and Resize")
    if isinstance(mode, int) and mode in (0, 1, 2):
        return mode
    found = RESIZE_MODES.get(str(mode).strip().lower())
    if found is None:
        raise invalid(f"{where}.resize_mode", f"'{mode}' is not a resize mode")
    return found


def _number(unit: dict[str, Any], name: str, default: float, where: str) -> float:
    value = unit.get(name, default)
    try:
        number = float(default if value is None else value)
    except (TypeError, ValueError):
        raise invalid(f"{where}.{name}", "must be a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise invalid(f"{where}.{name}", "must be a finite number")
    return number


def _threshold(unit: dict[str, Any], name: str, default: int) -> int:
    """Canny's thresholds ride on the extension's generic threshold_a/_b sliders."""
    value = unit.get(name)
    try:
        number = default if value in (None, -1) else round(float(value))
    except (TypeError, ValueError, OverflowError):
        number = default
    return max(0, min(255, number))
