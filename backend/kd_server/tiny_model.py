"""The embedded default model: a tiny network of the SD1.5 architecture.

It is built from a fixed seed on first use, so it needs no download and is the same
on every machine with the same torch. It paints abstract colour fields, not art: it
exists so every path of the product (txt2img, img2img, inpaint, LoRA, previews,
cancel) runs anywhere, including CI, through exactly the code real checkpoints use.

The VAE keeps the real downsampling factor of 8: with fewer levels the latent is
larger and attention makes a 256x256 image ~35x slower.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from kd_server.assembly import Components, assemble_pipeline
from kd_server.families import Family
from kd_server.tokenizer import load_tokenizer

EMBEDDED_NAME = "tiny-sd15-embedded"
EMBEDDED_SEED = 20261125
# The tiny model's own working size: its cost at 256x256 matches what an artist would
# wait for a preview; real SD1.5 checkpoints work at 512.
EMBEDDED_WORKING_SIZE = 256
TEXT_HIDDEN = 32


def _unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=EMBEDDED_WORKING_SIZE // 8,  # latent side; the VAE factor is 8
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=8,
        norm_num_groups=32,
    )


def _vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 32, 32),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=32,
        sample_size=256,
        scaling_factor=0.18215,
    )


def _text_encoder() -> CLIPTextModel:
    config = CLIPTextConfig(
        hidden_size=TEXT_HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=49408,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        projection_dim=TEXT_HIDDEN,
    )
    return CLIPTextModel(config)


def build_embedded_pipeline() -> Any:
    """Build the tiny pipeline deterministically without touching the global RNG."""
    config_dir = Family.SD15.info.config_dir
    scheduler_config = json.loads((config_dir / "scheduler" / "scheduler_config.json").read_text())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(EMBEDDED_SEED)
        unet, vae, text_encoder = _unet(), _vae(), _text_encoder()
    parts = Components(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=load_tokenizer(config_dir / "tokenizer"),
        scheduler=PNDMScheduler.from_config(scheduler_config),
    )
    pipe = assemble_pipeline(Family.SD15, parts)
    return pipe
