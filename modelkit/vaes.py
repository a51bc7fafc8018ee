"""VAE files as artists have them (A1111's `models/VAE`, ComfyUI's `models/vae`), for
the tests that choose a VAE: the original (LDM) key layout or diffusers'."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from modelkit.ldm_layout import VAE_PREFIX, vae_to_ldm


def write_vae(path: Path, vae: Any, layout: str = "ldm") -> Path:
    """`vae` saved as a standalone VAE file: LDM keys without the checkpoint prefix (as
    `vae-ft-mse-840000-ema-pruned.safetensors`) or diffusers' own keys."""
    if layout == "ldm":
        tensors = {key.removeprefix(VAE_PREFIX): t for key, t in vae_to_ldm(vae).items()}
    else:
        tensors = dict(vae.state_dict())
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: t.contiguous() for key, t in tensors.items()}, str(path))
    return path


def embedded_vae(seed: int | None = None) -> Any:
    """The embedded model's VAE; with a seed, every weight nudged (another VAE of the
    same shape, which visibly changes the picture)."""
    from kd_server.tiny_model import build_embedded_pipeline

    vae = build_embedded_pipeline().vae
    if seed is not None:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param in vae.parameters():
                param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    return vae
