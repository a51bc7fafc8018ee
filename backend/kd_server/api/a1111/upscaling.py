"""A1111's upscalers in our terms: their names, hires fix's sizes and the extras' sizes.

A1111 names upscalers "None", "Lanczos", "Nearest", its latent modes ("Latent",
"Latent (bicubic)" ...) and its model files; this server has Lanczos and the
library's upscaler models (`Services.upscalers()`). A name becomes an `UpscalerChoice`
here, once, for the hires fix of txt2img and for the extras endpoints; the sizes follow
A1111's arithmetic (docs/a1111.md, "Upscaling").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from kd_server.api.errors import ApiError

NONE, LANCZOS, NEAREST = "None", "Lanczos", "Nearest"
#: A1111's latent upscale modes (`GET latent-upscale-modes`), hires fix only. Here
#: hires fix enlarges in pixel space, so they all run as Lanczos (docs/a1111.md).
LATENT_MODES = (
    "Latent",
    "Latent (antialiased)",
    "Latent (bicubic)",
    "Latent (bicubic antialiased)",
    "Latent (nearest)",
    "Latent (nearest-exact)",
)
#: A1111's own names for the upscaler models it downloads -> the published files'
#: names, so a script sending "R-ESRGAN 4x+" finds RealESRGAN_x4plus.pth in the library.
A1111_MODEL_NAMES = {
    "r-esrgan 4x+": "RealESRGAN_x4plus",
    "r-esrgan 4x+ anime6b": "RealESRGAN_x4plus_anime_6B",
    "r-esrgan 2x+": "RealESRGAN_x2plus",
    "r-esrgan general 4xv3": "realesr-general-x4v3",
    "r-esrgan general wdn 4xv3": "realesr-general-wdn-x4v3",
    "r-esrgan animevideo": "realesr-animevideov3",
    "scunet gan": "scunet_color_real_gan",
    "scunet psnr": "scunet_color_real_psnr",
    "swinir 4x": "SwinIR_4x",
}
#: A1111's scale for its built-in upscalers in `GET upscalers`.
BUILT_IN_SCALE = 4


class UpscalerEntry(Protocol):
    """What `Services.upscalers()` lists (kd_server.upscale.files.UpscalerFile)."""

    @property
    def name(self) -> str: ...
    @property
    def usable(self) -> bool: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def scale(self) -> int | None: ...


@dataclass(frozen=True)
class UpscalerChoice:
    """An A1111 upscaler name resolved: what runs."""

    asked: str  # the name as sent (A1111 writes it into the infotext)
    kind: str  # "none" | "lanczos" | "nearest" | "latent" | "model"
    model: str | None = None  # the library's name, for kind "model"

    @property
    def engine_name(self) -> str | None:
        """The name `Upscaling.upscaler` / `Services.upscale_image` take (None: Lanczos)."""
        return self.model


def resolve(field: str, name: str | None, entries: Sequence[UpscalerEntry]) -> UpscalerChoice:
    """A1111's upscaler name -> what runs; 422 naming `field` for an unknown or unusable
    one, with the choices. Model names match as the library spells them, with or
    without their folder or file extension, in any case."""
    if name is None or name.strip() in ("", NONE):
        return UpscalerChoice(name or NONE, "none")
    wanted = name.strip()
    lowered = wanted.casefold()
    if lowered == LANCZOS.casefold():
        return UpscalerChoice(wanted, "lanczos")
    if lowered == NEAREST.casefold():
        return UpscalerChoice(wanted, "nearest")
    if lowered in {mode.casefold() for mode in LATENT_MODES}:
        return UpscalerChoice(wanted, "latent")
    entry = _find(entries, wanted)
    if entry is None:
        choices = ", ".join([NONE, LANCZOS, NEAREST, *(e.name for e in entries if e.usable)])
        raise ApiError(
            422,
            "upscaler_not_found",
            f"{field}: there is no upscaler '{wanted}'; the choices are {choices} "
            "(GET /sdapi/v1/upscalers).",
        )
    if not entry.usable:
        raise ApiError(
            422,
            "upscaler_unusable",
            f"{field}: the upscaler '{entry.name}' cannot be used: {entry.reason or 'unknown'}",
        )
    return UpscalerChoice(wanted, "model", entry.name)


def _find(entries: Sequence[UpscalerEntry], wanted: str) -> UpscalerEntry | None:
    """The entry named `wanted`: exactly, else by its last path part or without the
    file extension, case-insensitively, when that is unambiguous; else, for A1111's
    own model names ("R-ESRGAN 4x+"), the file A1111 would have downloaded."""
    exact = [e for e in entries if e.name == wanted]
    if exact:
        return exact[0]
    for key in (_key(wanted), _key(A1111_MODEL_NAMES.get(wanted.casefold(), ""))):
        if not key:
            continue
        loose = [e for e in entries if key in (_key(e.name), _key(e.name.rsplit("/", 1)[-1]))]
        if len(loose) == 1:
            return loose[0]
    return None


def _key(name: str) -> str:
    stem = name.strip().casefold()
    for suffix in (".safetensors", ".pth", ".pt", ".ckpt", ".bin"):
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


# ------------------------------------------------------------------------- hires fix


@dataclass(frozen=True)
class HiresSize:
    """Where hires fix goes: the size the second pass runs at (`upscale_to`), and the
    final size after A1111's centre crop (`final`, smaller only with both hr_resize_x
    and hr_resize_y at another aspect)."""

    upscale_to: tuple[int, int]
    final: tuple[int, int]


def hires_size(width: int, height: int, scale: float, resize_x: int, resize_y: int) -> HiresSize:
    """A1111's `calculate_target_resolution`: by `hr_scale` when both resize fields are
    0, else to `hr_resize_x` / `hr_resize_y` (one 0: the aspect kept; both: cover the
    box, then crop to it)."""
    if resize_x == 0 and resize_y == 0:
        size = (int(width * scale), int(height * scale))
        return HiresSize(size, size)
    if resize_y == 0:
        size = (resize_x, resize_x * height // width)
        return HiresSize(size, size)
    if resize_x == 0:
        size = (resize_y * width // height, resize_y)
        return HiresSize(size, size)
    if width / height < resize_x / resize_y:
        cover = (resize_x, resize_x * height // width)
    else:
        cover = (resize_y * width // height, resize_y)
    return HiresSize(cover, (resize_x, resize_y))


def centre_box(size: tuple[int, int], final: tuple[int, int]) -> tuple[int, int, int, int]:
    """The box of `final` size in the middle of `size` (A1111's crop after upscaling)."""
    left, top = (size[0] - final[0]) // 2, (size[1] - final[1]) // 2
    return left, top, left + final[0], top + final[1]


# --------------------------------------------------------------------------- extras


@dataclass(frozen=True)
class ExtrasSize:
    """The extras' upscale of one image: enlarge to `upscale_to`, then crop to `crop`."""

    upscale_to: tuple[int, int]
    crop: tuple[int, int] | None
    info: tuple[tuple[str, str], ...]  # A1111's "Postprocess ..." entries


def extras_size(
    image: tuple[int, int],
    resize_mode: int,
    factor: float,
    to_width: int,
    to_height: int,
    crop: bool,
) -> ExtrasSize:
    """A1111's postprocessing upscale: mode 0 by `factor`, mode 1 to `to_width` x
    `to_height` (the factor that covers it; with `crop` the middle is cut to exactly
    that size). Sizes are rounded down to multiples of 8 as A1111's upscalers do; the
    crop mode enlarges to at least the box, so no black border is pasted in (A1111
    pastes onto a black canvas when the rounding makes the picture smaller)."""
    width, height = image
    if resize_mode == 1:
        factor = max(to_width / width, to_height / height)
        info = [("Postprocess upscale to", f"{to_width}x{to_height}")]
        if crop:
            cover = (max(to_width, round(width * factor)), max(to_height, round(height * factor)))
            info.append(("Postprocess crop to", f"{to_width}x{to_height}"))
            return ExtrasSize(cover, (to_width, to_height), tuple(info))
    else:
        info = [("Postprocess upscale by", f"{factor:g}")]
    size = (int(width * factor // 8 * 8), int(height * factor // 8 * 8))
    if size[0] < 8 or size[1] < 8:
        raise ApiError(
            422,
            "invalid_request",
            f"upscaling_resize: {width}x{height} scaled by {factor:g} is under 8 pixels a side.",
        )
    return ExtrasSize(size, None, tuple(info))
