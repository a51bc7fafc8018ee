"""Loading checkpoints into warm pipelines, offline.

One set of weights serves every task: the pipeline for txt2img is loaded once and the
img2img and inpaint pipelines are made from it (`share_pipeline`: diffusers' `from_pipe`
without its cast), sharing the modules instead of copying them.

`from_single_file` needs a local diffusers config folder, otherwise it asks the hub even
with `local_files_only=True`. We pass the shipped family config, or a sidecar folder
`<name>.config/` next to the checkpoint when the file has a non-standard architecture
(the tests' tiny checkpoints use that; so can an artist with an unusual model). The
tokenizers are always ours, passed explicitly.

Flux.1 and SD 3.5 (`FamilyInfo.is_transformer`) load from a diffusers folder with
`from_pretrained`, and from single files component by component
(`kd_server.component_files`): the transformer, the text encoders and the VAE each come
from their own ComfyUI split file (`ModelEntry.parts`, `ModelFormat.SPLIT`) or from the
all-in-one checkpoint under its prefix. A missing part fails with a sentence naming it.
They run in bfloat16 on GPUs that have it (T5 and Flux overflow in float16), in the
device's precision elsewhere. fp8 files are upcast to that precision unless the memory
mode keeps the denoiser in float8 (`mode.casts_fp8`); GGUF transformers stay quantised.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from kd_server.assembly import Components, assemble_pipeline, family_kwargs
from kd_server.devices import DeviceChoice
from kd_server.families import Architecture, Family, FamilyInfo
from kd_server.generation import EngineError, EngineErrorCode, Task
from kd_server.library import ModelEntry, ModelFormat
from kd_server.load_lock import one_load_at_a_time
from kd_server.speed import SpeedOptions
from kd_server.speed import apply as apply_speed
from kd_server.tasks import LOAD_AS, spec_for
from kd_server.tiny_model import EMBEDDED_WORKING_SIZE, build_embedded_pipeline
from kd_server.tokenizer import load_tokenizer

if TYPE_CHECKING:
    from kd_server.memory_modes import MemoryMode

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A checkpoint in memory and the task pipelines that share its weights."""

    name: str
    family: Family
    working_size: int
    base: Any  # the pipeline it was loaded as
    scheduler_config: dict[str, Any]  # as loaded: jobs replace the pipeline's scheduler
    adapters: dict[str, str] = field(default_factory=dict)  # LoRA name -> adapter name
    ip_adapter: str | None = None  # the IP-Adapter in the UNet (kd_server.control.pipeline)
    _variants: dict[type, Any] = field(default_factory=dict)  # pipeline class -> pipeline

    @property
    def info(self) -> FamilyInfo:
        return self.family.info

    def pipeline_for(self, task: Task) -> Any:
        """The task's pipeline for this family (its declaration in `kd_server.tasks`),
        sharing the loaded weights; made once, on first use."""
        wanted = spec_for(task).pipeline_class(self.family)
        if type(self.base) is wanted:
            return self.base
        cached = self._variants.get(wanted)
        if cached is None:
            cached = share_pipeline(wanted, self.base)
            cached.set_progress_bar_config(disable=True)
            self._variants[wanted] = cached
        return cached


def share_pipeline(wanted: Any, base: Any, **extra: Any) -> Any:
    """A pipeline of class `wanted` on `base`'s modules as they are, with `base`'s
    settings (requires_safety_checker, force_zeros_for_empty_prompt, ...) and the
    `extra` modules (a ControlNet pipeline's `controlnet`).

    What `from_pipe` does, without the cast of every module it ends with: a GGUF
    transformer refuses that cast, a float8-stored denoiser (fp8 memory mode) would
    come back in 16 bits for a moment (the whole model on the GPU: out of memory), and
    T5's float32 layers would go float16.
    """
    required, optional = wanted._get_signature_keys(wanted)
    modules = {**base.components, **extra}
    arguments = {name: modules.get(name) for name in required}
    for name in optional:
        if name in modules:
            arguments[name] = modules[name]
        elif name in base.config:
            arguments[name] = base.config[name]
    return wanted(**arguments)


def _config_dir(entry: ModelEntry, info: FamilyInfo) -> Path:
    assert entry.path is not None
    sidecar = entry.path.with_suffix(".config")
    return sidecar if sidecar.is_dir() else info.config_dir


