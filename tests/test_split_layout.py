"""Flux and SD 3.5 in the library: shipped configs, detection from headers, and
ComfyUI's split layout (transformer + text encoders + VAE), on real files.

The model files are tiny (a handful of small tensors) but carry the key names and the
shape relations of the released layouts, which is all detection reads. Where the real
widths matter (CLIP-L 768, CLIP-G 1280, T5 4096) the files are written with those shapes
and a sparse data region, so they take no disk space.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from kd_server.families import Architecture, Family, family_info
from kd_server.library import EntryKind, EntryStatus, ModelEntry, ModelFormat, ModelLibrary
from kd_server.split_layout import (
    ModelParts,
    PartKind,
    examine_part,
    find_parts,
    missing_parts_reason,
)

NEW_FAMILIES = [
    Family.FLUX_DEV,
    Family.FLUX_SCHNELL,
    Family.FLUX_FILL,
    Family.SD35_MEDIUM,
    Family.SD35_LARGE,
]
ALL_IN_ONE = "model.diffusion_model."


def _t(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.zeros(shape, dtype=dtype)


def write(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def write_sparse(path: Path, shapes: dict[str, tuple[int, ...]], dtype: str = "F16") -> Path:
    """A valid safetensors file with real-size shapes whose data is a sparse hole."""
    size = {"F16": 2, "BF16": 2, "F32": 4, "F8_E4M3": 1}[dtype]
    header: dict[str, object] = {}
    offset = 0
    for name, shape in shapes.items():
        length = int(np.prod(shape)) * size
        header[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + length],
        }
        offset += length
    raw = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        handle.truncate(8 + len(raw) + offset)
    return path


# --- tiny files in the released key layouts ----------------------------------------------


def flux_tensors(
    kind: str = "dev", prefix: str = "", dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """BFL's layout: img_in reads 4 packed latent features here (64 in the real model);
    Fill's reads 6 times that (latent + masked image + 4x mask), Depth's twice."""
    features = {"fill": 24, "depth": 8}.get(kind, 4)
    tensors = {
        "img_in.weight": _t(8, features, dtype=dtype),
        "txt_in.weight": _t(8, 16, dtype=dtype),
        "time_in.in_layer.weight": _t(8, 16, dtype=dtype),
        "vector_in.in_layer.weight": _t(8, 12, dtype=dtype),
        "double_blocks.0.img_attn.qkv.weight": _t(24, 8, dtype=dtype),
        "double_blocks.0.img_attn.norm.key_norm.scale": _t(4),
        "single_blocks.0.linear1.weight": _t(40, 8, dtype=dtype),
        "final_layer.linear.weight": _t(4, 8, dtype=dtype),
    }
    if kind != "schnell":
        tensors["guidance_in.in_layer.weight"] = _t(8, 16, dtype=dtype)
    return {prefix + k: v for k, v in tensors.items()}


def sd3_tensors(size: str = "large", prefix: str = "") -> dict[str, torch.Tensor]:
    """SAI's MMDiT layout: medium has the dual-attention attn2, 3.5 has q/k norms."""
    tensors = {
        "x_embedder.proj.weight": _t(8, 16, 2, 2),
        "pos_embed": _t(1, 16, 8),
        "context_embedder.weight": _t(8, 16),
        "joint_blocks.0.x_block.attn.qkv.weight": _t(24, 8),
        "joint_blocks.0.context_block.attn.qkv.weight": _t(24, 8),
        "final_layer.linear.weight": _t(64, 8),
    }
    if size in ("large", "medium"):
        tensors["joint_blocks.0.x_block.attn.ln_q.weight"] = _t(4)
    if size == "medium":
        tensors["joint_blocks.0.x_block.attn2.qkv.weight"] = _t(24, 8)
    return {prefix + k: v for k, v in tensors.items()}


def clip_tensors(width: int = 8, prefix: str = "") -> dict[str, torch.Tensor]:
    return {
        prefix + "text_model.embeddings.token_embedding.weight": _t(16, width),
        prefix + "text_model.encoder.layers.0.self_attn.q_proj.weight": _t(width, width),
        prefix + "text_model.final_layer_norm.weight": _t(width),
    }


