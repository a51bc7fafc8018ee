"""modelkit/flux_sd3_files writes Flux / SD 3.5 files in the layouts people share, and
kd_server.component_files reads them: both checked against diffusers' own converters.

diffusers' Flux converter assumes the full width (3072), so the BFL round trip of the
tiny models cannot go through it; instead both directions are run at the real width on
stand-in tensors that take no memory (each tensor is its key's number plus its row
index, broadcast): ours and diffusers' must give the same tensor for every key.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def pipes():
    from support.flux_sd3 import build_pipes

    return build_pipes()


def _stand_ins(shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Distinct, row-identifiable int32 tensors of the given shapes, broadcast (no memory)."""
    out = {}
    for number, (key, shape) in enumerate(sorted(shapes.items())):
        rows = torch.arange(shape[0], dtype=torch.int32) + number * 100_000
        out[key] = rows.view(-1, *([1] * (len(shape) - 1))).expand(*shape)
    return out


def test_flux_bfl_layout_matches_diffusers_at_the_real_width():
    from diffusers import FluxTransformer2DModel
    from diffusers.loaders.single_file_utils import (
        convert_flux_transformer_checkpoint_to_diffusers,
    )

    from kd_server.component_files import flux_to_diffusers
    from modelkit.flux_sd3_files import flux_state_to_bfl

    with torch.device("meta"):  # Flux.1 dev's widths, one block of each kind
        model = FluxTransformer2DModel(num_layers=1, num_single_layers=1, guidance_embeds=True)
    shapes = {key: t.shape for key, t in model.state_dict().items()}
    ours = _stand_ins(shapes)
    bfl = flux_state_to_bfl(ours, num_layers=1, num_single_layers=1)
    assert "double_blocks.0.img_attn.qkv.weight" in bfl and "single_blocks.0.linear1.bias" in bfl
    theirs = convert_flux_transformer_checkpoint_to_diffusers(dict(bfl))
    back = flux_to_diffusers(bfl)
    assert set(theirs) == set(back) == set(ours)
    for key, tensor in ours.items():
        assert torch.equal(theirs[key], tensor), key
        assert torch.equal(back[key], tensor), key


@pytest.mark.parametrize("kind", ["medium", "large"])
def test_sd3_sai_layout_round_trips_through_diffusers(pipes, kind, tmp_path):
    from diffusers import SD3Transformer2DModel

    from modelkit.flux_sd3_files import write_config_folder, write_transformer

    pipe = pipes[kind]
    path = write_transformer(pipe, tmp_path / "sd3.safetensors", dtype=torch.float32)
    config = write_config_folder(pipe, tmp_path / "sd3.config")
    loaded = SD3Transformer2DModel.from_single_file(
        str(path), config=str(config), subfolder="transformer", local_files_only=True
    )
    expected = pipe.transformer.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    for key, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, expected[key]), key


def test_comfyui_layouts(pipes, tmp_path):
    from safetensors import safe_open

    from modelkit.flux_sd3_files import write_all_in_one, write_text_encoder, write_vae

    flux, sd3 = pipes["dev"], pipes["medium"]

    def keys(path):
        with safe_open(str(path), framework="pt") as handle:
            return set(handle.keys())

    clip_l = keys(write_text_encoder(flux, "clip_l", tmp_path / "clip_l.safetensors"))
    assert "text_model.embeddings.token_embedding.weight" in clip_l
    clip_g = keys(write_text_encoder(sd3, "clip_g", tmp_path / "clip_g.safetensors"))
    assert "text_projection.weight" in clip_g
    t5 = keys(write_text_encoder(flux, "t5xxl", tmp_path / "t5.safetensors"))
    assert "shared.weight" in t5 and "encoder.block.0.layer.0.SelfAttention.q.weight" in t5
    vae = keys(write_vae(flux, tmp_path / "ae.safetensors"))
    assert "decoder.conv_in.weight" in vae and not any("quant_conv" in k for k in vae)
    whole = keys(write_all_in_one(flux, tmp_path / "flux.safetensors"))
    assert "model.diffusion_model.double_blocks.0.img_attn.qkv.weight" in whole
    assert "text_encoders.t5xxl.transformer.shared.weight" in whole
    assert "text_encoders.clip_l.transformer.text_model.final_layer_norm.weight" in whole
    assert "vae.encoder.conv_in.weight" in whole
    whole_sd3 = keys(write_all_in_one(sd3, tmp_path / "sd3.safetensors"))
    assert "first_stage_model.encoder.conv_in.weight" in whole_sd3
    assert "model.diffusion_model.joint_blocks.0.x_block.attn2.qkv.weight" in whole_sd3


