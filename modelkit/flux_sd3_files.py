"""Flux.1 and SD 3.5 pipelines written the ways people share them.

- a diffusers folder (`save_pretrained`, safetensors, tokenizers included);
- ComfyUI split files: the transformer alone in the original key layout (BFL's for
  Flux: ``double_blocks.N.img_attn.qkv``...; SAI's for SD3: ``joint_blocks.N.x_block``...),
  the text encoders in the Hugging Face layout as ComfyUI saves them (clip_l, clip_g,
  t5xxl), the VAE in the LDM layout;
- an all-in-one checkpoint (ComfyUI's layout: ``model.diffusion_model.*``,
  ``text_encoders.clip_l.transformer.*``, ``text_encoders.t5xxl.transformer.*``, and the
  VAE under ``vae.`` for Flux, ``first_stage_model.`` for SD3);
- fp8 (float8_e4m3fn) transformers and T5 encoders, and GGUF Q8_0 transformers
  (the `gguf` package's writer, tensors named as in the BFL / SAI layout like city96's
  files).

diffusers only converts original -> diffusers; the inverse lives here, checked by round
trips through diffusers' own loaders (tests/test_flux_sd3_files.py). The tiny
architectures need a sidecar config folder (`write_config_folder`) beside single files:
the shipped configs describe the full-size models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from modelkit.ldm_layout import clip_tokenizer_settings, vae_to_ldm, write_json

Tensors = dict[str, torch.Tensor]

TRANSFORMER_PREFIX = "model.diffusion_model."
CLIP_L_PREFIX = "text_encoders.clip_l.transformer."
CLIP_G_PREFIX = "text_encoders.clip_g.transformer."
T5_PREFIX = "text_encoders.t5xxl.transformer."
FLUX_VAE_PREFIX = "vae."
SD3_VAE_PREFIX = "first_stage_model."
FP8 = torch.float8_e4m3fn


def is_flux(pipe: Any) -> bool:
    return type(pipe.transformer).__name__ == "FluxTransformer2DModel"


# ------------------------------------------------------------- Flux: diffusers -> BFL


def _swap_halves(tensor: torch.Tensor) -> torch.Tensor:
    """diffusers' AdaLayerNormContinuous splits (scale, shift); the originals (shift, scale)."""
    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def _linear(out: Tensors, state: Tensors, ours: str, theirs: str) -> None:
    for kind in ("weight", "bias"):
        if f"{ours}.{kind}" in state:
            out[f"{theirs}.{kind}"] = state[f"{ours}.{kind}"]


def _stacked(out: Tensors, state: Tensors, ours: list[str], theirs: str) -> None:
    for kind in ("weight", "bias"):
        out[f"{theirs}.{kind}"] = torch.cat([state[f"{name}.{kind}"] for name in ours], dim=0)


_FLUX_TOP = {
    "time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
    "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
    "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
    "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
    "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
    "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
    "context_embedder": "txt_in",
    "x_embedder": "img_in",
    "proj_out": "final_layer.linear",
}
_FLUX_DOUBLE = {
    "norm1.linear": "img_mod.lin",
    "norm1_context.linear": "txt_mod.lin",
    "ff.net.0.proj": "img_mlp.0",
    "ff.net.2": "img_mlp.2",
    "ff_context.net.0.proj": "txt_mlp.0",
    "ff_context.net.2": "txt_mlp.2",
    "attn.to_out.0": "img_attn.proj",
    "attn.to_add_out": "txt_attn.proj",
}
_FLUX_DOUBLE_NORMS = {
    "attn.norm_q": "img_attn.norm.query_norm",
    "attn.norm_k": "img_attn.norm.key_norm",
    "attn.norm_added_q": "txt_attn.norm.query_norm",
    "attn.norm_added_k": "txt_attn.norm.key_norm",
}


def flux_to_bfl(transformer: Any) -> Tensors:
    """A FluxTransformer2DModel's weights in Black Forest Labs' layout (no prefix)."""
    config = transformer.config
    return flux_state_to_bfl(transformer.state_dict(), config.num_layers, config.num_single_layers)