def t5_tensors(
    width: int = 8, prefix: str = "", dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    return {
        prefix + "shared.weight": _t(32, width, dtype=dtype),
        prefix + "encoder.block.0.layer.0.SelfAttention.q.weight": _t(width, width, dtype=dtype),
        prefix + "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": _t(
            32, 2, dtype=dtype
        ),
        prefix + "encoder.block.0.layer.1.DenseReluDense.wi_0.weight": _t(16, width, dtype=dtype),
        prefix + "encoder.final_layer_norm.weight": _t(width),
    }


def vae_tensors(channels: int = 16, prefix: str = "") -> dict[str, torch.Tensor]:
    """The LDM layout, as Flux's ae.safetensors and SD 3.5's VAE are saved."""
    return {
        prefix + "encoder.down.0.block.0.conv1.weight": _t(4, 4, 3, 3),
        prefix + "encoder.conv_out.weight": _t(2 * channels, 4, 3, 3),
        prefix + "decoder.conv_in.weight": _t(4, channels, 3, 3),
    }


def flux_all_in_one(kind: str = "dev", dtype: torch.dtype = torch.float32) -> dict:
    """ComfyUI's checkpoint layout (as its fp8 Flux checkpoints are saved)."""
    return (
        flux_tensors(kind, ALL_IN_ONE, dtype)
        | clip_tensors(prefix="text_encoders.clip_l.transformer.")
        | t5_tensors(prefix="text_encoders.t5xxl.transformer.", dtype=dtype)
        | vae_tensors(prefix="vae.")
    )


def sd35_all_in_one(size: str = "large") -> dict:
    return (
        sd3_tensors(size, ALL_IN_ONE)
        | clip_tensors(prefix="text_encoders.clip_l.transformer.")
        | clip_tensors(12, prefix="text_encoders.clip_g.transformer.")
        | t5_tensors(prefix="text_encoders.t5xxl.transformer.")
        | vae_tensors(prefix="first_stage_model.")
    )


def write_gguf(path: Path, tensors: dict[str, torch.Tensor], arch: str = "flux") -> Path:
    """A GGUF file as city96's converter writes Flux: Q8_0 matrices, F32 the rest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch)
    for name, tensor in tensors.items():
        array = tensor.float().numpy()
        if array.ndim == 2 and array.shape[-1] % 32 == 0:
            quantised = gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(
                name,
                quantised,
                raw_shape=quantised.shape,
                raw_dtype=gguf.GGMLQuantizationType.Q8_0,
            )
        else:
            writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def flux_gguf_tensors(kind: str = "dev") -> dict[str, torch.Tensor]:
    """Like `flux_tensors`, 32 features wide so the matrices quantise to Q8_0."""
    features = 6 * 32 if kind == "fill" else 32
    tensors = flux_tensors(kind)
    tensors["img_in.weight"] = _t(8, features)
    tensors["final_layer.linear.weight"] = _t(32, 32)
    tensors["double_blocks.0.img_attn.qkv.weight"] = _t(96, 32)
    tensors["single_blocks.0.linear1.weight"] = _t(160, 32)
    return tensors


def by_name(entries: list[ModelEntry]) -> dict[str, ModelEntry]:
    return {e.name: e for e in entries}


# --- families and shipped configs --------------------------------------------------------


def test_new_families_facts() -> None:
    dev, schnell, fill = (family_info(f) for f in ("flux-dev", "flux-schnell", "flux-fill"))
    medium, large = family_info("sd35-medium"), family_info("sd35-large")
    assert [i.label for i in (dev, schnell, fill, medium, large)] == [
        "Flux.1 dev",
        "Flux.1 schnell",
        "Flux.1 Fill",
        "SD 3.5 medium",
        "SD 3.5 large",
    ]
    for info in (dev, schnell, fill):
        assert info.architecture is Architecture.FLUX and not info.uses_cfg
        assert info.text_encoders == ("clip_l", "t5xxl") and info.latent_channels == 16
    assert dev.uses_guidance and fill.uses_guidance and not schnell.uses_guidance
    assert fill.is_inpaint and fill.base is Family.FLUX_DEV and not dev.is_inpaint
    assert schnell.default_steps == 4
    for info in (medium, large):
        assert info.architecture is Architecture.SD3 and info.uses_cfg
        assert info.text_encoders == ("clip_l", "clip_g", "t5xxl")
    for info in map(family_info, NEW_FAMILIES):
        assert info.working_size == 1024 and not info.is_xl and info.is_transformer
        assert (info.config_dir / "model_index.json").is_file()
    # The SD 1.5 / SDXL rows keep their values.
    sd15, sdxl = family_info("sd15"), family_info("sdxl")
    assert sd15.architecture is Architecture.UNET and sd15.uses_cfg and not sd15.uses_guidance
    assert (sd15.latent_channels, sd15.default_steps, sd15.default_cfg) == (4, 20, 7.0)
    assert sd15.text_encoders == ("clip_l",) and sdxl.text_encoders == ("clip_l", "clip_g")


#: Parameter counts of the released transformers as diffusers builds them. Flux.1 dev's
#: 11,901,408,320 is the published count; schnell lacks the guidance embedder
#: (256x3072 + 3072x3072 + biases = 10,229,760 fewer) and Fill's img_in reads 320 more
#: features (983,040 more). SD 3.5's were checked against an independent count from
#: SAI's layer list (joint blocks: adaLN 6x, qkv, proj, RMS q/k, MLP 4x; the last
#: context block pre-only; medium's 13 dual-attention blocks: 9x adaLN, attn2); the
#: fixed sin-cos position table is a buffer, not a parameter.
TRANSFORMER_PARAMETERS = {
    "flux-dev": 11_901_408_320,
    "flux-schnell": 11_891_178_560,
    "flux-fill": 11_902_391_360,
    "sd35-medium": 2_243_171_520,
    "sd35-large": 8_056_627_520,
}


@pytest.mark.parametrize("family", NEW_FAMILIES, ids=lambda f: f.value)
def test_shipped_transformer_configs_are_the_released_architectures(family: Family) -> None:
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    info = family.info
    cls = (
        FluxTransformer2DModel if info.architecture is Architecture.FLUX else SD3Transformer2DModel
    )
    config = cls.load_config(info.config_dir / "transformer")
    with torch.device("meta"):  # no weights; position tables are not computed either
        model = cls.from_config(config)
    assert sum(p.numel() for p in model.parameters()) == TRANSFORMER_PARAMETERS[family.value]
    assert model.config.joint_attention_dim == 4096


def test_shipped_vae_scheduler_and_text_encoder_configs() -> None:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler
    from transformers import T5Config, T5EncoderModel

    for family in NEW_FAMILIES:
        folder = family.info.config_dir
        vae = AutoencoderKL.load_config(folder / "vae")
        flux = family.info.architecture is Architecture.FLUX
        assert vae["latent_channels"] == 16 and not vae["use_quant_conv"]
        assert (vae["scaling_factor"], vae["shift_factor"]) == (
            (0.3611, 0.1159) if flux else (1.5305, 0.0609)
        )
        scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(folder / "scheduler")
        dynamic = family in (Family.FLUX_DEV, Family.FLUX_FILL)
        assert scheduler.config.use_dynamic_shifting is dynamic
        assert scheduler.config.shift == (1.0 if family is Family.FLUX_SCHNELL else 3.0)
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        t5_folder = "text_encoder_2" if flux else "text_encoder_3"
        assert index[t5_folder] == ["transformers", "T5EncoderModel"]
    t5 = T5Config.from_pretrained(Family.FLUX_DEV.info.config_dir / "text_encoder_2")
    assert (t5.d_model, t5.d_ff, t5.num_layers, t5.num_heads, t5.d_kv, t5.vocab_size) == (
        4096,
        10240,
        24,
        64,
        64,
        32128,
    )
    assert t5.is_gated_act and t5.dense_act_fn == "gelu_new"
    with torch.device("meta"):
        encoder = T5EncoderModel(t5)
    # The T5 v1.1 XXL encoder as diffusers' SD 3 / Flux pipelines count it (the shared
    # token embedding once): 4,762,310,656 parameters.
    assert sum(p.numel() for p in encoder.parameters()) == 4_762_310_656


# --- single files: all-in-one, transformer-only, refusals ---------------------------------


def test_all_in_one_files_are_single_file_checkpoints(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    write(root / "flux1-dev-fp8.safetensors", flux_all_in_one("dev", torch.float8_e4m3fn))
    write(root / "flux1-schnell.safetensors", flux_all_in_one("schnell"))
    write(root / "flux1-fill.safetensors", flux_all_in_one("fill"))
    write(root / "sd3.5-medium.safetensors", sd35_all_in_one("medium"))
    write(root / "sd3.5-large.safetensors", sd35_all_in_one("large"))
    entries = by_name(ModelLibrary([tmp_path], include_embedded=False).checkpoints())
    expected = {
        "flux1-dev-fp8": Family.FLUX_DEV,
        "flux1-schnell": Family.FLUX_SCHNELL,
        "flux1-fill": Family.FLUX_FILL,
        "sd3.5-medium": Family.SD35_MEDIUM,
        "sd3.5-large": Family.SD35_LARGE,
    }
    for name, family in expected.items():
        entry = entries[name]
        assert entry.usable and entry.family is family, (name, entry.reason)
        assert entry.format is ModelFormat.SAFETENSORS and entry.parts is None


def test_unsupported_transformers_are_refused_with_reasons(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    write(root / "sd3-medium.safetensors", sd3_tensors("3.0", ALL_IN_ONE))
    write(root / "flux-depth.safetensors", flux_tensors("depth"))
    chroma = flux_tensors("schnell") | {"distilled_guidance_layer.in_proj.bias": _t(8)}
    write(root / "chroma.safetensors", chroma)
    no_final = {k: v for k, v in flux_tensors().items() if not k.startswith("final_layer")}
    write(root / "flux-broken.safetensors", no_final)
    write(root / "t5.safetensors", t5_tensors())
    entries = by_name(ModelLibrary([tmp_path], include_embedded=False).checkpoints())
    expected = {
        "sd3-medium": "SD 3 medium (3.0",
        "flux-depth": "Depth",
        "chroma": "Chroma",
        "flux-broken": "incomplete Flux",
        "t5": "text encoder (CLIP or T5), not a checkpoint",
    }
    for name, words in expected.items():
        assert entries[name].status is EntryStatus.UNUSABLE, name
        assert words in entries[name].reason, (name, entries[name].reason)


def test_diffusers_layout_transformer_files(tmp_path: Path) -> None:
    """A transformer saved by diffusers on its own (diffusion_pytorch_model.safetensors)."""
    flux = {
        "x_embedder.weight": _t(8, 4),
        "context_embedder.weight": _t(8, 16),
        "proj_out.weight": _t(4, 8),
        "transformer_blocks.0.attn.to_q.weight": _t(8, 8),
        "single_transformer_blocks.0.attn.to_q.weight": _t(8, 8),
    }
    sd3 = {
        "pos_embed.proj.weight": _t(8, 16, 2, 2),
        "context_embedder.weight": _t(8, 16),
        "proj_out.weight": _t(64, 8),
        "transformer_blocks.0.attn.add_q_proj.weight": _t(8, 8),
        "transformer_blocks.0.attn.norm_q.weight": _t(4),
        "transformer_blocks.0.attn2.to_q.weight": _t(8, 8),
    }
    root = tmp_path / "models"
    write(root / "diffusion_models" / "flux-schnell-diffusers.safetensors", flux)
    write(root / "diffusion_models" / "sd35m-diffusers.safetensors", sd3)
    entries = by_name(ModelLibrary([root], include_embedded=False).checkpoints())
    assert entries["flux-schnell-diffusers"].family is Family.FLUX_SCHNELL
    assert entries["sd35m-diffusers"].family is Family.SD35_MEDIUM


# --- the split layout ---------------------------------------------------------------------


def comfyui_tree(models: Path) -> None:
    """A ComfyUI models/ folder with Flux split files and most of SD 3.5's."""
    write(models / "diffusion_models" / "flux1-dev.safetensors", flux_tensors("dev"))
    write(
        models / "unet" / "flux1-schnell-fp8.safetensors",
        flux_tensors("schnell", dtype=torch.float8_e4m3fn),
    )
    write_gguf(models / "unet" / "flux1-fill-Q8_0.gguf", flux_gguf_tensors("fill"))
    write(models / "diffusion_models" / "sd3.5_large.safetensors", sd3_tensors("large"))
    write(models / "text_encoders" / "clip_l.safetensors", clip_tensors())
    write(models / "text_encoders" / "t5xxl_fp16.safetensors", t5_tensors())
    write(models / "clip" / "t5xxl_fp8_e4m3fn.safetensors", t5_tensors(dtype=torch.float8_e4m3fn))
    write(models / "vae" / "ae.safetensors", vae_tensors())
    write(models / "vae" / "sdxl_vae.safetensors", vae_tensors(channels=4))
    write(models / "checkpoints" / "sd15.safetensors", {"x": _t(1)})  # a checkpoints root


def test_split_transformers_are_paired_with_their_parts(tmp_path: Path) -> None:
    models = tmp_path / "ComfyUI" / "models"
    comfyui_tree(models)
    library = ModelLibrary([tmp_path / "ComfyUI"], include_embedded=False)
    entries = by_name(library.checkpoints())
    t5_fp16 = models / "text_encoders" / "t5xxl_fp16.safetensors"
    t5_fp8 = models / "clip" / "t5xxl_fp8_e4m3fn.safetensors"
    clip_l, ae = models / "text_encoders" / "clip_l.safetensors", models / "vae" / "ae.safetensors"

    dev = entries["flux1-dev"]
    assert dev.usable and dev.family is Family.FLUX_DEV and dev.format is ModelFormat.SPLIT
    transformer = models / "diffusion_models" / "flux1-dev.safetensors"
    assert dev.path == transformer
    # A fp16 transformer takes the fp16 T5; the fp8 and GGUF ones take the fp8 T5.
    assert dev.parts == ModelParts(transformer, vae=ae, clip_l=clip_l, t5xxl=t5_fp16)
    schnell = entries["flux1-schnell-fp8"]
    assert schnell.usable and schnell.family is Family.FLUX_SCHNELL
    assert schnell.parts is not None and schnell.parts.quantisation == "fp8-e4m3fn"
    assert schnell.parts.t5xxl == t5_fp8
    fill = entries["flux1-fill-Q8_0.gguf"]
    assert fill.usable and fill.family is Family.FLUX_FILL and fill.format is ModelFormat.SPLIT
    assert fill.parts is not None and fill.parts.quantisation == "gguf-q8_0"
    assert fill.parts.t5xxl == t5_fp8 and fill.parts.vae == ae

    large = entries["sd3.5_large"]
    assert large.family is Family.SD35_LARGE and large.status is EntryStatus.UNUSABLE
    assert large.reason == (
        "SD 3.5 large transformer found, but no CLIP-G text encoder (clip_g) in "
        "models/text_encoders or models/clip, and no SD 3.5 VAE in models/vae."
    )
    assert large.parts is not None and large.parts.clip_l == clip_l and large.parts.clip_g is None
    # Text encoders and VAEs are parts, never checkpoints of their own.
    assert not any("t5xxl" in n or "clip_l" in n or n == "ae" for n in entries)
    kinds = {p.path.name: p.info.kind for p in library.model_parts()}
    assert kinds == {
        "clip_l.safetensors": PartKind.CLIP_L,
        "t5xxl_fp16.safetensors": PartKind.T5XXL,
        "t5xxl_fp8_e4m3fn.safetensors": PartKind.T5XXL,
        "ae.safetensors": PartKind.VAE,
    }

    # Adding the missing parts makes SD 3.5 usable at the next refresh.
    write(models / "clip" / "clip_g.safetensors", clip_tensors(12))
    write(models / "vae" / "sd3.5_vae.safetensors", vae_tensors())
    library.refresh()
    large = library.get_checkpoint("sd3.5_large")
    assert large.parts is not None
    assert large.parts.clip_g == models / "clip" / "clip_g.safetensors"
    assert large.parts.vae == models / "vae" / "sd3.5_vae.safetensors"  # ae is Flux's


def test_missing_t5_names_exactly_what_is_missing(tmp_path: Path) -> None:
    models = tmp_path / "models"
    write(models / "unet" / "flux1-dev.safetensors", flux_tensors())
    write(models / "clip" / "clip_l.safetensors", clip_tensors())
    write(models / "vae" / "ae.safetensors", vae_tensors())
    entry = by_name(ModelLibrary([models], include_embedded=False).checkpoints())["flux1-dev"]
    assert entry.status is EntryStatus.UNUSABLE
    assert entry.reason == (
        "Flux.1 dev transformer found, but no T5 text encoder (t5xxl) in "
        "models/text_encoders or models/clip."
    )
    assert missing_parts_reason("Flux.1 schnell", "flux", ["vae"]) == (
        "Flux.1 schnell transformer found, but no Flux VAE (ae.safetensors) in models/vae."
    )


def test_partial_files_take_only_the_missing_parts(tmp_path: Path) -> None:
    """SD 3.5's own release holds the VAE beside the transformer; ComfyUI's
    incl_clips files hold the CLIPs but no T5."""
    root = tmp_path / "models"
    with_vae = sd3_tensors("large", ALL_IN_ONE) | vae_tensors(prefix="first_stage_model.")
    write(root / "checkpoints" / "sd3.5_large.safetensors", with_vae)
    incl_clips = {k: v for k, v in sd35_all_in_one("medium").items() if "t5xxl" not in k}
    write(root / "checkpoints" / "sd3.5_medium_incl_clips.safetensors", incl_clips)
    write(root / "text_encoders" / "clip_l.safetensors", clip_tensors())
    write(root / "text_encoders" / "clip_g.safetensors", clip_tensors(12))
    write(root / "text_encoders" / "t5xxl_fp16.safetensors", t5_tensors())
    entries = by_name(ModelLibrary([root], include_embedded=False).checkpoints())
    large = entries["sd3.5_large"]
    own = root / "checkpoints" / "sd3.5_large.safetensors"
    assert large.usable and large.format is ModelFormat.SPLIT
    assert large.parts == ModelParts(
        own,
        vae=own,
        clip_l=root / "text_encoders" / "clip_l.safetensors",
        clip_g=root / "text_encoders" / "clip_g.safetensors",
        t5xxl=root / "text_encoders" / "t5xxl_fp16.safetensors",
    )
    medium = entries["sd3.5_medium_incl_clips"]
    own = root / "checkpoints" / "sd3.5_medium_incl_clips.safetensors"
    assert medium.usable and medium.parts is not None
    assert (medium.parts.clip_l, medium.parts.clip_g, medium.parts.vae) == (own, own, own)
    assert medium.parts.t5xxl == root / "text_encoders" / "t5xxl_fp16.safetensors"


def test_part_roles_come_from_headers_and_names_only_break_ties(tmp_path: Path) -> None:
    folder = tmp_path / "text_encoders"
    # Real widths: the names say nothing, the shapes decide.
    write_sparse(
        folder / "a.safetensors", {"text_model.embeddings.token_embedding.weight": (49408, 768)}
    )
    write_sparse(
        folder / "b.safetensors", {"text_model.embeddings.token_embedding.weight": (49408, 1280)}
    )
    write_sparse(
        folder / "c.safetensors",
        {
            "encoder.block.0.layer.0.SelfAttention.q.weight": (4096, 4096),
            "encoder.block.0.layer.1.DenseReluDense.wi_0.weight": (10240, 4096),
        },
        dtype="F8_E4M3",
    )
    umt5 = t5_tensors() | {
        "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight": _t(32, 2)
    }
    write(folder / "umt5_xxl.safetensors", umt5)
    write(
        folder / "clip_vision_h.safetensors",
        {"vision_model.embeddings.patch_embedding.weight": _t(8, 3, 2, 2)},
    )
    write(folder / "mystery_clip.safetensors", clip_tensors(12))
    parts = {p.path.name: p.info for p in find_parts([tmp_path])}
    assert parts["a.safetensors"].kind is PartKind.CLIP_L
    assert parts["b.safetensors"].kind is PartKind.CLIP_G
    assert parts["c.safetensors"].kind is PartKind.T5XXL
    assert parts["c.safetensors"].quantisation == "fp8-e4m3fn"
    assert set(parts) == {"a.safetensors", "b.safetensors", "c.safetensors"}
    # Small widths (test stand-ins) are told apart by the file name only.
    assert examine_part(clip_tensors(12), {}, "clip_g.safetensors").kind is PartKind.CLIP_G
    assert examine_part(clip_tensors(12), {}, "mystery.safetensors").kind is None
    # Scaled fp8 text encoders (ComfyUI) are marked, so they come last.
    scaled = t5_tensors(dtype=torch.float8_e4m3fn) | {"scaled_fp8": _t(1)}
    shapes = {k: tuple(v.shape) for k, v in scaled.items()}
    dtypes = {k: "F8_E4M3" if v.dtype == torch.float8_e4m3fn else "F32" for k, v in scaled.items()}
    assert examine_part(shapes, dtypes, "t5.safetensors").quantisation == "fp8-e4m3fn-scaled"


def test_real_width_parts_are_preferred_over_stand_ins(tmp_path: Path) -> None:
    models = tmp_path / "models"
    write(models / "unet" / "flux1-dev.safetensors", flux_tensors())
    write(models / "text_encoders" / "a_t5_small.safetensors", t5_tensors())
    write_sparse(
        models / "text_encoders" / "t5xxl.safetensors",
        {
            "encoder.block.0.layer.0.SelfAttention.q.weight": (4096, 4096),
            "encoder.block.0.layer.1.DenseReluDense.wi_0.weight": (10240, 4096),
        },
    )
    write(models / "text_encoders" / "clip_l.safetensors", clip_tensors())
    write(models / "vae" / "flux_vae.safetensors", vae_tensors())
    entry = ModelLibrary([models], include_embedded=False).get_checkpoint("flux1-dev")
    assert entry.parts is not None
    assert entry.parts.t5xxl == models / "text_encoders" / "t5xxl.safetensors"
    assert entry.parts.vae == models / "vae" / "flux_vae.safetensors"


def test_plain_folder_and_wrong_places(tmp_path: Path) -> None:
    """A plain model folder skips text_encoders/ like vae/; GGUF files that are not
    Flux or SD 3.5 transformers, and broken ones, are listed with a reason."""
    write(tmp_path / "text_encoders" / "t5xxl_fp16.safetensors", t5_tensors())
    write(tmp_path / "flux.safetensors", flux_all_in_one())
    write_gguf(tmp_path / "llm.gguf", {"blk.0.attn_q.weight": _t(32, 32)}, arch="llama")
    (tmp_path / "broken.gguf").write_bytes(b"GGUF but not really")
    entries = by_name(ModelLibrary([tmp_path], include_embedded=False).checkpoints())
    assert set(entries) == {"flux", "llm.gguf", "broken.gguf"}
    assert entries["flux"].usable
    assert "'llama'" in entries["llm.gguf"].reason
    assert "GGUF" in entries["broken.gguf"].reason
    assert not entries["broken.gguf"].usable


def test_transformer_diffusers_folders(tmp_path: Path) -> None:
    def folder(name: str, pipeline: str, transformer: dict, t5: str) -> None:
        path = tmp_path / "checkpoints" / name
        components = ["transformer", "vae", "text_encoder", "text_encoder_2", t5]
        index = {"_class_name": pipeline, "_diffusers_version": "0.42.1"}
        index.update({c: ["diffusers", "X"] for c in components})
        path.mkdir(parents=True)
        (path / "model_index.json").write_text(json.dumps(index), encoding="utf-8")
        for component in components:
            write(path / component / "model.safetensors", {"w": _t(2)})
        config = json.dumps(transformer)
        (path / "transformer" / "config.json").write_text(config, encoding="utf-8")

    folder("dev", "FluxPipeline", {"in_channels": 64, "guidance_embeds": True}, "text_encoder_2")
    folder("schnell", "FluxPipeline", {"in_channels": 64}, "text_encoder_2")
    fill = {"in_channels": 384, "out_channels": 64, "guidance_embeds": True}
    folder("fill", "FluxFillPipeline", fill, "text_encoder_2")
    medium = {"dual_attention_layers": [0, 1], "qk_norm": "rms_norm"}
    folder("medium", "StableDiffusion3Pipeline", medium, "text_encoder_3")
    folder("large", "StableDiffusion3Pipeline", {"qk_norm": "rms_norm"}, "text_encoder_3")
    folder("sd3", "StableDiffusion3Pipeline", {}, "text_encoder_3")
    folder("no-t5", "StableDiffusion3Pipeline", {"qk_norm": "rms_norm"}, "text_encoder_2")
    entries = by_name(ModelLibrary([tmp_path], include_embedded=False).checkpoints())
    expected = {
        "dev": Family.FLUX_DEV,
        "schnell": Family.FLUX_SCHNELL,
        "fill": Family.FLUX_FILL,
        "medium": Family.SD35_MEDIUM,
        "large": Family.SD35_LARGE,
    }
    for name, family in expected.items():
        assert entries[name].usable and entries[name].family is family, name
        assert entries[name].format is ModelFormat.DIFFUSERS and entries[name].parts is None
    assert "SD 3 medium (3.0" in entries["sd3"].reason
    assert "no text_encoder_3" in entries["no-t5"].reason


# --- LoRAs ----------------------------------------------------------------------------------


def test_flux_and_sd3_loras_are_loras_with_family_hints(tmp_path: Path) -> None:
    loras = {
        "kohya-flux": {"lora_unet_double_blocks_0_img_attn_proj.lora_down.weight": _t(2, 8)},
        "comfy-flux": {
            "diffusion_model.double_blocks.0.img_attn.proj.lora_A.weight": _t(2, 8),
            "diffusion_model.double_blocks.0.img_attn.proj.lora_B.weight": _t(8, 2),
        },
        "diffusers-flux": {
            "transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": _t(2, 8),
        },
        "xlabs-flux": {"double_blocks.0.processor.proj_lora1.down.weight": _t(2, 8)},
        "kohya-sd3": {"lora_unet_joint_blocks_30_x_block_attn_qkv.lora_down.weight": _t(2, 8)},
        "diffusers-sd3-large": {
            "transformer.transformer_blocks.30.attn.to_q.lora_A.weight": _t(2, 8),
        },
        "diffusers-sd35-medium": {
            "transformer.transformer_blocks.3.attn2.to_q.lora_A.weight": _t(2, 8),
        },
    }
    for name, tensors in loras.items():
        write(tmp_path / "loras" / f"{name}.safetensors", tensors)
    write(tmp_path / "diffusion_models" / "misplaced.safetensors", loras["comfy-flux"])
    library = ModelLibrary([tmp_path], include_embedded=False)
    entries = by_name(library.loras())
    for name in loras:
        assert entries[name].usable and entries[name].kind is EntryKind.LORA, name
    for name in ("kohya-flux", "comfy-flux", "diffusers-flux", "xlabs-flux"):
        assert entries[name].family is Family.FLUX_DEV, name
    assert entries["kohya-sd3"].family is Family.SD35_LARGE
    assert entries["diffusers-sd3-large"].family is Family.SD35_LARGE
    assert entries["diffusers-sd35-medium"].family is Family.SD35_MEDIUM
    misplaced = by_name(library.checkpoints())["misplaced"]
    assert misplaced.status is EntryStatus.UNUSABLE and "loras folder" in misplaced.reason


def test_a_sidecar_config_folder_is_not_listed_as_a_model(tmp_path: Path) -> None:
    """`<name>.config/` beside `<name>.safetensors` is that file's config (the loader
    reads it); a lone `.config` folder with a model_index is still looked at."""
    models = tmp_path / "ComfyUI" / "models"
    comfyui_tree(models)
    for folder in (
        models / "diffusion_models" / "flux1-dev.config",
        models / "checkpoints" / "lone.config",
    ):
        folder.mkdir(parents=True)
        (folder / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    library = ModelLibrary([tmp_path / "ComfyUI"], include_embedded=False)
    names = {entry.name for entry in library.entries(EntryKind.CHECKPOINT)}
    assert "flux1-dev" in names
    assert not any(name.startswith("diffusion_models/flux1-dev.config") for name in names)
    assert not any(name.startswith("flux1-dev.config") for name in names)
    assert any("lone.config" in name for name in names), names


def test_flux_schnell_is_listed_as_a_fast_model_by_its_family(tmp_path: Path) -> None:
    """/v1/models shows the sampling schnell is made for, as the engine's `auto` runs it,
    whatever the file is called; dev stays an ordinary model."""
    models = tmp_path / "ComfyUI" / "models"
    comfyui_tree(models)
    entries = by_name(ModelLibrary([tmp_path / "ComfyUI"], include_embedded=False).checkpoints())
    fast = entries["flux1-schnell-fp8"].fast
    assert fast is not None and (fast.kind.value, fast.steps) == ("schnell", 4)
    assert entries["flux1-dev"].fast is None
