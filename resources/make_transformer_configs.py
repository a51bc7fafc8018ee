"""Write the shipped configs of the Flux and SD 3.5 families under resources/model-configs/.

Why this exists: Flux and SD 3.5 files (all-in-one checkpoints, ComfyUI split files,
GGUF transformers) carry only weights, and diffusers would fetch the pipeline configs
from the hub (gated repositories, at that). We ship them instead, written from the
published architectures:

- Flux.1 dev / schnell / Fill: FluxTransformer2DModel with 19 double-stream and 38
  single-stream blocks of 24 heads x 128, T5 width 4096 and pooled CLIP-L 768; dev and
  Fill embed the distilled guidance, schnell does not; Fill's img_in reads 384 features
  (64 latent + 64 masked-image + 256 mask) and writes 64. VAE: 16 latent channels,
  scaling 0.3611, shift 0.1159, no quant convs. Scheduler: flow matching, dev/Fill with
  resolution-dependent ("dynamic") shift, schnell a fixed shift of 1.
- SD 3.5 large: SD3Transformer2DModel with 38 blocks of 38 heads x 64 (2432 wide),
  positions up to 192 x 192 patches, RMS-normalised q/k. SD 3.5 medium: 24 blocks of 24
  heads x 64, positions up to 384 x 384, MMDiT-X dual attention in blocks 0..12. VAE:
  16 latent channels, scaling 1.5305, shift 0.0609. Scheduler: flow matching, shift 3.
- Text encoders: CLIP ViT-L/14 (Flux: CLIPTextModel; SD3: with projection), OpenCLIP
  ViT-bigG/14 (SD3 only), T5 v1.1 XXL encoder (4096 wide, 24 layers of 64 heads x 64,
  gated-GELU feed-forward 10240, vocabulary 32128).
- Tokenizer folders hold settings only: the CLIP vocabulary is `resources/tokenizer/`
  (kd_server.tokenizer) and the T5 one is found by kd_server.t5_tokenizer.

tests/test_split_layout.py builds every transformer from these files on the meta device
and checks the parameter counts of the released models, so a wrong number here fails.

Usage (the output is committed; rerun only to rebuild it):

    python resources/make_transformer_configs.py [-o resources/model-configs]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DIFFUSERS_VERSION = "0.42.1"

CLIP_TEXT = {
    "model_type": "clip_text_model",
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
    "dropout": 0.0,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "vocab_size": 49408,
    "torch_dtype": "float16",
}
CLIP_L = {
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "projection_dim": 768,
}
CLIP_G = {"hidden_act": "gelu", "hidden_size": 1280, "intermediate_size": 5120,
          "num_attention_heads": 20, "num_hidden_layers": 32, "projection_dim": 1280}  # fmt: skip

T5_XXL_ENCODER = {
    "architectures": ["T5EncoderModel"],
    "model_type": "t5",
    "d_model": 4096,
    "d_ff": 10240,
    "d_kv": 64,
    "num_heads": 64,
    "num_layers": 24,
    "num_decoder_layers": 24,
    "vocab_size": 32128,
    "feed_forward_proj": "gated-gelu",
    "dense_act_fn": "gelu_new",
    "is_gated_act": True,
    "layer_norm_epsilon": 1e-06,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "dropout_rate": 0.1,
    "initializer_factor": 1.0,
    "is_encoder_decoder": True,
    "tie_word_embeddings": False,
    "decoder_start_token_id": 0,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "torch_dtype": "bfloat16",
}

CLIP_TOKENS = {
    "bos_token": "<|startoftext|>",
    "eos_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>",
}


def clip_tokenizer(pad: str) -> dict[str, dict[str, Any]]:
    tokens = {**CLIP_TOKENS, "pad_token": pad}
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
              "errors": "replace", "add_prefix_space": False, **tokens}  # fmt: skip
    return {"tokenizer_config.json": config, "special_tokens_map.json": tokens}


def t5_tokenizer(max_length: int) -> dict[str, dict[str, Any]]:
    tokens = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    config = {"tokenizer_class": "T5Tokenizer", "model_max_length": max_length,
              "extra_ids": 100, "legacy": True, **tokens}  # fmt: skip
    return {"tokenizer_config.json": config, "special_tokens_map.json": tokens}


def vae(scaling: float, shift: float) -> dict[str, Any]:
    return {
        "_class_name": "AutoencoderKL",
        "_diffusers_version": DIFFUSERS_VERSION,
        "act_fn": "silu",
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 16,
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "sample_size": 1024,
        "scaling_factor": scaling,
        "shift_factor": shift,
        "use_quant_conv": False,
        "use_post_quant_conv": False,
        "mid_block_add_attention": True,
        "force_upcast": True,
    }


def component(library: str, cls: str | None) -> list[str | None]:
    return [library, cls] if cls else [None, None]


def flux(kind: str) -> dict[str, Any]:
    fill = kind == "fill"
    transformer = {
        "_class_name": "FluxTransformer2DModel",
        "_diffusers_version": DIFFUSERS_VERSION,
        "patch_size": 1,
        "in_channels": 384 if fill else 64,
        "out_channels": 64 if fill else None,
        "num_layers": 19,
        "num_single_layers": 38,
        "attention_head_dim": 128,
        "num_attention_heads": 24,
        "joint_attention_dim": 4096,
        "pooled_projection_dim": 768,
        "guidance_embeds": kind != "schnell",
        "axes_dims_rope": [16, 56, 56],
    }
    scheduler: dict[str, Any] = {
        "_class_name": "FlowMatchEulerDiscreteScheduler",
        "_diffusers_version": DIFFUSERS_VERSION,
        "num_train_timesteps": 1000,
        "base_image_seq_len": 256,
        "max_image_seq_len": 4096,
        "base_shift": 0.5,
        "max_shift": 1.15,
    }
    if kind == "schnell":
        scheduler.update(shift=1.0, use_dynamic_shifting=False)
    else:
        scheduler.update(shift=3.0, use_dynamic_shifting=True)
    index = {
        "_class_name": "FluxFillPipeline" if fill else "FluxPipeline",
        "_diffusers_version": DIFFUSERS_VERSION,
        "scheduler": component("diffusers", "FlowMatchEulerDiscreteScheduler"),
        "text_encoder": component("transformers", "CLIPTextModel"),
        "text_encoder_2": component("transformers", "T5EncoderModel"),
        "tokenizer": component("transformers", "CLIPTokenizer"),
        "tokenizer_2": component("transformers", "T5TokenizerFast"),
        "transformer": component("diffusers", "FluxTransformer2DModel"),
        "vae": component("diffusers", "AutoencoderKL"),
    }
    if not fill:
        index.update(feature_extractor=[None, None], image_encoder=[None, None])
    return {
        "model_index.json": index,
        "transformer/config.json": transformer,
        "vae/config.json": vae(0.3611, 0.1159),
        "scheduler/scheduler_config.json": scheduler,
        "text_encoder/config.json": {"architectures": ["CLIPTextModel"], **CLIP_TEXT, **CLIP_L},
        "text_encoder_2/config.json": T5_XXL_ENCODER,
        **{f"tokenizer/{k}": v for k, v in clip_tokenizer("<|endoftext|>").items()},
        **{
            f"tokenizer_2/{k}": v
            for k, v in t5_tokenizer(256 if kind == "schnell" else 512).items()
        },
    }


def sd35(size: str) -> dict[str, Any]:
    medium = size == "medium"
    heads = 24 if medium else 38
    transformer = {
        "_class_name": "SD3Transformer2DModel",
        "_diffusers_version": DIFFUSERS_VERSION,
        "sample_size": 128,
        "patch_size": 2,
        "in_channels": 16,
        "out_channels": 16,
        "num_layers": heads,
        "attention_head_dim": 64,
        "num_attention_heads": heads,
        "joint_attention_dim": 4096,
        "caption_projection_dim": heads * 64,
        "pooled_projection_dim": 2048,
        "pos_embed_max_size": 384 if medium else 192,
        "dual_attention_layers": list(range(13)) if medium else [],
        "qk_norm": "rms_norm",
    }
    with_projection = {"architectures": ["CLIPTextModelWithProjection"], **CLIP_TEXT}
    return {
        "model_index.json": {
            "_class_name": "StableDiffusion3Pipeline",
            "_diffusers_version": DIFFUSERS_VERSION,
            "feature_extractor": [None, None],
            "image_encoder": [None, None],
            "scheduler": component("diffusers", "FlowMatchEulerDiscreteScheduler"),
            "text_encoder": component("transformers", "CLIPTextModelWithProjection"),
            "text_encoder_2": component("transformers", "CLIPTextModelWithProjection"),
            "text_encoder_3": component("transformers", "T5EncoderModel"),
            "tokenizer": component("transformers", "CLIPTokenizer"),
            "tokenizer_2": component("transformers", "CLIPTokenizer"),
            "tokenizer_3": component("transformers", "T5TokenizerFast"),
            "transformer": component("diffusers", "SD3Transformer2DModel"),
            "vae": component("diffusers", "AutoencoderKL"),
        },
        "transformer/config.json": transformer,
        "vae/config.json": vae(1.5305, 0.0609),
        "scheduler/scheduler_config.json": {
            "_class_name": "FlowMatchEulerDiscreteScheduler",
            "_diffusers_version": DIFFUSERS_VERSION,
            "num_train_timesteps": 1000,
            "shift": 3.0,
        },
        "text_encoder/config.json": {**with_projection, **CLIP_L},
        "text_encoder_2/config.json": {**with_projection, **CLIP_G},
        "text_encoder_3/config.json": T5_XXL_ENCODER,
        **{f"tokenizer/{k}": v for k, v in clip_tokenizer("<|endoftext|>").items()},
        **{f"tokenizer_2/{k}": v for k, v in clip_tokenizer("!").items()},
        **{f"tokenizer_3/{k}": v for k, v in t5_tokenizer(256).items()},
    }


FOLDERS = {
    "flux-dev": flux("dev"),
    "flux-schnell": flux("schnell"),
    "flux-fill": flux("fill"),
    "sd35-medium": sd35("medium"),
    "sd35-large": sd35("large"),
}


def write(out: Path) -> list[Path]:
    written = []
    for folder, files in FOLDERS.items():
        for relative, content in files.items():
            path = out / folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
            written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=HERE / "model-configs")
    args = parser.parse_args()
    for path in write(args.out):
        print(path)


if __name__ == "__main__":
    main()