def flux_state_to_bfl(state: Tensors, num_layers: int, num_single_layers: int) -> Tensors:
    """`flux_to_bfl` on a diffusers-keyed state dict (any tensors: the tests feed it
    full-width stand-ins that take no memory)."""
    out: Tensors = {}
    for ours, theirs in _FLUX_TOP.items():
        _linear(out, state, ours, theirs)
    for kind in ("weight", "bias"):
        out[f"final_layer.adaLN_modulation.1.{kind}"] = _swap_halves(
            state[f"norm_out.linear.{kind}"]
        )
    for i in range(num_layers):
        ours, theirs = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        for a, b in _FLUX_DOUBLE.items():
            _linear(out, state, ours + a, theirs + b)
        for a, b in _FLUX_DOUBLE_NORMS.items():
            out[f"{theirs}{b}.scale"] = state[f"{ours}{a}.weight"]
        _stacked(out, state, [f"{ours}attn.to_{p}" for p in "qkv"], theirs + "img_attn.qkv")
        _stacked(out, state, [f"{ours}attn.add_{p}_proj" for p in "qkv"], theirs + "txt_attn.qkv")
    for i in range(num_single_layers):
        ours, theirs = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        _linear(out, state, ours + "norm.linear", theirs + "modulation.lin")
        _linear(out, state, ours + "proj_out", theirs + "linear2")
        out[f"{theirs}norm.query_norm.scale"] = state[f"{ours}attn.norm_q.weight"]
        out[f"{theirs}norm.key_norm.scale"] = state[f"{ours}attn.norm_k.weight"]
        parts = [f"{ours}attn.to_{p}" for p in "qkv"] + [f"{ours}proj_mlp"]
        _stacked(out, state, parts, theirs + "linear1")
    return out


# -------------------------------------------------------------- SD3: diffusers -> SAI

_SD3_TOP = {
    "pos_embed.proj": "x_embedder.proj",
    "time_text_embed.timestep_embedder.linear_1": "t_embedder.mlp.0",
    "time_text_embed.timestep_embedder.linear_2": "t_embedder.mlp.2",
    "time_text_embed.text_embedder.linear_1": "y_embedder.mlp.0",
    "time_text_embed.text_embedder.linear_2": "y_embedder.mlp.2",
    "context_embedder": "context_embedder",
    "proj_out": "final_layer.linear",
}
_SD3_BLOCK = {
    "attn.to_out.0": "x_block.attn.proj",
    "attn.to_add_out": "context_block.attn.proj",
    "attn2.to_out.0": "x_block.attn2.proj",
    "norm1.linear": "x_block.adaLN_modulation.1",
    "ff.net.0.proj": "x_block.mlp.fc1",
    "ff.net.2": "x_block.mlp.fc2",
    "ff_context.net.0.proj": "context_block.mlp.fc1",
    "ff_context.net.2": "context_block.mlp.fc2",
}
_SD3_NORMS = {
    "attn.norm_q": "x_block.attn.ln_q",
    "attn.norm_k": "x_block.attn.ln_k",
    "attn.norm_added_q": "context_block.attn.ln_q",
    "attn.norm_added_k": "context_block.attn.ln_k",
    "attn2.norm_q": "x_block.attn2.ln_q",
    "attn2.norm_k": "x_block.attn2.ln_k",
}


def sd3_to_sai(transformer: Any) -> Tensors:
    """An SD3Transformer2DModel's weights in Stability AI's MMDiT layout (no prefix)."""
    state = transformer.state_dict()
    config = transformer.config
    out: Tensors = {"pos_embed": state["pos_embed.pos_embed"]}
    for ours, theirs in _SD3_TOP.items():
        _linear(out, state, ours, theirs)
    for kind in ("weight", "bias"):
        out[f"final_layer.adaLN_modulation.1.{kind}"] = _swap_halves(
            state[f"norm_out.linear.{kind}"]
        )
    last = config.num_layers - 1
    for i in range(config.num_layers):
        ours, theirs = f"transformer_blocks.{i}.", f"joint_blocks.{i}."
        for a, b in _SD3_BLOCK.items():
            _linear(out, state, ours + a, theirs + b)
        for a, b in _SD3_NORMS.items():
            if f"{ours}{a}.weight" in state:
                out[f"{theirs}{b}.weight"] = state[f"{ours}{a}.weight"]
        _stacked(out, state, [f"{ours}attn.to_{p}" for p in "qkv"], theirs + "x_block.attn.qkv")
        _stacked(
            out,
            state,
            [f"{ours}attn.add_{p}_proj" for p in "qkv"],
            theirs + "context_block.attn.qkv",
        )
        if f"{ours}attn2.to_q.weight" in state:
            _stacked(
                out, state, [f"{ours}attn2.to_{p}" for p in "qkv"], theirs + "x_block.attn2.qkv"
            )
        context_mod = f"{theirs}context_block.adaLN_modulation.1"
        for kind in ("weight", "bias"):
            tensor = state[f"{ours}norm1_context.linear.{kind}"]
            # the last block's context side only modulates (pre-only), in (shift, scale) order
            out[f"{context_mod}.{kind}"] = _swap_halves(tensor) if i == last else tensor
    return out


def transformer_to_original(transformer: Any) -> Tensors:
    """The transformer in its original layout (BFL for Flux, SAI for SD3), no prefix."""
    if type(transformer).__name__ == "FluxTransformer2DModel":
        return flux_to_bfl(transformer)
    return sd3_to_sai(transformer)


