"""Round trip of the tiny original-layout checkpoints through diffusers' single-file loader.

Why: the product loads users' LDM / A1111 checkpoints with ``from_single_file`` and a
local config folder, offline. These tests prove that works for each family and that
``tests.support.ldm_layout`` writes the layout diffusers reads: every loaded tensor
must equal the one written, so a wrong name, order or transpose fails here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from diffusers import (
    DiffusionPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
)
from diffusers.loaders.single_file_utils import infer_diffusers_model_type
from safetensors.torch import load_file, save_file
from transformers import CLIPTokenizer

from modelkit import ldm_layout

PIPELINE_CLASSES: dict[str, type[DiffusionPipeline]] = {
    "sd15": StableDiffusionPipeline,
    "sd15-inpaint": StableDiffusionInpaintPipeline,
    "sdxl": StableDiffusionXLPipeline,
    "sdxl-inpaint": StableDiffusionXLInpaintPipeline,
}
DIFFUSERS_MODEL_TYPES = {
    "sd15": "v1",
    "sd15-inpaint": "inpainting",
    "sdxl": "xl_base",
    "sdxl-inpaint": "xl_inpaint",
}
# fp16 is what users' files mostly are; fp32 checks nothing is lost on the way.
CASES = [(family, dtype) for family in PIPELINE_CLASSES for dtype in (torch.float16, torch.float32)]
CASE_IDS = [f"{family}-{str(dtype).removeprefix('torch.')}" for family, dtype in CASES]


def _component_names(pipe: DiffusionPipeline) -> list[str]:
    names = ["unet", "vae", "text_encoder"]
    if getattr(pipe, "text_encoder_2", None) is not None:
        names.append("text_encoder_2")
    return names


def _write(family: str, dtype: torch.dtype, folder: Path) -> tuple[DiffusionPipeline, Path, Path]:
    pipe = ldm_layout.build_tiny_components(family, seed=0)
    checkpoint = ldm_layout.write_ldm_checkpoint(pipe, folder / "tiny.safetensors", dtype=dtype)
    config = ldm_layout.save_config_folder(pipe, folder / "tiny.config")
    return pipe, checkpoint, config


def _load(
    family: str, pipe: DiffusionPipeline, checkpoint: Path, config: Path
) -> DiffusionPipeline:
    tokenizers = {"tokenizer": pipe.tokenizer}
    if getattr(pipe, "tokenizer_2", None) is not None:
        tokenizers["tokenizer_2"] = pipe.tokenizer_2
    return PIPELINE_CLASSES[family].from_single_file(
        str(checkpoint), config=str(config), local_files_only=True, **tokenizers
    )


def _same(loaded: torch.Tensor, original: torch.Tensor, dtype: torch.dtype) -> bool:
    if loaded.is_meta or loaded.shape != original.shape:
        return False
    return torch.equal(loaded.to(dtype), original.to(dtype))


def _mismatches(
    original: torch.nn.Module, loaded: torch.nn.Module, dtype: torch.dtype
) -> list[str]:
    """Names of tensors that differ; the expected value is the original cast to the file's dtype."""
    want = original.state_dict()
    got = loaded.state_dict()
    if set(want) != set(got):
        return sorted(set(want) ^ set(got))
    bad = []
    for name, tensor in want.items():
        if not _same(got[name], tensor, dtype):
            bad.append(name)
    return bad


def test_environment_is_offline() -> None:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


@pytest.mark.parametrize(("family", "dtype"), CASES, ids=CASE_IDS)
def test_single_file_round_trip(family: str, dtype: torch.dtype, tmp_path: Path) -> None:
    pipe, checkpoint, config = _write(family, dtype, tmp_path)

    loaded = _load(family, pipe, checkpoint, config)

    assert type(loaded) is PIPELINE_CLASSES[family]
    for name in _component_names(pipe):
        bad = _mismatches(getattr(pipe, name), getattr(loaded, name), dtype)
        assert not bad, f"{name}: {len(bad)} tensors differ, e.g. {bad[:5]}"
    assert loaded.unet.config.in_channels == pipe.unet.config.in_channels


@pytest.mark.parametrize("family", ldm_layout.FAMILIES)
def test_diffusers_detects_the_family(family: str, tmp_path: Path) -> None:
    pipe = ldm_layout.build_tiny_components(family, seed=0)
    checkpoint = ldm_layout.write_ldm_checkpoint(pipe, tmp_path / "tiny.safetensors")

    assert infer_diffusers_model_type(load_file(str(checkpoint))) == DIFFUSERS_MODEL_TYPES[family]


