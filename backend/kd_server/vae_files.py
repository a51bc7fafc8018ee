"""Separate VAE files: found in A1111's `models/VAE` and ComfyUI's `models/vae`, and
swapped in for a job's checkpoint VAE.

Why: many checkpoints ship a washed-out or broken VAE (SD 1.5 merges without one,
SDXL's fp16 NaNs), and artists fix it by choosing a VAE file (`vae-ft-mse-840000`,
`sdxl_vae`, `sdxl-vae-fp16-fix`) in A1111's "SD VAE" setting or ComfyUI's VAE loader.
A job that names one here decodes (and, for img2img and inpaint, encodes) with it.

Files are told apart from the safetensors header alone: the original (LDM) layout
(`encoder.down.0.block.0...`, with or without `first_stage_model.`/`vae.`) or
diffusers' (`encoder.down_blocks.0.resnets.0...`). SD 1.5 and SDXL VAEs have the same
shapes, so a file is not tied to a family; the checkpoint's own VAE configuration is
used to build it (its latent scaling stays the checkpoint's), and a file whose shapes
do not fit fails with a sentence saying so. Pickles are refused with the conversion.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kd_server.load_lock import one_load_at_a_time

log = logging.getLogger(__name__)

#: Relative to a configured model folder: ours (= ComfyUI's models/), A1111's models/,
#: then both programs' roots.
VAE_SUBDIRS = ("vae", "VAE", "models/vae", "models/VAE")
SAFETENSORS = ".safetensors"
PICKLES = (".pt", ".ckpt", ".bin", ".pth")
#: Latent channels of SD 1.5 and SDXL (SD3 and Flux VAEs have 16).
LATENT_CHANNELS = 4

_LDM_PREFIXES = ("first_stage_model.", "vae.")
_LDM_MARK = "encoder.down.0.block.0.conv1.weight"
_DIFFUSERS_MARK = "encoder.down_blocks.0.resnets.0.conv1.weight"
_DECODER_IN = ("decoder.conv_in.weight",)


@dataclass(frozen=True)
class VaeFile:
    """One VAE file as the library lists it."""

    name: str  # the file's path in its folder, without extension: what a job names
    path: Path
    layout: str | None  # "ldm" | "diffusers"
    usable: bool
    reason: str | None = None


def find_vaes(folders: list[Path]) -> list[VaeFile]:
    """Every VAE-like file in the VAE folders (subfolders too), usable or with the
    reason why not; a folder reached under two spellings (`vae`, `VAE` on a
    case-insensitive disk) is read once, and the first file of a name wins."""
    found: dict[str, VaeFile] = {}
    seen: set[Path] = set()
    for folder in [f / sub for f in folders for sub in VAE_SUBDIRS if (f / sub).is_dir()]:
        real = folder.resolve()
        if real in seen:
            continue
        seen.add(real)
        for path in sorted(folder.rglob("*")):
            lowered = path.name.lower()
            if path.name.startswith(".") or not lowered.endswith((SAFETENSORS, *PICKLES)):
                continue
            if path.is_file():
                entry = _examine(folder, path)
                found.setdefault(entry.name.casefold(), entry)
    return list(found.values())


def _examine(folder: Path, path: Path) -> VaeFile:
    from kd_server.library import CONVERT_HINT, HeaderError, read_safetensors_header

    name = path.relative_to(folder).as_posix().rsplit(".", 1)[0]
    if not path.name.lower().endswith(SAFETENSORS):
        return VaeFile(name, path, None, False, CONVERT_HINT)
    try:
        shapes = read_safetensors_header(path)
    except HeaderError as exc:
        return VaeFile(name, path, None, False, exc.detection.reason)
    layout, reason = layout_of(shapes)
    return VaeFile(name, path, layout, reason is None, reason)


def layout_of(shapes: dict[str, tuple[int, ...]]) -> tuple[str | None, str | None]:
    """The file's layout, or None and the reason it is not a usable VAE."""
    if any(key.startswith("model.diffusion_model.") for key in shapes):
        return None, "This is a whole checkpoint, not a VAE: put it with the checkpoints."
    bare = {_unprefixed(key): shape for key, shape in shapes.items()}
    layout = "ldm" if _LDM_MARK in bare else "diffusers" if _DIFFUSERS_MARK in bare else None
    decoder_in = bare.get(_DECODER_IN[0])
    if layout is None or decoder_in is None or len(decoder_in) != 4:
        return None, "Not a VAE: the tensor names are not those of an SD 1.5/SDXL VAE."
    if decoder_in[1] != LATENT_CHANNELS:
        return None, (
            f"This VAE reads {decoder_in[1]}-channel latents: it is a Flux or SD 3.5 VAE, "
            "which those models take from models/vae by themselves (docs/models.md); the "
            "VAE choice is for SD 1.5 and SDXL, which need a 4-channel one."
        )
    return layout, None


def _unprefixed(key: str) -> str:
    for prefix in _LDM_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


# --------------------------------------------------------------------- loading


def signature(file: VaeFile) -> str:
    """Changes when the file is replaced, so a cached copy is not reused."""
    stat = file.path.stat()
    text = f"{file.path}|{stat.st_size}|{stat.st_mtime_ns}"
    return hashlib.sha1(text.encode()).hexdigest()[:12]


@one_load_at_a_time
def load_vae(file: VaeFile, like: Any) -> Any:
    """The file as an AutoencoderKL built like `like` (the checkpoint's VAE: its
    configuration, device and dtype). Raises ValueError when the shapes do not fit."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
    from safetensors.torch import load_file

    tensors = load_file(str(file.path))
    if file.layout == "ldm":
        tensors = convert_ldm_vae_checkpoint(tensors, dict(like.config))
    else:
        tensors = {_unprefixed(key): value for key, value in tensors.items()}
    vae = AutoencoderKL.from_config(like.config)
    try:
        vae.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise ValueError(
            f"The VAE '{file.name}' does not fit this checkpoint's VAE (its layers differ)."
        ) from exc
    vae.to(device=like.device, dtype=like.dtype)
    vae.eval()
    log.info("Loaded the VAE %s", file.name)
    return vae


class VaeCache:
    """The VAE files loaded for the checkpoints in memory, the latest few kept (a VAE is
    ~160 MB in fp16; artists use one or two)."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._loaded: dict[tuple[int, str], tuple[Any, Any]] = {}

    def get(self, file: VaeFile, like: Any) -> Any:
        """`file` loaded like the checkpoint VAE `like` (built once per file version and
        checkpoint VAE)."""
        key = (id(like), signature(file))  # `like` is kept below, so its id stays its own
        _, vae = self._loaded.pop(key, (like, None))
        if vae is None:
            vae = load_vae(file, like)
        self._loaded[key] = (like, vae)  # the latest last
        while len(self._loaded) > self.size:
            del self._loaded[next(iter(self._loaded))]
        return vae

    def clear(self) -> None:
        self._loaded.clear()


@contextmanager
def swapped_vae(pipe: Any, vae: Any | None) -> Iterator[None]:
    """Run `pipe` with `vae` in place of its own for the duration (None: its own)."""
    if vae is None:
        yield
        return
    original = pipe.vae
    pipe.vae = vae
    try:
        yield
    finally:
        pipe.vae = original
