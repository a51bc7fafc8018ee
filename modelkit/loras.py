"""Real LoRA files for tiny models, written by the tests and benchmarks that need one."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any


def write_test_lora(
    folder: Path,
    name: str,
    seed: int,
    unet: Any = None,
    scale: float = 0.5,
    metadata: dict[str, str] | None = None,
) -> Path:
    """A LoRA on a UNet's attention layers (the embedded model's unless `unet` is
    given), saved in diffusers format.

    peft initialises LoRA B matrices to zero (a no-op adapter), so every LoRA weight is
    filled with seeded noise times `scale`: the file then visibly changes the image.
    `metadata` is written into the safetensors header as training tools do
    (`ss_output_name`, `modelspec.title`, ...), for the detection that reads it.
    `name` may contain `/` (a LoRA in a subfolder, as artists sort them).
    """
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    from kd_server.tiny_model import build_embedded_pipeline

    unet = copy.deepcopy(unet) if unet is not None else build_embedded_pipeline().unet
    config = LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    unet = inject_adapter_in_model(config, unet, adapter_name="default")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param_name, param in unet.named_parameters():
            if "lora_" in param_name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    target = folder / f"{name}.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(
        str(target.parent),
        unet_lora_layers=get_peft_model_state_dict(unet, adapter_name="default"),
        weight_name=target.name,
    )
    if metadata:
        add_metadata(target, metadata)
    return target


def add_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Rewrite a safetensors file with `metadata` added to its header's `__metadata__`."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as handle:
        existing = dict(handle.metadata() or {})
    save_file(load_file(str(path)), str(path), metadata={**existing, **metadata})
