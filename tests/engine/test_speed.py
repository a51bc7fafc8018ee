"""Speed options: each one leaves the images as they were, and a LoRA still works on a
model whose QKV projections were fused at load time (the engine unfuses first)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kd_server.engine import Engine
from kd_server.generation import GenerationRequest, LoraSpec, Task
from kd_server.library import ModelLibrary
from kd_server.speed import SpeedOptions
from support.jobs import make_request


def _request(**overrides) -> GenerationRequest:
    fields = {"task": Task.TXT2IMG, "prompt": "a boat", "steps": 3, "width": 64, "height": 64}
    fields.update(overrides)
    return make_request(seed=5, **fields)


def _pixels(engine: Engine, **overrides) -> np.ndarray:
    return np.asarray(engine.generate(_request(**overrides))[0].image, dtype=np.float32)


def _save_lora(folder, name: str) -> None:
    """A rank-2 LoRA with large random factors on the embedded UNet's projections."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    from kd_server.tiny_model import build_embedded_pipeline

    config = LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_k", "to_v"])
    unet = inject_adapter_in_model(config, build_embedded_pipeline().unet, adapter_name="x")
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for param_name, param in unet.named_parameters():
            if "lora_" in param_name:
                param.copy_(torch.randn(param.shape, generator=generator))
    folder.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(
        str(folder),
        unet_lora_layers=get_peft_model_state_dict(unet, adapter_name="x"),
        weight_name=f"{name}.safetensors",
    )


def test_options_are_described():
    assert SpeedOptions().describe() == "none" and not SpeedOptions().any
    both = SpeedOptions(channels_last=True, fuse_qkv=True)
    assert both.any and both.describe() == "channels_last + fused QKV"


@pytest.mark.parametrize(
    "options", [SpeedOptions(channels_last=True), SpeedOptions(fuse_qkv=True)], ids=str
)
def test_speed_options_keep_the_image(embedded_engine, options):
    plain = _pixels(embedded_engine)
    fast = _pixels(Engine(ModelLibrary([]), device="cpu", speed=options))
    assert np.abs(fast - plain).max() <= 2  # float rounding in another layout/kernel


def test_lora_works_on_a_fused_model(tmp_path):
    _save_lora(tmp_path / "loras", "strong")
    plain = Engine(ModelLibrary([tmp_path]), device="cpu")
    fused = Engine(ModelLibrary([tmp_path]), device="cpu", speed=SpeedOptions(fuse_qkv=True))
    lora = [LoraSpec("strong", 1.0)]
    with_lora = _pixels(fused, loras=lora)
    assert np.abs(with_lora - _pixels(plain, loras=lora)).max() <= 2
    assert np.abs(with_lora - _pixels(plain)).mean() > 1.0  # the LoRA did change the image