# ------------------------------------------------------- text encoders, VAE (ComfyUI)


def clip_to_hf(model: Any, with_projection: bool | None = None) -> Tensors:
    """A CLIP text model keyed ``text_model.*`` (+ ``text_projection.weight``), as in
    ComfyUI's clip_l / clip_g files, whatever transformers' own nesting."""
    out: Tensors = {}
    for key, tensor in model.state_dict().items():
        if key.endswith("position_ids"):
            continue
        if key.startswith("text_projection."):
            if with_projection is not False:
                out[key] = tensor
            continue
        out["text_model." + key.removeprefix("text_model.")] = tensor
    return out


def t5_to_hf(model: Any) -> Tensors:
    """T5 encoder weights as t5xxl files hold them: ``shared.weight``, ``encoder.*``
    (the embedding tied into the encoder is stored once, as ``shared``)."""
    return {
        key: tensor
        for key, tensor in model.state_dict().items()
        if key != "encoder.embed_tokens.weight"
    }


def vae_to_original(vae: Any) -> Tensors:
    """The VAE in the LDM layout without prefix, as ae.safetensors / sd3 VAE files."""
    return {key.removeprefix("first_stage_model."): t for key, t in vae_to_ldm(vae).items()}


def text_encoder_parts(pipe: Any) -> dict[str, Tensors]:
    """{"clip_l": ..., ["clip_g": ...], "t5xxl": ...} in ComfyUI's file layout."""
    if is_flux(pipe):
        return {"clip_l": clip_to_hf(pipe.text_encoder), "t5xxl": t5_to_hf(pipe.text_encoder_2)}
    return {
        "clip_l": clip_to_hf(pipe.text_encoder),
        "clip_g": clip_to_hf(pipe.text_encoder_2),
        "t5xxl": t5_to_hf(pipe.text_encoder_3),
    }


# ---------------------------------------------------------------------------- writing


def _to_file_dtype(tensors: Tensors, dtype: torch.dtype, fp8: bool = False) -> Tensors:
    """Cast for writing. fp8: matrices (2D and up) in float8_e4m3fn, the rest in `dtype`,
    as fp8 Flux / T5 files store them."""
    out: Tensors = {}
    for key, tensor in tensors.items():
        target = FP8 if fp8 and tensor.ndim >= 2 else dtype
        out[key] = tensor.detach().to(device="cpu", dtype=target).contiguous().clone()
    return out


#: float8_e4m3fn's largest value: scaled fp8 files divide each matrix to reach it.
FP8_MAX = 448.0


def _scaled_fp8(tensors: Tensors, dtype: torch.dtype) -> Tensors:
    """ComfyUI's "scaled" fp8: each matrix divided by its own ``scale_weight`` (so its
    largest value is fp8's largest) and stored in float8_e4m3fn; a ``scaled_fp8`` tensor
    marks the file. The rest in `dtype`."""
    out: Tensors = {"scaled_fp8": torch.zeros(0, dtype=FP8)}
    for key, tensor in tensors.items():
        tensor = tensor.detach().to("cpu")
        if tensor.ndim >= 2 and key.endswith(".weight"):
            scale = (tensor.float().abs().max() / FP8_MAX).clamp(min=1e-12)
            out[key] = (tensor.float() / scale).to(FP8).contiguous()
            out[key[: -len("weight")] + "scale_weight"] = scale.reshape(()).clone()
        else:
            out[key] = tensor.to(dtype).contiguous().clone()
    return out


def _save(tensors: Tensors, path: Path, metadata: dict[str, str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "pt", **(metadata or {})})
    return path


def _stored(tensors: Tensors, dtype: torch.dtype, fp8: bool, scaled: bool) -> Tensors:
    return _scaled_fp8(tensors, dtype) if scaled else _to_file_dtype(tensors, dtype, fp8)


def write_transformer(
    pipe: Any,
    path: str | Path,
    dtype: torch.dtype = torch.bfloat16,
    fp8: bool = False,
    scaled: bool = False,
) -> Path:
    """The transformer alone, original layout, as in ComfyUI's models/diffusion_models.
    fp8: matrices in float8_e4m3fn; scaled: ComfyUI's scaled fp8 instead."""
    tensors = _stored(transformer_to_original(pipe.transformer), dtype, fp8, scaled)
    return _save(tensors, Path(path))


def write_text_encoder(
    pipe: Any,
    part: str,
    path: str | Path,
    dtype: torch.dtype = torch.float16,
    fp8: bool = False,
    scaled: bool = False,
) -> Path:
    """One text encoder ("clip_l", "clip_g", "t5xxl") as ComfyUI's models/text_encoders
    (t5xxl_fp8_e4m3fn: `fp8`; t5xxl_fp8_e4m3fn_scaled: `scaled`)."""
    tensors = _stored(text_encoder_parts(pipe)[part], dtype, fp8, scaled)
    return _save(tensors, Path(path))


