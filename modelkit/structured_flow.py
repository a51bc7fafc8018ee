"""Tiny Flux.1 dev and SD 3.5 medium that keep a picture's structure, for refine tests.

Why: the tiny Flux / SD 3.5 pipelines of `modelkit.flux_sd3` have random 16-channel
VAEs, so an img2img on them loses the picture and a test cannot tell a refine that
keeps the composition from one that ignores its input. This is `modelkit.structured`
(the SD 1.5 stand-in) for the flow-match families, on the tiny pipelines' own parts:

- The VAE has the tiny 16-channel, factor-8 shapes without quant convs, one norm group
  and hand-set weights (`modelkit.structured` explains the construction): the encoder
  gives the 8x8 mean of the picture's RGB, `LATENT_GAIN` times larger, in latent
  channels 0-2 (3-15 zero, no sampling noise); the decoder reads channels 0-2 back,
  divided by the gain, nearest-neighbour. The pipelines' latent normalisation
  ((z - shift) * scaling on the way in, z / scaling + shift on the way out: Flux's
  0.3611 / 0.1159, SD 3.5's 1.5305 / 0.0609) cancels exactly, so encode -> decode
  gives back the box-filtered picture.
- The transformer's output projection is zeroed: the flow-match velocity is 0, so every
  Euler step keeps the latent. img2img at strength s starts from
  (1 - sigma) * latent + sigma * noise (sigma: the schedule's first sigma for s) and
  returns it decoded: the picture's low-pass at (1 - sigma) of its contrast around
  sigma * shift / gain, plus sigma * noise / (scaling * gain), a few levels per 8x8
  block. The composition stays; a refine that ignored the picture would give noise.

Written as users' files are (`modelkit.flux_sd3_files`): an all-in-one checkpoint with
its `<stem>.config/` sidecar (one norm group is not a shipped VAE), or ComfyUI split
files (transformer + sidecar, clip_l / t5xxl, the VAE), and loaded by the product.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from modelkit import flux_sd3_files as files
from modelkit.flux_sd3 import (
    FLUX_VAE_SCALING,
    FLUX_VAE_SHIFT,
    LATENT_CHANNELS,
    SD3_VAE_SCALING,
    SD3_VAE_SHIFT,
    TINY_WORKING_SIZE,
    build_tiny_flux,
    build_tiny_sd35,
)
from modelkit.structured import box_vae


def structured_vae(scaling: float, shift: float) -> Any:
    """The tiny Flux / SD 3.5 VAE's shapes (16 channels, factor 8, no quant convs) with
    `modelkit.structured`'s hand-set box weights."""
    return box_vae(LATENT_CHANNELS, scaling, shift, False, TINY_WORKING_SIZE)


def _zero_velocity(pipe: Any) -> Any:
    with torch.no_grad():
        pipe.transformer.proj_out.weight.zero_()
        pipe.transformer.proj_out.bias.zero_()
    return pipe


def build_structured_flux(seed: int = 0) -> Any:
    """The tiny Flux.1 dev pipeline with the structure-keeping VAE and zero velocity."""
    pipe = _zero_velocity(build_tiny_flux("dev", seed))
    pipe.register_modules(vae=structured_vae(FLUX_VAE_SCALING, FLUX_VAE_SHIFT))
    return pipe


def build_structured_sd35(seed: int = 0) -> Any:
    """The tiny SD 3.5 medium pipeline with the structure-keeping VAE and zero velocity."""
    pipe = _zero_velocity(build_tiny_sd35("medium", seed))
    pipe.register_modules(vae=structured_vae(SD3_VAE_SCALING, SD3_VAE_SHIFT))
    return pipe


def write_all_in_one(pipe: Any, path: Path) -> Path:
    """`pipe` as one checkpoint (ComfyUI's layout, float32: the hand-set weights exactly)
    and its sidecar `<stem>.config/`, as people keep an all-in-one file."""
    files.write_all_in_one(pipe, path, torch.float32)
    files.write_config_folder(pipe, path.with_suffix(".config"))
    return path


def write_split_flux(pipe: Any, root: Path, name: str) -> dict[str, Path]:
    """`pipe` (Flux) as a ComfyUI models folder: diffusion_models/<name>.safetensors with
    its sidecar, text_encoders/clip_l and t5xxl, vae/<name>-ae.safetensors (fp32)."""
    f32 = torch.float32
    transformer = files.write_transformer(
        pipe, root / "diffusion_models" / f"{name}.safetensors", f32
    )
    files.write_config_folder(pipe, transformer.with_suffix(".config"))
    encoders = root / "text_encoders"
    return {
        "transformer": transformer,
        "clip_l": files.write_text_encoder(pipe, "clip_l", encoders / "clip_l.safetensors", f32),
        "t5xxl": files.write_text_encoder(pipe, "t5xxl", encoders / "t5xxl_tiny.safetensors", f32),
        "vae": files.write_vae(pipe, root / "vae" / f"{name}-ae.safetensors"),
    }
