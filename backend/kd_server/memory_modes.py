"""Memory modes: how much of a model lives on the GPU, chosen from the free memory and
the model's size, and lowered once when a job runs out of memory.

The ladder, highest (fastest, most memory) first; a lower mode keeps the tricks of the
ones above it where they combine:

- ``full``: every component on the GPU in the loaded precision.
- ``vae-tiling``: the VAE decodes (and encodes) in tiles, one image of a batch at a time
  (diffusers' ``enable_tiling`` / ``enable_slicing``): large pictures no longer need
  gigabytes for the decode.
- ``fp8``: tiling, and the UNet/transformer's weights stored in float8 (e4m3fn) and cast
  layer by layer to the compute precision when used (diffusers' layerwise casting):
  half the denoiser's memory, a small quality cost. Not on Apple MPS (no float8 there),
  and nothing to gain for a GGUF file (already quantised by its file).
- ``model-offload``: tiling and fp8, and each component moved to the GPU only while it
  runs (diffusers' ``enable_model_cpu_offload``): the GPU holds the largest component.
- ``sequential-offload``: tiling, and every layer moved to the GPU only for its own
  forward (``enable_sequential_cpu_offload``): the least memory, the slowest. fp8 is not
  kept: accelerate's layer hooks and the casting hooks do not share a module.

GGUF transformers are quantised by their file in every mode (kd_server.loading).

Switching a loaded model between modes (`transition`): diffusers' offload hooks come off
with ``remove_all_hooks`` and tiling switches off, but float8 casting rounds the weights
(the lost precision cannot come back) and sequential offload moves weights to the meta
device. So a model moves *down* the ladder in place (new hooks on the loaded weights),
except into sequential offload from a float8 mode, and moves *up* by being reloaded from
its files, except between ``full`` and ``vae-tiling`` (a switch on the VAE).

The auto choice (`choose`) estimates what each mode needs from the model's file sizes
(`ModelSize`), and takes the highest mode that fits the free GPU memory. On the CPU
(and on MPS, whose memory is the system's) the choice is ``full``. docs/memory.md has
the figures and the reasons.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from kd_server.library import ModelEntry

log = logging.getLogger(__name__)

GIB = 1 << 30
AUTO = "auto"


class MemoryMode(enum.Enum):
    FULL = "full"
    VAE_TILING = "vae-tiling"
    FP8 = "fp8"
    MODEL_OFFLOAD = "model-offload"
    SEQUENTIAL_OFFLOAD = "sequential-offload"

    @property
    def rank(self) -> int:
        """0 for full, growing down the ladder."""
        return LADDER.index(self)

    @property
    def tiles_vae(self) -> bool:
        return self is not MemoryMode.FULL

    @property
    def casts_fp8(self) -> bool:
        return self in (MemoryMode.FP8, MemoryMode.MODEL_OFFLOAD)

    @property
    def offloads(self) -> bool:
        return self in (MemoryMode.MODEL_OFFLOAD, MemoryMode.SEQUENTIAL_OFFLOAD)


LADDER: tuple[MemoryMode, ...] = tuple(MemoryMode)
NAMES: tuple[str, ...] = tuple(mode.value for mode in LADDER)


class UnknownMemoryMode(ValueError):
    """A memory mode name that is not one of `NAMES` (nor "auto"), or a mode the
    server's device cannot run."""


def parse(text: str | None) -> MemoryMode | None:
    """A setting's or a job's value -> the mode; None for unset or "auto"."""
    if text is None:
        return None
    value = text.strip().lower()
    if value in ("", AUTO):
        return None
    for mode in LADDER:
        if mode.value == value:
            return mode
    raise UnknownMemoryMode(
        f"Unknown memory mode '{text}': use auto, {', '.join(NAMES)} (docs/memory.md)."
    )


def lower(mode: MemoryMode) -> MemoryMode | None:
    """The next mode down the ladder; None below sequential offload."""
    index = mode.rank + 1
    return LADDER[index] if index < len(LADDER) else None


# -- sizes and the auto choice -----------------------------------------------------


@dataclass(frozen=True)
class ModelSize:
    """What the auto choice knows of a model before loading it, from its files."""

    total: int  # bytes of every file of the model
    denoiser: int  # bytes of the UNet / transformer as stored
    largest_other: int  # bytes of the largest other component (a text encoder, the VAE)
    working_size: int = 1024  # the side, in pixels, it usually paints at
    quantisation: str | None = None  # ModelParts.quantisation: "fp8-e4m3fn", "gguf-q8_0"

    @property
    def gguf(self) -> bool:
        return (self.quantisation or "").startswith("gguf")

    @property
    def fp8_file(self) -> bool:
        return (self.quantisation or "").startswith("fp8")