def _tokenizers(config_dir: Path, info: FamilyInfo) -> dict[str, Any]:
    tokenizers = {"tokenizer": load_tokenizer(config_dir / "tokenizer")}
    if info.is_xl:
        tokenizers["tokenizer_2"] = load_tokenizer(config_dir / "tokenizer_2")
    return tokenizers


def _loader_class(info: FamilyInfo) -> Any:
    return spec_for(LOAD_AS).pipeline_class(info.family)


def _extra_kwargs(info: FamilyInfo) -> dict[str, Any]:
    return family_kwargs(info.family)


def _load_single_file(entry: ModelEntry, info: FamilyInfo, device: DeviceChoice) -> Any:
    config_dir = _config_dir(entry, info)
    return _loader_class(info).from_single_file(
        str(entry.path),
        config=str(config_dir),
        local_files_only=True,
        dtype=device.dtype,
        **_tokenizers(config_dir, info),
        **_extra_kwargs(info),
    )


def _load_diffusers_folder(entry: ModelEntry, info: FamilyInfo, device: DeviceChoice) -> Any:
    assert entry.path is not None
    kwargs: dict[str, Any] = {}
    if not (entry.path / "tokenizer" / "vocab.json").is_file():
        kwargs.update(_tokenizers(info.config_dir, info))
    return _loader_class(info).from_pretrained(
        str(entry.path),
        local_files_only=True,
        use_safetensors=True,  # never unpickle a .bin component
        dtype=device.dtype,
        **kwargs,
        **_extra_kwargs(info),
    )


# ---------------------------------------------------------------- Flux and SD 3.5

#: Each part as an artist would recognise it, with ComfyUI's usual file.
_PART_LABELS = {
    "clip_l": "a CLIP-L text encoder (clip_l.safetensors)",
    "clip_g": "a CLIP-G text encoder (clip_g.safetensors)",
    "t5xxl": "a T5 text encoder (t5xxl_fp16.safetensors or an fp8 one)",
    "vae": "its VAE (Flux: ae.safetensors)",
}


def model_dtype(info: FamilyInfo, device: DeviceChoice) -> torch.dtype:
    """Flux and SD 3.5 (and their T5) overflow in float16: bfloat16 on CUDA GPUs that
    have it; otherwise the device's own precision (float32 on the CPU)."""
    if info.is_transformer and device.device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return device.dtype


def _t5_tokenizer(
    config_dir: Path, subfolder: str, entry: ModelEntry, extra: Path | None = None
) -> Any:
    """The config folder's own T5 tokenizer if it has one (a sidecar for a model with
    its own vocabulary), else the one `kd_server.t5_tokenizer` finds: `extra` (the
    `t5_tokenizer` setting) first, then its usual places around the models folder the
    entry lies in (`<models>/tokenizer-t5`, ComfyUI's own copy)."""
    from kd_server.t5_tokenizer import (
        MISSING_HINT,
        find_t5_tokenizer,
        is_t5_tokenizer_folder,
        load_t5_tokenizer,
    )
    from kd_server.tokenizer import tokenizer_settings

    own = config_dir / subfolder
    if is_t5_tokenizer_folder(own):
        return load_t5_tokenizer(own)
    assert entry.path is not None
    # models/diffusion_models/x.safetensors or models/checkpoints/x: the models folder
    models = [entry.path.parent.parent, entry.path.parent]
    folder = find_t5_tokenizer([extra] if extra else [], models)
    if folder is None:
        raise EngineError(EngineErrorCode.MODEL_UNUSABLE, MISSING_HINT)
    length = tokenizer_settings(own).get("model_max_length")
    return load_t5_tokenizer(folder, length if isinstance(length, int) else None)


def _missing(entry: ModelEntry, part: str) -> EngineError:
    label = entry.family.info.label if entry.family else "this model"
    folder = "vae" if part == "vae" else "text_encoders (or clip)"
    return EngineError(
        EngineErrorCode.MODEL_UNUSABLE,
        f"'{entry.name}' cannot be loaded: {label} needs {_PART_LABELS.get(part, part)} and "
        f"none was found for it. Put the file in the models folder's {folder} folder, or "
        "use a checkpoint that includes it.",
    )