def test_same_seed_same_weights_other_seed_differs() -> None:
    first = ldm_layout.ldm_state_dict(ldm_layout.build_tiny_components("sd15", seed=3))
    again = ldm_layout.ldm_state_dict(ldm_layout.build_tiny_components("sd15", seed=3))
    other = ldm_layout.ldm_state_dict(ldm_layout.build_tiny_components("sd15", seed=4))

    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(
        first[ldm_layout.UNET_PREFIX + "out.2.weight"],
        other[ldm_layout.UNET_PREFIX + "out.2.weight"],
    )


def test_checkpoint_uses_the_original_names() -> None:
    """Spot checks of names and shapes real SD1.5 / SDXL files have."""
    sd15 = ldm_layout.ldm_state_dict(ldm_layout.build_tiny_components("sd15"))
    assert sd15["first_stage_model.encoder.mid.attn_1.q.weight"].shape == (32, 32, 1, 1)
    assert "first_stage_model.decoder.up.3.upsample.conv.weight" in sd15
    assert "cond_stage_model.transformer.text_model.final_layer_norm.weight" in sd15
    assert "model.diffusion_model.input_blocks.1.1.proj_in.weight" in sd15

    sdxl = ldm_layout.ldm_state_dict(ldm_layout.build_tiny_components("sdxl"))
    prefix = ldm_layout.SDXL_OPENCLIP_PREFIX
    hidden = ldm_layout.TEXT2_HIDDEN
    assert sdxl[prefix + "transformer.resblocks.0.attn.in_proj_weight"].shape == (
        3 * hidden,
        hidden,
    )
    assert sdxl[prefix + "text_projection"].shape == (hidden, ldm_layout.TEXT2_PROJECTION)
    assert (
        "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight"
        in sdxl
    )
    assert "model.diffusion_model.label_emb.0.0.weight" in sdxl


def test_swapped_tensors_are_caught(tmp_path: Path) -> None:
    """The round-trip comparison is sharp: two same-shaped norms swapped must fail it."""
    pipe, checkpoint, config = _write("sd15", torch.float32, tmp_path)
    tensors = load_file(str(checkpoint))
    a = "first_stage_model.encoder.mid.block_1.norm1.weight"
    b = "first_stage_model.encoder.mid.block_1.norm2.weight"
    tensors[a], tensors[b] = tensors[b], tensors[a]
    save_file(tensors, str(checkpoint))

    loaded = _load("sd15", pipe, checkpoint, config)

    assert _mismatches(pipe.vae, loaded.vae, torch.float32) == [
        "encoder.mid_block.resnets.0.norm1.weight",
        "encoder.mid_block.resnets.0.norm2.weight",
    ]


def test_config_folder_has_configs_but_no_weights_or_vocab(tmp_path: Path) -> None:
    pipe = ldm_layout.build_tiny_components("sdxl-inpaint")
    folder = ldm_layout.save_config_folder(pipe, tmp_path / "tiny.config")

    names = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert names == {
        "model_index.json",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "text_encoder_2/config.json",
        "tokenizer/special_tokens_map.json",
        "tokenizer/tokenizer_config.json",
        "tokenizer_2/special_tokens_map.json",
        "tokenizer_2/tokenizer_config.json",
        "unet/config.json",
        "vae/config.json",
    }
    settings = json.loads((folder / "tokenizer_2" / "tokenizer_config.json").read_text())
    assert settings["pad_token"] == "!"
    assert settings["model_max_length"] == 77
    assert json.loads((folder / "unet" / "config.json").read_text())["in_channels"] == 9


def test_byte_level_stand_in_tokenizer_works(tmp_path: Path) -> None:
    """The fallback used when resources/tokenizer/ is absent must still tokenize."""
    vocab, merges = ldm_layout._write_byte_level_tokenizer(tmp_path)
    tokenizer = CLIPTokenizer(str(vocab), str(merges), model_max_length=77)

    ids = tokenizer("a photo of a cat").input_ids

    assert ids[0] == len(tokenizer) - 2 and ids[-1] == len(tokenizer) - 1
    assert max(ids) < ldm_layout.CLIP_VOCAB_SIZE