def test_fp8_and_gguf_files(pipes, tmp_path):
    import gguf
    from safetensors import safe_open

    from modelkit.flux_sd3_files import write_gguf_transformer, write_transformer

    path = write_transformer(pipes["dev"], tmp_path / "fp8.safetensors", fp8=True)
    with safe_open(str(path), framework="pt") as handle:
        qkv = handle.get_tensor("double_blocks.0.img_attn.qkv.weight")
        norm = handle.get_tensor("double_blocks.0.img_attn.norm.query_norm.scale")
    assert qkv.dtype == torch.float8_e4m3fn and norm.dtype == torch.bfloat16
    reader = gguf.GGUFReader(str(write_gguf_transformer(pipes["dev"], tmp_path / "f.gguf")))
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["double_blocks.0.img_attn.qkv.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert types["double_blocks.0.img_attn.qkv.bias"] == gguf.GGMLQuantizationType.F32


def _assert_equal_modules(got, expected, name):
    state = expected.state_dict()
    for key, tensor in got.state_dict().items():
        # T5 files store the tied embedding once, as shared.weight; diffusers' own T5
        # loader (transformers 5) leaves the encoder's alias untied: not our layout's doing
        if key in state and key != "encoder.embed_tokens.weight":
            assert tensor.device.type != "meta", f"{name}.{key} was not loaded"
            assert torch.equal(tensor, state[key]), f"{name}.{key}"


def test_all_in_one_files_load_with_diffusers_own_single_file_loaders(pipes, tmp_path):
    """diffusers reads our all-in-one layout as it reads ComfyUI's: the whole SD 3.5
    pipeline, and Flux's VAE and T5 (its Flux transformer converter needs the real width)."""
    from diffusers import AutoencoderKL, StableDiffusion3Pipeline
    from diffusers.loaders.single_file_utils import create_diffusers_t5_model_from_checkpoint
    from safetensors.torch import load_file
    from transformers import T5EncoderModel

    from modelkit.flux_sd3_files import write_all_in_one, write_config_folder

    sd3 = pipes["medium"]
    path = write_all_in_one(sd3, tmp_path / "sd3.safetensors", dtype=torch.float32)
    config = write_config_folder(sd3, tmp_path / "sd3.config")
    loaded = StableDiffusion3Pipeline.from_single_file(
        str(path),
        config=str(config),
        local_files_only=True,
        tokenizer=sd3.tokenizer,
        tokenizer_2=sd3.tokenizer_2,
        tokenizer_3=sd3.tokenizer_3,
    )
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
        _assert_equal_modules(getattr(loaded, name), getattr(sd3, name), name)

    flux = pipes["dev"]
    path = write_all_in_one(flux, tmp_path / "flux.safetensors", dtype=torch.float32)
    config = write_config_folder(flux, tmp_path / "flux.config")
    vae = AutoencoderKL.from_single_file(
        str(path), config=str(config), subfolder="vae", local_files_only=True
    )
    _assert_equal_modules(vae, flux.vae, "vae")
    t5 = create_diffusers_t5_model_from_checkpoint(
        T5EncoderModel, load_file(str(path)), subfolder="text_encoder_2", config=str(config)
    )
    _assert_equal_modules(t5, flux.text_encoder_2, "text_encoder_2")


@pytest.mark.parametrize("family", ["flux-dev", "flux-schnell", "flux-fill"])
def test_full_size_flux_converts_both_ways(family):
    """Every block of the shipped full-size configs (19 double, 38 single; Fill's 384
    inputs) through our writer and reader, on the meta device (shapes only, no memory)."""
    from diffusers import FluxTransformer2DModel

    from kd_server.component_files import flux_to_diffusers
    from kd_server.families import Family
    from modelkit.flux_sd3_files import flux_to_bfl

    config = FluxTransformer2DModel.load_config(str(Family(family).info.config_dir / "transformer"))
    with torch.device("meta"):
        model = FluxTransformer2DModel.from_config(config)
    bfl = flux_to_bfl(model)
    assert ("guidance_in.in_layer.weight" in bfl) == (family != "flux-schnell")
    back = flux_to_diffusers(bfl)
    expected = model.state_dict()
    assert back.keys() == expected.keys()
    assert all(back[k].shape == t.shape for k, t in expected.items())


@pytest.mark.parametrize("family", ["sd35-medium", "sd35-large"])
def test_full_size_sd3_converts_through_diffusers(family):
    from diffusers import SD3Transformer2DModel
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    from kd_server.families import Family
    from modelkit.flux_sd3_files import sd3_to_sai

    config = SD3Transformer2DModel.load_config(str(Family(family).info.config_dir / "transformer"))
    with torch.device("meta"):
        model = SD3Transformer2DModel.from_config(config)
    sai = sd3_to_sai(model)
    assert any(".attn2." in k for k in sai) == (family == "sd35-medium")
    back = convert_sd3_transformer_checkpoint_to_diffusers(dict(sai))
    expected = model.state_dict()
    assert back.keys() == expected.keys()
    assert all(back[k].shape == t.shape for k, t in expected.items())