#: share of a one-file checkpoint (or folder) taken by its denoiser, when the file does
#: not say: SD1.5 0.80, SDXL 0.74, Flux with T5 0.72 (fp16 components)
DENOISER_SHARE = 0.75


def _size_of(path: Path | None) -> int:
    if path is None:
        return 0
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size
    except OSError:
        return 0


def model_size(entry: ModelEntry, working_size: int) -> ModelSize:
    """The sizes of a library entry's files (a split entry: each of its parts; a
    diffusers folder: its unet/transformer folder apart). The embedded tiny model: 0."""
    parts = entry.parts
    if parts is not None:
        others = [_size_of(p) for p in (parts.vae, parts.clip_l, parts.clip_g, parts.t5xxl)]
        denoiser = _size_of(parts.transformer)
        return ModelSize(
            total=denoiser + sum(others),
            denoiser=denoiser,
            largest_other=max(others, default=0),
            working_size=working_size,
            quantisation=parts.quantisation,
        )
    path = entry.path
    total = _size_of(path)
    if path is not None and path.is_dir():
        denoiser = _size_of(path / "transformer") or _size_of(path / "unet")
        others = [_size_of(d) for d in path.iterdir() if d.is_dir()]
        others = [size for size in others if size != denoiser]
        return ModelSize(total, denoiser, max(others, default=0), working_size)
    denoiser = int(total * DENOISER_SHARE)
    return ModelSize(total, denoiser, total - denoiser, working_size)


def entry_size(entry: ModelEntry) -> ModelSize:
    """`model_size` at the entry's working size (kd_server.loading.working_size)."""
    from kd_server.loading import working_size

    return model_size(entry, working_size(entry))


def activations(working_size: int, tiled: bool) -> int:
    """Bytes a job needs beside the weights at the model's working size: the denoiser's
    activations, and the VAE decode (a whole-image decode of 1024x1024 takes ~3 GiB in
    half precision; tiled, a fraction)."""
    megapixels = (working_size / 1024) ** 2
    return int(GIB * (0.25 + (0.5 if tiled else 3.0) * megapixels))


def applicable(mode: MemoryMode, size: ModelSize | None, device_type: str) -> str | None:
    """Why `mode` cannot run for this model on this device; None when it can."""
    if mode is MemoryMode.FP8 and device_type == "mps":
        return "Apple MPS has no float8 type"
    if mode is MemoryMode.FP8 and size is not None and size.gguf:
        return "a GGUF transformer is already quantised by its file"
    if mode is MemoryMode.SEQUENTIAL_OFFLOAD and device_type == "cpu":
        return (
            "sequential offload needs a GPU (accelerate's layer-by-layer offload does not "
            "run with the CPU as its execution device)"
        )
    return None


def estimate(size: ModelSize, mode: MemoryMode) -> int:
    """Bytes of GPU memory a job in `mode` needs at the model's working size."""
    # an fp8 file is upcast to 16 bits unless the mode keeps it in float8
    denoiser16 = size.denoiser * 2 if size.fp8_file else size.denoiser
    cast = mode.casts_fp8 and not size.gguf
    denoiser = denoiser16 // 2 if cast else denoiser16
    tiled = activations(size.working_size, mode.tiles_vae)
    if mode is MemoryMode.SEQUENTIAL_OFFLOAD:
        return GIB // 2 + tiled  # one layer at a time (Flux's largest is ~0.2 GiB)
    if mode is MemoryMode.MODEL_OFFLOAD:
        return max(denoiser, size.largest_other) + tiled
    return size.total - size.denoiser + denoiser + tiled


@dataclass(frozen=True)
class Choice:
    mode: MemoryMode
    reason: str  # a sentence for /v1/health and the log


def _gib(value: int) -> str:
    return f"{value / GIB:.1f} GiB"


def choose(free_bytes: int | None, size: ModelSize | None, device_type: str) -> Choice:
    """The highest mode whose estimate fits `free_bytes` of GPU memory (pure)."""
    if device_type == "cpu":
        return Choice(MemoryMode.FULL, "runs on the CPU, in system memory")
    if device_type == "mps":
        return Choice(MemoryMode.FULL, "Apple MPS shares the system's memory")
    if free_bytes is None or size is None or size.total == 0:
        return Choice(MemoryMode.FULL, "the model's size or the free memory is not known")
    over: list[str] = []
    for mode in LADDER:
        if applicable(mode, size, device_type) is not None:
            continue
        need = estimate(size, mode)
        if need <= free_bytes or mode is MemoryMode.SEQUENTIAL_OFFLOAD:
            fits = "fits" if need <= free_bytes else "is the last resort"
            head = f"{mode.value} {fits}: needs about {_gib(need)} of {_gib(free_bytes)} free"
            if over:
                head += f" ({'; '.join(over)})"
            return Choice(mode, f"{head}; model files {_gib(size.total)}")
        over.append(f"{mode.value} would need {_gib(need)}")
    raise AssertionError("the ladder ends in sequential offload")  # pragma: no cover


