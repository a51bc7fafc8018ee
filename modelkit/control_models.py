"""Tiny control models written as the files artists download, for the tests and benches.

Each one is a deterministic, tiny instance of the real architecture, saved in the
real files' key layout, so the product detects and loads it through the same code as
a downloaded file:

- ControlNet: derived from a tiny UNet like real ones are (``from_unet``: a copy of the
  UNet's encoder plus the hint encoder and zero convolutions). SD 1.5 ControlNets are
  written in the original (A1111 / ``lllyasviel``) layout, SDXL ones in diffusers
  layout, as the files people have are. A union ControlNet (xinsir's architecture) too.
- IP-Adapter: the image projection and the per-layer ``to_k_ip``/``to_v_ip`` weights for
  a UNet's cross-attention layers, with the tiny CLIP image encoder it reads.
- Depth estimator: Depth Anything (a DINOv2 backbone, neck and head) in transformers
  layout, with its image processor settings.

Trained ControlNets and IP-Adapters are not no-ops, but freshly built ones are (zero
convolutions, zero-initialised projections): every such weight is filled with seeded
noise so the file visibly changes a picture. The sizes a real file's config would
give are written beside it as a sidecar folder ``<name>.config/``, which the product
reads instead of its shipped full-size config.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from safetensors.torch import save_file

from kd_server.families import resources_dir
from modelkit.ldm_layout import _rename_first, _split_prefix, _unet_prefixes

Tensors = dict[str, torch.Tensor]

#: How strongly the zero-initialised control weights are filled (see the docstring).
CONTROL_SCALE = 0.5
HINT_CHANNELS = (8, 16, 16, 32)  # four stages, as real hint encoders have
HINT_GAIN = 10.0  # see _fill_control_outputs
_RESNET_PARTS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}


def _save(tensors: Tensors, path: Path, dtype: torch.dtype = torch.float16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = {k: v.detach().to("cpu", dtype=dtype).contiguous().clone() for k, v in tensors.items()}
    save_file(out, str(path), metadata={"format": "pt"})
    return path


def _fill(module: torch.nn.Module, generator: torch.Generator, scale: float) -> None:
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * scale)


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".config")


def embedded_unet() -> Any:
    """The embedded model's UNet, the one the product's default checkpoint runs."""
    from kd_server.tiny_model import build_embedded_pipeline

    return build_embedded_pipeline().unet


# -------------------------------------------------------------------------- ControlNet


def build_controlnet(unet: Any, seed: int) -> Any:
    """A ControlNet derived from `unet`, its zero convolutions filled with noise."""
    from diffusers import ControlNetModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        controlnet = ControlNetModel.from_unet(
            unet, conditioning_embedding_out_channels=HINT_CHANNELS
        )
    _fill_control_outputs(controlnet, seed)
    return controlnet.eval()


def _fill_control_outputs(controlnet: Any, seed: int) -> None:
    """Trained weights where training would have put them: a hint encoder that passes
    the image on (He-initialised, no bias: PyTorch's default shrinks the signal layer by
    layer until the biases alone speak, and every image would steer alike), and zero
    convolutions that are no longer zero."""
    generator = torch.Generator().manual_seed(seed)
    hint = controlnet.controlnet_cond_embedding
    with torch.no_grad():
        for conv in (hint.conv_in, *hint.blocks, hint.conv_out):
            scale = (2.0 / conv.weight[0].numel()) ** 0.5
            if conv is hint.conv_out:  # as strong as the latent features it is added to
                scale *= HINT_GAIN
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * scale)
            conv.bias.zero_()
    for module in (controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block):
        _fill(module, generator, CONTROL_SCALE)


def controlnet_to_ldm(controlnet: Any) -> Tensors:
    """A ControlNet in the original layout (``input_hint_block``, ``zero_convs``), as
    lllyasviel's ControlNet 1.1 files and their fp16 safetensors copies store it."""
    config = controlnet.config
    prefixes = _unet_prefixes(
        SimpleNamespace(
            layers_per_block=config.layers_per_block,
            block_out_channels=config.block_out_channels,
            up_block_types=(),
        )
    )
    hint = controlnet.controlnet_cond_embedding
    prefixes["controlnet_cond_embedding.conv_in"] = "input_hint_block.0"
    prefixes["controlnet_cond_embedding.conv_out"] = "input_hint_block.14"
    for index in range(len(hint.blocks)):
        prefixes[f"controlnet_cond_embedding.blocks.{index}"] = f"input_hint_block.{2 * index + 2}"
    for index in range(len(controlnet.controlnet_down_blocks)):
        prefixes[f"controlnet_down_blocks.{index}"] = f"zero_convs.{index}.0"
    prefixes["controlnet_mid_block"] = "middle_block_out.0"
    out: Tensors = {}
    for key, tensor in controlnet.state_dict().items():
        head, rest = _split_prefix(key, prefixes)
        if ".resnets." in head:
            rest = _rename_first(rest, _RESNET_PARTS)
        out[f"{prefixes[head]}.{rest}"] = tensor
    return out