def _part_tensors(entry: ModelEntry, part: str, prefixes: tuple[str, ...]) -> dict[str, Any]:
    """A part's tensors: its own split file when the entry has one, else the
    all-in-one checkpoint's tensors under `prefixes` (none there: an EngineError)."""
    from kd_server.component_files import read_tensors

    own = getattr(entry.parts, part, None) if entry.parts is not None else None
    if own is not None:
        if not Path(own).is_file():
            raise EngineError(
                EngineErrorCode.MODEL_UNUSABLE,
                f"'{entry.name}' cannot be loaded: its {part} file {own} is gone.",
            )
        return read_tensors(Path(own), prefixes)
    assert entry.path is not None
    if entry.format is ModelFormat.SPLIT or entry.path.suffix.lower() == ".gguf":
        raise _missing(entry, part)
    tensors = read_tensors(entry.path, prefixes, prefix_required=True)
    if not tensors:
        raise _missing(entry, part)
    return tensors


def _load_transformer_parts(
    entry: ModelEntry, info: FamilyInfo, dtype: torch.dtype, t5_folder: Path | None
) -> Any:
    """Flux / SD 3.5 from a single file or ComfyUI split files, part by part."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from kd_server import component_files as files

    assert entry.path is not None
    config_dir = _config_dir(entry, info)
    architecture = info.architecture.value
    sd3 = info.architecture is Architecture.SD3
    # the tokenizers first: a missing T5 tokenizer fails before gigabytes are read
    t5_name = "tokenizer_3" if sd3 else "tokenizer_2"
    t5_tokenizer = _t5_tokenizer(config_dir, t5_name, entry, t5_folder)
    try:
        transformer = files.load_transformer(entry.path, architecture, config_dir, dtype)
        encoders: list[Any] = []
        for index, part in enumerate(info.text_encoders):
            subfolder = "text_encoder" if index == 0 else f"text_encoder_{index + 1}"
            prefix = files.TEXT_ENCODER_PREFIX.format(part=part)
            tensors = _part_tensors(entry, part, (prefix,))
            if part == "t5xxl":
                encoders.append(files.load_t5(tensors, config_dir, subfolder, dtype, part))
            else:
                encoders.append(
                    files.load_clip(
                        tensors,
                        config_dir,
                        subfolder,
                        dtype,
                        part,
                        with_projection=sd3,
                        identity_projection=sd3 and part == "clip_l",
                    )
                )
        vae_tensors = _part_tensors(entry, "vae", files.VAE_PREFIXES)
        vae = files.load_vae(vae_tensors, config_dir, dtype, "vae")
    except files.PartError as exc:
        raise EngineError(
            EngineErrorCode.MODEL_UNUSABLE, f"'{entry.name}' cannot be loaded: {exc}."
        ) from exc
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(
        str(config_dir), subfolder="scheduler", local_files_only=True
    )
    parts = Components(
        vae=vae,
        text_encoder=encoders[0],
        tokenizer=load_tokenizer(config_dir / "tokenizer"),
        scheduler=scheduler,
        transformer=transformer,
        text_encoder_2=encoders[1],
    )
    if sd3:
        parts.tokenizer_2 = load_tokenizer(config_dir / "tokenizer_2")
        parts.text_encoder_3 = encoders[2]
        parts.tokenizer_3 = t5_tokenizer
    else:
        parts.tokenizer_2 = t5_tokenizer
    assert entry.family is not None
    return assemble_pipeline(entry.family, parts)


def _load_transformer_folder(
    entry: ModelEntry, info: FamilyInfo, dtype: torch.dtype, t5_folder: Path | None
) -> Any:
    """A Flux / SD 3.5 diffusers folder; tokenizers it lacks are ours."""
    assert entry.path is not None
    kwargs: dict[str, Any] = {}
    clip_names = ["tokenizer"]
    t5_name = "tokenizer_2"
    if info.architecture is Architecture.SD3:
        clip_names.append("tokenizer_2")
        t5_name = "tokenizer_3"
    for name in clip_names:
        if not (entry.path / name / "vocab.json").is_file():
            kwargs[name] = load_tokenizer(info.config_dir / name)
    own = entry.path / t5_name
    if not ((own / "tokenizer.json").is_file() or (own / "spiece.model").is_file()):
        kwargs[t5_name] = _t5_tokenizer(info.config_dir, t5_name, entry, t5_folder)
    return _loader_class(info).from_pretrained(
        str(entry.path),
        local_files_only=True,
        use_safetensors=True,
        dtype=dtype,
        **kwargs,
    )


def denoiser(pipe: Any) -> Any:
    """The UNet or transformer of a pipeline."""
    return getattr(pipe, "transformer", None) or pipe.unet


def _is_gguf(module: Any) -> bool:
    return getattr(module, "hf_quantizer", None) is not None


def _keep_fp8(pipe: Any, dtype: torch.dtype) -> None:
    """The memory mode keeps the denoiser in float8: cast before it moves to the GPU,
    so the GPU never holds it in 16 bits (kd_server.memory_modes.apply then leaves it)."""
    module = denoiser(pipe)
    if _is_gguf(module):
        return
    module.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype)


def _transformer_speed(pipe: Any, speed: SpeedOptions | None) -> None:
    """The speed-ups that apply to a transformer: compiling it. channels_last and fused
    QKV are UNet / VAE tricks (kd_server.speed), left off."""
    if speed is not None and speed.compile:
        pipe.transformer.compile(mode=speed.compile_mode)
        log.info("Speed-ups on: compile (the transformer)")


def _native_size(pipe: Any, info: FamilyInfo) -> int:
    """The side the loaded model works best at, from its own configuration."""
    if info.architecture is Architecture.FLUX:
        # the transformer has no sample size; Flux's VAE config says 1024 (so do the
        # shipped configs), a tiny stand-in's its own
        return int(getattr(pipe.vae.config, "sample_size", 0) or info.working_size)
    return int(denoiser(pipe).config.sample_size) * pipe.vae_scale_factor


def working_size(entry: ModelEntry) -> int:
    """The side of the square a checkpoint works best at, known before loading it.

    Once loaded, the pipeline's own default (UNet / transformer sample size x VAE
    factor; Flux: the VAE's sample size, 1024) is used, so a model with a sidecar
    config of another size gets its own working size.
    """
    if entry.format is ModelFormat.EMBEDDED:
        return EMBEDDED_WORKING_SIZE
    return entry.family.info.working_size if entry.family else 512


@one_load_at_a_time
def load_model(
    entry: ModelEntry,
    device: DeviceChoice,
    speed: SpeedOptions | None = None,
    mode: MemoryMode | None = None,
    t5_tokenizer: Path | None = None,
) -> LoadedModel:
    """Load a usable library entry onto the device. Never touches the network.

    `t5_tokenizer`: the configured T5 tokenizer folder (Flux / SD 3.5), searched first.

    `mode` (kd_server.memory_modes): with an offloading mode the pipeline stays on the
    CPU (the offload hooks move parts in and out); with a float8 one the denoiser is
    cast before it moves. None: everything on the device, as loaded.
    """
    assert entry.family is not None
    info = entry.family.info
    dtype = model_dtype(info, device)
    if entry.format is ModelFormat.EMBEDDED:
        pipe = build_embedded_pipeline()
    elif info.is_transformer and entry.format is ModelFormat.DIFFUSERS:
        pipe = _load_transformer_folder(entry, info, dtype, t5_tokenizer)
    elif info.is_transformer:
        pipe = _load_transformer_parts(entry, info, dtype, t5_tokenizer)
    elif entry.format is ModelFormat.DIFFUSERS:
        pipe = _load_diffusers_folder(entry, info, device)
    else:
        pipe = _load_single_file(entry, info, device)
    if not info.is_transformer and pipe.unet.dtype != device.dtype:
        pipe.to(dtype=device.dtype)  # the embedded model is built in fp32
    if mode is not None and mode.casts_fp8:
        _keep_fp8(pipe, dtype)
    if mode is None or not mode.offloads:
        pipe.to(device.device)
    pipe.set_progress_bar_config(disable=True)
    if info.is_transformer:
        _transformer_speed(pipe, speed)
    else:
        apply_speed(pipe, speed)
    log.info("Loaded %s (%s) on %s", entry.name, info.label, device.name)
    native = _native_size(pipe, info)
    return LoadedModel(entry.name, entry.family, native, pipe, dict(pipe.scheduler.config))
