"""Optional speed-ups applied to a pipeline once, when it is loaded.

Why they are options and all off by default: each one's benefit depends on the GPU,
the model and the torch version, and each has a cost. `bench/gpu.py` measures them
against our default configuration and plain diffusers on the same card (see
docs/performance.md); turn one on where those numbers say it pays.

- channels_last: NHWC memory layout for the UNet and VAE convolutions (CUDA tensor
  cores prefer it on some cards; on a CPU it is usually slower).
- compile: `torch.compile` of the UNet in place (the module keeps its class, so the
  img2img/inpaint pipelines made with `from_pipe` share the compiled UNet). The first
  job after loading pays the compilation (tens of seconds to minutes), and every new
  image size or LoRA change can recompile.
- fuse_qkv: one matmul for the attention's query, key and value projections. LoRAs
  target the separate projections, so the engine unfuses before it loads a LoRA
  (`unfuse_for_lora`); a fused model with a LoRA would silently ignore the LoRA.

Attention itself always runs through PyTorch's SDPA (diffusers' default on torch 2),
which picks flash or memory-efficient kernels on CUDA.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpeedOptions:
    channels_last: bool = False
    compile: bool = False
    compile_mode: str = "default"  # torch.compile mode: "default", "reduce-overhead", ...
    fuse_qkv: bool = False

    @property
    def any(self) -> bool:
        return self.channels_last or self.compile or self.fuse_qkv

    @classmethod
    def from_names(cls, names: list[str]) -> SpeedOptions:
        """From the `speedups` setting: "channels_last", "fuse_qkv", "compile"."""
        known = {"channels_last", "fuse_qkv", "compile"}
        wanted = {name.strip().lower().replace("-", "_") for name in names}
        if unknown := wanted - known:
            raise ValueError(
                f"Unknown speed-up {', '.join(sorted(unknown))}: use {', '.join(sorted(known))}."
            )
        return cls(
            channels_last="channels_last" in wanted,
            compile="compile" in wanted,
            fuse_qkv="fuse_qkv" in wanted,
        )

    def describe(self) -> str:
        parts = []
        if self.channels_last:
            parts.append("channels_last")
        if self.fuse_qkv:
            parts.append("fused QKV")
        if self.compile:
            parts.append(f"torch.compile({self.compile_mode})")
        return " + ".join(parts) or "none"


def apply(pipe: Any, options: SpeedOptions | None) -> None:
    """Apply the chosen speed-ups to a freshly loaded pipeline (in place)."""
    if options is None or not options.any:
        return
    if options.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if options.fuse_qkv:
        pipe.fuse_qkv_projections()
    if options.compile:
        pipe.unet.compile(mode=options.compile_mode)
    log.info("Speed-ups on: %s", options.describe())


def unfuse_for_lora(pipe: Any) -> None:
    """Undo fused QKV projections so a LoRA on the separate projections takes effect."""
    if getattr(pipe, "fusing_unet", False) or getattr(pipe, "fusing_vae", False):
        log.info("Unfusing QKV projections to load a LoRA")
        pipe.unfuse_qkv_projections(
            unet=getattr(pipe, "fusing_unet", False), vae=getattr(pipe, "fusing_vae", False)
        )