def write_controlnet(folder: Path, name: str, unet: Any, seed: int, layout: str = "ldm") -> Path:
    """`<folder>/<name>.safetensors` (+ its sidecar config): a tiny ControlNet for the
    model whose UNet is `unet`, in the "ldm" or "diffusers" key layout."""
    controlnet = build_controlnet(unet, seed)
    path = folder / f"{name}.safetensors"
    tensors = controlnet_to_ldm(controlnet) if layout == "ldm" else controlnet.state_dict()
    _save(tensors, path)
    controlnet.save_config(_sidecar(path))
    return path


def build_union_controlnet(unet: Any, seed: int, control_types: int = 8) -> Any:
    """A union ControlNet (one network, a control type per image) for an SDXL UNet."""
    from diffusers import ControlNetUnionModel

    unet_config = unet.config
    width = unet_config.block_out_channels[0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        union: Any = ControlNetUnionModel(
            in_channels=unet_config.in_channels,
            down_block_types=unet_config.down_block_types,
            block_out_channels=unet_config.block_out_channels,
            layers_per_block=unet_config.layers_per_block,
            norm_num_groups=unet_config.norm_num_groups,
            cross_attention_dim=unet_config.cross_attention_dim,
            transformer_layers_per_block=unet_config.transformer_layers_per_block,
            attention_head_dim=unet_config.attention_head_dim,
            use_linear_projection=unet_config.use_linear_projection,
            addition_embed_type=unet_config.addition_embed_type,
            addition_time_embed_dim=unet_config.addition_time_embed_dim,
            projection_class_embeddings_input_dim=unet_config.projection_class_embeddings_input_dim,
            conditioning_embedding_out_channels=HINT_CHANNELS,
            num_trans_channel=width,
            num_trans_head=4,
            num_proj_channel=width,
            num_control_type=control_types,
        )
        union.down_blocks.load_state_dict(unet.down_blocks.state_dict(), strict=False)
        union.mid_block.load_state_dict(unet.mid_block.state_dict(), strict=False)
    generator = torch.Generator().manual_seed(seed)
    _fill_control_outputs(union, seed)
    _fill(union.spatial_ch_projs, generator, CONTROL_SCALE)
    return union.eval()


def write_union_controlnet(folder: Path, name: str, unet: Any, seed: int) -> Path:
    """A tiny union ControlNet in diffusers layout, as xinsir's files are."""
    union = build_union_controlnet(unet, seed)
    path = _save(union.state_dict(), folder / f"{name}.safetensors")
    union.save_config(_sidecar(path))
    return path


# ------------------------------------------------------------------ IP-Adapter, encoder

IMAGE_SIZE = 32  # the tiny encoder's input side; real ones take 224
ENCODER_HIDDEN = 32
ENCODER_PROJECTION = 16
IMAGE_TOKENS = 4  # plain IP-Adapters add four image tokens to the text's


def build_image_encoder(seed: int) -> Any:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=ENCODER_HIDDEN,
        intermediate_size=2 * ENCODER_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        projection_dim=ENCODER_PROJECTION,
        image_size=IMAGE_SIZE,
        patch_size=8,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPVisionModelWithProjection(config).eval()


def write_image_encoder(folder: Path, name: str, seed: int) -> Path:
    """A tiny CLIP vision encoder in transformers layout (ComfyUI's clip_vision files)."""
    encoder = build_image_encoder(seed)
    path = _save(encoder.state_dict(), folder / f"{name}.safetensors")
    sidecar = _sidecar(path)
    sidecar.mkdir(parents=True, exist_ok=True)
    encoder.config.to_json_file(str(sidecar / "config.json"))
    return path


def ip_adapter_tensors(unet: Any, seed: int, scale: float = CONTROL_SCALE) -> Tensors:
    """A plain IP-Adapter for `unet`: the image projection (4 tokens) and the key and
    value projections of each cross-attention layer, numbered as the original files
    number them (1, 3, 5 ...: the odd attention processors are the cross-attentions)."""
    generator = torch.Generator().manual_seed(seed)
    context = unet.config.cross_attention_dim

    def noise(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator) * scale

    tensors: Tensors = {
        "image_proj.proj.weight": noise(IMAGE_TOKENS * context, ENCODER_PROJECTION),
        "image_proj.proj.bias": noise(IMAGE_TOKENS * context),
        "image_proj.norm.weight": torch.ones(context),
        "image_proj.norm.bias": torch.zeros(context),
    }
    modules = dict(unet.named_modules())
    key_id = 1
    for name in unet.attn_processors:
        if not name.endswith("attn2.processor"):
            continue
        width = modules[name.removesuffix(".processor")].to_k.weight.shape[0]
        tensors[f"ip_adapter.{key_id}.to_k_ip.weight"] = noise(width, context)
        tensors[f"ip_adapter.{key_id}.to_v_ip.weight"] = noise(width, context)
        key_id += 2
    return tensors


def write_ip_adapter(folder: Path, name: str, unet: Any, seed: int) -> Path:
    """`<folder>/<name>.safetensors`: a tiny plain IP-Adapter for `unet` in the layout of
    h94's ip-adapter_sd15.safetensors. Its encoder: `write_image_encoder`."""
    return _save(ip_adapter_tensors(unet, seed), folder / f"{name}.safetensors")


# ---------------------------------------------------------------------- depth estimator

DEPTH_IMAGE_SIZE = 56  # multiple of the patch size 14; real ones work at 518


def build_depth_estimator(seed: int) -> Any:
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(  # type: ignore[call-arg]
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        mlp_ratio=2,
        image_size=DEPTH_IMAGE_SIZE,
        patch_size=14,
        out_features=["stage1", "stage2", "stage3", "stage4"],
        out_indices=[1, 2, 3, 4],
        reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=32,
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
        head_hidden_size=8,
        patch_size=14,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DepthAnythingForDepthEstimation(config).eval()
    _he_initialise(model, seed)
    return model


def _he_initialise(model: torch.nn.Module, seed: int) -> None:
    """He-initialised weights, no biases: with the default ones this deep a tiny net
    answers every picture with the same flat output, as a trained one never does."""
    generator = torch.Generator().manual_seed(seed)
    layers = (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, layers):
                scale = (2.0 / module.weight[0].numel()) ** 0.5
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * scale)
                if module.bias is not None:
                    module.bias.zero_()


def write_depth_estimator(folder: Path, name: str, seed: int) -> Path:
    """A tiny Depth Anything in transformers layout, its config and image processor
    settings in the sidecar folder."""
    model = build_depth_estimator(seed)
    path = _save(model.state_dict(), folder / f"{name}.safetensors", dtype=torch.float32)
    sidecar = _sidecar(path)
    sidecar.mkdir(parents=True, exist_ok=True)
    model.config.to_json_file(str(sidecar / "config.json"))
    # the shipped image processor of the real estimator, at the stand-in's size
    shipped = resources_dir() / "model-configs" / "depth-anything-v2-small"
    processor = json.loads((shipped / "preprocessor_config.json").read_text())
    processor["size"] = {"height": DEPTH_IMAGE_SIZE, "width": DEPTH_IMAGE_SIZE}
    (sidecar / "preprocessor_config.json").write_text(json.dumps(processor, indent=2))
    return path
