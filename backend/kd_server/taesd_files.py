"""Tiny preview decoders (TAESD) in the artist's model folders: where, which, usable or not.

Why: a TAESD decoder ("tiny autoencoder for Stable Diffusion") turns latents into a
sharp picture at a fraction of a VAE decode, so step previews look like the result
instead of the colour blur of the latent map. Artists who use ComfyUI or A1111 often
have one already: ComfyUI keeps `taesd_decoder` and `taesdxl_decoder` in
`models/vae_approx`, A1111 downloads them to `models/VAE-taesd`. They are found by
name, as those programs find them (`taesd_*` = SD 1.5, `taesdxl_*` = SDXL, `taesd3_*` =
SD 3 / 3.5, `taef1_*` = Flux.1; the last two read 16-channel latents), and checked
from the safetensors header alone. Pickle files (`.pth`, the form ComfyUI's
readme links to) are listed as refused, with the one-line conversion.

The key layout is read here without torch: the original decoder (an `nn.Sequential`
whose first item, the clamp, has no weights: keys `1.weight` ... `19.bias`) and
diffusers' `AutoencoderTiny` (`decoder.layers.0.weight` ...) both map onto diffusers'
`DecoderTiny` (`layers.0.weight` ...), which `kd_server.taesd` loads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from kd_server.families import Architecture, Family

#: Relative to a configured model folder: ours and ComfyUI's, then A1111's.
DECODER_SUBDIRS = ("vae_approx", "models/vae_approx", "VAE-taesd", "models/VAE-taesd")
SAFETENSORS = ".safetensors"
PICKLES = (".pth", ".pt", ".ckpt", ".bin")

#: Name prefix -> the family whose latents the decoder reads, longest first. Every Flux
#: family shares Flux.1 dev's latent space and every SD 3.5 one SD 3.5 large's
#: (`latent_family`).
_PREFIXES = (
    ("taesdxl", Family.SDXL),
    ("taesd3", Family.SD35_LARGE),
    ("taef1", Family.FLUX_DEV),
    ("taesd", Family.SD15),
)

#: DecoderTiny's layout: 4 stages of (3, 3, 3, 1) blocks; layer 0 is the input conv,
#: layer 18 the output conv to RGB.
FIRST_CONV = "layers.0.weight"
LAST_CONV = "layers.18.weight"
LATENT_CHANNELS = 4

#: How a refusal names the latents a decoder was expected to read.
_LATENTS_LABEL = {
    Family.SD15: "SD 1.5",
    Family.SDXL: "SDXL",
    Family.SD35_LARGE: "SD 3 and 3.5",
    Family.FLUX_DEV: "Flux.1",
}

_ORIGINAL_KEY = re.compile(r"^(\d+)\.(.+)$")
_DIFFUSERS_KEY = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class PreviewDecoder:
    """One TAESD decoder file as the library lists it."""

    name: str  # the file name without extension
    path: Path
    family: Family | None  # the base family whose latents it decodes
    usable: bool
    reason: str | None = None


def decoder_key(key: str) -> str | None:
    """A file's tensor name -> `DecoderTiny`'s, or None for a tensor it does not hold
    (an `AutoencoderTiny` file's encoder)."""
    diffusers = _DIFFUSERS_KEY.match(key)
    if diffusers is not None:
        return f"layers.{diffusers.group(1)}.{diffusers.group(2)}"
    original = _ORIGINAL_KEY.match(key)
    if original is not None and int(original.group(1)) >= 1:  # item 0 is the clamp
        return f"layers.{int(original.group(1)) - 1}.{original.group(2)}"
    return None


def latent_family(family: Family) -> Family:
    """The family whose TAESD decoder reads `family`'s latents (`_PREFIXES`): Flux.1
    schnell and Fill share dev's VAE, SD 3.5 medium large's; inpaint models their base's."""
    info = family.info
    if info.architecture is Architecture.FLUX:
        return Family.FLUX_DEV
    if info.architecture is Architecture.SD3:
        return Family.SD35_LARGE
    return info.base


def layout_problem(shapes: dict[str, tuple[int, ...]], family: Family | None = None) -> str | None:
    """Why these tensors are not a TAESD decoder for `family`'s latents (None: SD 1.5
    and SDXL's), or None."""
    mapped = {decoder_key(key): shape for key, shape in shapes.items()}
    first, last = mapped.get(FIRST_CONV), mapped.get(LAST_CONV)
    if first is None or last is None or len(first) != 4 or len(last) != 4:
        return (
            "Not a TAESD decoder: the tensor names are not those of taesd_decoder "
            "(1.weight ... 19.bias) or of diffusers' AutoencoderTiny (decoder.layers.*)."
        )
    channels = LATENT_CHANNELS if family is None else family.info.latent_channels
    if first[1] != channels or last[0] != 3:
        which = "SD 1.5 and SDXL" if family is None else _LATENTS_LABEL.get(family, "")
        return (
            f"This decoder reads {first[1]}-channel latents; {which} latents "
            f"have {channels} (it is for another model family)."
        )
    return None


def family_of(name: str) -> tuple[Family | None, str | None]:
    """The family a decoder file is for, by its name as ComfyUI reads it, or a reason."""
    lowered = name.lower()
    for prefix, family in _PREFIXES:
        if lowered.startswith(prefix):
            if "encoder" in lowered and "decoder" not in lowered:
                return None, "This is a TAESD encoder; previews need the decoder."
            return family, None
    return None, (
        "Not a TAESD decoder name: previews use files named taesd_decoder (SD 1.5), "
        "taesdxl_decoder (SDXL), taesd3_decoder (SD 3.5) or taef1_decoder (Flux.1)."
    )


def decoder_folders(folders: list[Path]) -> list[Path]:
    """The decoder folders inside the configured model folders, in scan order."""
    return [
        folder / sub for folder in folders for sub in DECODER_SUBDIRS if (folder / sub).is_dir()
    ]


def find_preview_decoders(folders: list[Path]) -> list[PreviewDecoder]:
    """Every TAESD-like file in the decoder folders, usable or with the reason why not.
    Links leaving their folder are not followed, as for every other model file."""
    found: list[PreviewDecoder] = []
    for folder in decoder_folders(folders):
        for path in sorted(folder.iterdir()):
            lowered = path.name.lower()
            if path.name.startswith(".") or not lowered.endswith((SAFETENSORS, *PICKLES)):
                continue
            found.append(_examine(folder, path))
    return found


def _examine(folder: Path, path: Path) -> PreviewDecoder:
    # The library imports this module; its header reader is needed only here.
    from kd_server.library import CONVERT_HINT, HeaderError, read_safetensors_header

    name = path.name.rsplit(".", 1)[0]
    family, reason = family_of(name)
    if reason is None and not path.name.lower().endswith(SAFETENSORS):
        reason = CONVERT_HINT
    if reason is None and not _regular_inside(path, folder):
        reason = "Not a regular file inside its folder (a link elsewhere is not followed)."
    if reason is None:
        try:
            reason = layout_problem(read_safetensors_header(path), family)
        except HeaderError as exc:
            reason = exc.detection.reason
    return PreviewDecoder(name, path, family, reason is None, reason)


def _regular_inside(path: Path, folder: Path) -> bool:
    try:
        return path.is_file() and path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False
