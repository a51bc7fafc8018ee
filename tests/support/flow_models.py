"""Tiny Flux.1 and SD 3.5 checkpoints and Flux LoRAs on disk, for the engine, v1 and
A1111 tests of the flow-matching families.

The pipelines are `modelkit.flux_sd3`'s (the real classes, tiny widths), saved as
diffusers folders where the library finds checkpoints. The LoRAs are made the way
trainers make them: peft's `inject_adapter_in_model` on the tiny transformer, its
lora_B filled with seeded noise (peft starts it at zero, which would change nothing),
then saved in three key layouts artists meet:

- diffusers / ai-toolkit: `transformer.transformer_blocks.0.attn.to_out.0.lora_A.weight`
- kohya (sd-scripts): `lora_unet_double_blocks_0_img_attn_proj.lora_down.weight` + `.alpha`
- ComfyUI / BFL names with peft's suffixes:
  `diffusion_model.double_blocks.0.img_attn.proj.lora_A.weight`

The adapter covers layers that map one to one between the layouts (the attention
outputs of the double blocks and the single blocks' output projection), so the three
files hold the same LoRA.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

#: Library name -> (builder, kind) of `modelkit.flux_sd3`.
FLOW_MODELS: dict[str, tuple[str, str]] = {
    "tiny-flux-dev": ("flux", "dev"),
    "tiny-flux-schnell": ("flux", "schnell"),
    "tiny-flux-fill": ("flux", "fill"),
    "tiny-sd35-medium": ("sd35", "medium"),
    "tiny-sd35-large": ("sd35", "large"),
}

#: The layers the test LoRA adapts (diffusers names), as a peft target regex.
LORA_TARGETS = (
    r".*(transformer_blocks\.\d+\.attn\.(to_out\.0|to_add_out)"
    r"|single_transformer_blocks\.\d+\.proj_out)$"
)
#: diffusers module name -> kohya / BFL module name (underscored; BFL has dots)
_BFL_NAMES = (
    (r"^transformer_blocks\.(\d+)\.attn\.to_out\.0$", r"double_blocks.\1.img_attn.proj"),
    (r"^transformer_blocks\.(\d+)\.attn\.to_add_out$", r"double_blocks.\1.txt_attn.proj"),
    (r"^single_transformer_blocks\.(\d+)\.proj_out$", r"single_blocks.\1.linear2"),
)
LORA_LAYOUTS = ("diffusers", "kohya", "comfyui")


def build(name: str) -> object:
    from modelkit.flux_sd3 import build_tiny_flux, build_tiny_sd35

    builder, kind = FLOW_MODELS[name]
    return build_tiny_flux(kind) if builder == "flux" else build_tiny_sd35(kind)  # type: ignore[arg-type]


def write_flow_models(folder: Path, names: tuple[str, ...] = tuple(FLOW_MODELS)) -> Path:
    """The named tiny checkpoints as diffusers folders in `folder`."""
    for name in names:
        build(name).save_pretrained(folder / name)  # type: ignore[attr-defined]
    return folder


def flux_lora_tensors(rank: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """A LoRA of the tiny Flux transformer under peft's names (no prefix)."""
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    from modelkit.flux_sd3 import build_tiny_flux

    transformer = build_tiny_flux("dev").transformer
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=LORA_TARGETS)
    inject_adapter_in_model(config, transformer)
    generator = torch.Generator().manual_seed(seed)
    state = get_peft_model_state_dict(transformer)
    return {
        key: (torch.randn(value.shape, generator=generator) * 0.5).contiguous()
        for key, value in state.items()
    }


def write_sd3_lora(folder: Path, name: str, seed: int = 0, rank: int = 4) -> Path:
    """A diffusers-keyed LoRA of the tiny SD 3.5 medium transformer's attention
    projections (`transformer.transformer_blocks.0.attn.to_q.lora_A.weight`)."""
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
    from safetensors.torch import save_file

    from modelkit.flux_sd3 import build_tiny_sd35

    transformer = build_tiny_sd35("medium").transformer
    targets = ["to_q", "to_k", "to_v", "to_out.0"]
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=targets)
    inject_adapter_in_model(config, transformer)
    generator = torch.Generator().manual_seed(seed)
    tensors = {
        f"transformer.{key}": (torch.randn(value.shape, generator=generator) * 0.5).contiguous()
        for key, value in get_peft_model_state_dict(transformer).items()
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.safetensors"
    save_file(tensors, str(path))
    return path


def _bfl_module(module: str) -> str:
    for pattern, replacement in _BFL_NAMES:
        if re.match(pattern, module):
            return re.sub(pattern, replacement, module)
    raise KeyError(module)


def in_layout(tensors: dict[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    """`flux_lora_tensors` under one of `LORA_LAYOUTS`' key names."""
    if layout == "diffusers":
        return {f"transformer.{key}": value for key, value in tensors.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        module, suffix = key.split(".lora_", 1)  # suffix: "A.weight" / "B.weight"
        bfl = _bfl_module(module)
        if layout == "comfyui":
            out[f"diffusion_model.{bfl}.lora_{suffix}"] = value
            continue
        kohya = "lora_unet_" + bfl.replace(".", "_")
        part = "lora_down" if suffix.startswith("A") else "lora_up"
        out[f"{kohya}.{part}.weight"] = value
        rank = value.shape[0] if part == "lora_down" else value.shape[1]
        out[f"{kohya}.alpha"] = torch.tensor(float(rank))  # alpha = rank: scale 1
    return out


def write_flux_lora(folder: Path, name: str, layout: str, seed: int = 0) -> Path:
    """The test LoRA as `folder/name.safetensors` in `layout`."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.safetensors"
    save_file(in_layout(flux_lora_tensors(seed=seed), layout), str(path))
    return path