def write_vae(pipe: Any, path: str | Path, dtype: torch.dtype = torch.float32) -> Path:
    """The VAE in the LDM layout, as ae.safetensors (Flux) / ComfyUI's models/vae."""
    return _save(_to_file_dtype(vae_to_original(pipe.vae), dtype), Path(path))


def all_in_one_state_dict(pipe: Any) -> Tensors:
    """The whole pipeline in ComfyUI's checkpoint layout."""
    tensors: Tensors = {
        TRANSFORMER_PREFIX + key: t for key, t in transformer_to_original(pipe.transformer).items()
    }
    vae_prefix = FLUX_VAE_PREFIX if is_flux(pipe) else SD3_VAE_PREFIX
    tensors.update({vae_prefix + key: t for key, t in vae_to_original(pipe.vae).items()})
    prefixes = {"clip_l": CLIP_L_PREFIX, "clip_g": CLIP_G_PREFIX, "t5xxl": T5_PREFIX}
    for part, part_tensors in text_encoder_parts(pipe).items():
        tensors.update({prefixes[part] + key: t for key, t in part_tensors.items()})
    return tensors


def write_all_in_one(
    pipe: Any, path: str | Path, dtype: torch.dtype = torch.float16, fp8: bool = False
) -> Path:
    """One checkpoint file with everything (ComfyUI's CheckpointSave layout). fp8: the
    transformer's and T5's matrices in float8_e4m3fn, like the "flux1-dev-fp8" files."""
    tensors = all_in_one_state_dict(pipe)
    out: Tensors = {}
    for key, tensor in tensors.items():
        quantised = fp8 and key.startswith((TRANSFORMER_PREFIX, T5_PREFIX)) and tensor.ndim >= 2
        target = FP8 if quantised else dtype
        out[key] = tensor.detach().to(device="cpu", dtype=target).contiguous().clone()
    return _save(out, Path(path))


def write_gguf_transformer(pipe: Any, path: str | Path) -> Path:
    """The transformer as GGUF: matrices whose rows are whole 32-value blocks in Q8_0,
    the rest in F32 (as city96's Flux / SD3.5 GGUF files; diffusers reads them through
    GGUFQuantizationConfig). Tensor names: the original layout, no prefix."""
    import gguf
    import numpy as np

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(target), arch="flux" if is_flux(pipe) else "sd3")
    q8 = gguf.GGMLQuantizationType.Q8_0
    for key, tensor in transformer_to_original(pipe.transformer).items():
        data = tensor.detach().to(device="cpu", dtype=torch.float32).numpy()
        if data.ndim == 2 and data.shape[-1] % 32 == 0:
            writer.add_tensor(key, gguf.quants.quantize(data, q8), raw_dtype=q8)
        else:
            writer.add_tensor(key, np.ascontiguousarray(data))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


def write_diffusers_folder(pipe: Any, folder: str | Path) -> Path:
    """The pipeline as a diffusers folder (safetensors, tokenizers included)."""
    target = Path(folder)
    pipe.save_pretrained(str(target), safe_serialization=True)
    return target


# --------------------------------------------------------------------- config folder


def write_config_folder(pipe: Any, folder: str | Path, t5_tokenizer: bool = True) -> Path:
    """The pipeline's diffusers config folder without weights: the sidecar
    ``<name>.config/`` the loader reads for a non-standard architecture.

    CLIP tokenizer folders hold settings only (the server has its own vocabulary); the T5
    tokenizer folder holds the whole tiny tokenizer when `t5_tokenizer` (its vocabulary
    is not the real T5's, so the server must not use the real one with it), else
    settings only, like the shipped configs. The pipeline is not changed.
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    pipe.save_config(root)
    for name, component in pipe.components.items():
        if component is None:
            continue
        target = root / name
        kind = type(component).__name__
        if kind == "CLIPTokenizer":
            settings = clip_tokenizer_settings(component)
            special = {k: settings[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
            write_json(target / "tokenizer_config.json", settings)
            write_json(target / "special_tokens_map.json", special)
        elif kind.startswith("T5Tokenizer"):
            if t5_tokenizer:
                component.save_pretrained(str(target))
            else:
                settings = {
                    "tokenizer_class": "T5Tokenizer",
                    "model_max_length": component.model_max_length,
                    "eos_token": "</s>",
                    "pad_token": "<pad>",
                    "unk_token": "<unk>",
                }
                write_json(target / "tokenizer_config.json", settings)
        elif hasattr(component, "save_config"):  # diffusers models and schedulers
            component.save_config(target)
        else:  # transformers models: the architecture is written on save_pretrained only
            config = component.config
            config.architectures = [kind]
            target.mkdir(parents=True, exist_ok=True)
            config.save_pretrained(str(target))
    return root
