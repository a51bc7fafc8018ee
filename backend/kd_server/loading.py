"""Loading checkpoints into warm pipelines, offline.

One set of weights serves every task: the pipeline for txt2img is loaded once and the
img2img and inpaint pipelines are made from it with `from_pipe`, which shares the
modules instead of copying them.

`from_single_file` needs a local diffusers config folder, otherwise it asks the hub even
with `local_files_only=True`. We pass the shipped family config, or a sidecar folder
`<name>.config/` next to the checkpoint when the file has a non-standard architecture
(the tests' tiny checkpoints use that; so can an artist with an unusual model). The
tokenizers are always ours, passed explicitly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kd_server.assembly import family_kwargs
from kd_server.devices import DeviceChoice
from kd_server.families import Family, FamilyInfo
from kd_server.generation import Task
from kd_server.library import ModelEntry, ModelFormat
from kd_server.load_lock import one_load_at_a_time
from kd_server.speed import SpeedOptions
from kd_server.speed import apply as apply_speed
from kd_server.tasks import LOAD_AS, spec_for
from kd_server.tiny_model import EMBEDDED_WORKING_SIZE, build_embedded_pipeline
from kd_server.tokenizer import load_tokenizer

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
            # from_pipe casts to float32 unless told the dtype: the shared weights stay as loaded
            cached = wanted.from_pipe(self.base, dtype=self.base.dtype)
            cached.set_progress_bar_config(disable=True)
            self._variants[wanted] = cached
        return cached


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


def working_size(entry: ModelEntry) -> int:
    """The side of the square a checkpoint works best at, known before loading it.

    Once loaded, the pipeline's own default (UNet sample size x VAE factor) is used, so a
    model with a sidecar config of another size gets its own working size.
    """
    if entry.format is ModelFormat.EMBEDDED:
        return EMBEDDED_WORKING_SIZE
    return entry.family.info.working_size if entry.family else 512


@one_load_at_a_time
def load_model(
    entry: ModelEntry, device: DeviceChoice, speed: SpeedOptions | None = None
) -> LoadedModel:
    """Load a usable library entry onto the device. Never touches the network."""
    assert entry.family is not None
    info = entry.family.info
    if entry.format is ModelFormat.EMBEDDED:
        pipe = build_embedded_pipeline()
    elif entry.format is ModelFormat.DIFFUSERS:
        pipe = _load_diffusers_folder(entry, info, device)
    else:
        pipe = _load_single_file(entry, info, device)
    pipe.to(device.device)
    if pipe.unet.dtype != device.dtype:  # the embedded model is built in fp32
        pipe.to(dtype=device.dtype)
    pipe.set_progress_bar_config(disable=True)
    apply_speed(pipe, speed)
    log.info("Loaded %s (%s) on %s", entry.name, info.label, device.name)
    native = pipe.unet.config.sample_size * pipe.vae_scale_factor
    return LoadedModel(entry.name, entry.family, native, pipe, dict(pipe.scheduler.config))