def free_gpu_memory(device: Any) -> int | None:
    """Free bytes on a CUDA device (None elsewhere)."""
    import torch

    if getattr(device, "type", None) != "cuda" or not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


# -- applying a mode to a loaded pipeline ------------------------------------------


Transition = Literal["none", "in-place", "reload"]


def transition(current: MemoryMode, target: MemoryMode) -> Transition:
    """How a loaded model in `current` gets to `target` (see the module's text)."""
    if current is target:
        return "none"
    if {current, target} == {MemoryMode.FULL, MemoryMode.VAE_TILING}:
        return "in-place"
    if target.rank < current.rank:
        return "reload"
    if target is MemoryMode.SEQUENTIAL_OFFLOAD and current.casts_fp8:
        return "reload"
    return "in-place"


def denoiser_of(pipe: Any) -> Any:
    """The pipeline's UNet or transformer."""
    module = getattr(pipe, "transformer", None)
    return module if module is not None else pipe.unet


def _is_cast(module: Any) -> bool:
    from diffusers.hooks.layerwise_casting import _is_layerwise_casting_active

    return any(_is_layerwise_casting_active(sub) for sub in module.modules())


def _is_quantised(module: Any) -> bool:
    return bool(getattr(module, "is_quantized", False))


def apply(pipe: Any, mode: MemoryMode, device: Any) -> None:
    """Put a loaded pipeline (on `device`, or in a higher mode; see `transition`) into
    `mode` with diffusers' own switches."""
    import torch

    vae = getattr(pipe, "vae", None)
    if vae is not None:
        if mode.tiles_vae:
            vae.enable_tiling()
            vae.enable_slicing()
        else:
            vae.disable_tiling()
            vae.disable_slicing()
    if mode.rank < MemoryMode.FP8.rank:
        return
    if mode is not MemoryMode.SEQUENTIAL_OFFLOAD:
        denoiser = denoiser_of(pipe)
        if mode.casts_fp8 and not _is_quantised(denoiser) and not _is_cast(denoiser):
            denoiser.enable_layerwise_casting(
                storage_dtype=torch.float8_e4m3fn, compute_dtype=denoiser.dtype
            )
    if mode is MemoryMode.MODEL_OFFLOAD:
        pipe.enable_model_cpu_offload(device=device)
    elif mode is MemoryMode.SEQUENTIAL_OFFLOAD:
        pipe.enable_sequential_cpu_offload(device=device)


def fit_adapters(pipe: Any) -> int:
    """Bring LoRA layers added to a float8-stored denoiser to its compute dtype.

    peft gives the layers it adds the dtype of the layer they wrap, float8 here; the
    casting hooks sit on the wrapped layers only, so the LoRA's own matrices would stay
    float8 and fail in the forward. Returns how many layers were cast."""
    from diffusers.hooks.layerwise_casting import _LAYERWISE_CASTING_HOOK

    fixed = 0
    for module in denoiser_of(pipe).modules():
        base = getattr(module, "base_layer", None)
        registry = getattr(base, "_diffusers_hook", None)
        hook = registry.get_hook(_LAYERWISE_CASTING_HOOK) if registry is not None else None
        if hook is None:
            continue
        for name in getattr(module, "adapter_layer_names", ()):
            layers = getattr(module, name, None)
            if layers is None:
                continue
            if any(p.dtype == hook.storage_dtype for p in layers.parameters()):
                layers.to(dtype=hook.compute_dtype)
                fixed += 1
    return fixed


def message(failed: MemoryMode, retry: MemoryMode) -> str:
    """The job's warning when it runs out of memory and is run again lower."""
    return (
        f"Ran out of GPU memory in {failed.value} mode; retrying in {retry.value} mode "
        "(slower, less memory)."
    )


def retry_mode(
    failed: MemoryMode, size: ModelSize | None, device_type: str, free_bytes: int | None
) -> MemoryMode | None:
    """The mode a job that ran out of memory in `failed` runs in once more: the highest
    mode below it that can run and, when the free memory is known, fits it (else the
    lowest that can run); None when nothing is below."""
    below = [
        mode for mode in LADDER[failed.rank + 1 :] if applicable(mode, size, device_type) is None
    ]
    if not below:
        return None
    if free_bytes is not None and size is not None and size.total:
        for mode in below:
            if estimate(size, mode) <= free_bytes:
                return mode
        return below[-1]
    return below[0]
