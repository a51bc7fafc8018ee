"""Tiny Stable Diffusion pipelines written as single-file checkpoints in the original layout.

Why this exists: the product loads users' single-file checkpoints (the LDM / A1111 key
layout: ``model.diffusion_model.*``, ``first_stage_model.*``, ``cond_stage_model.*`` or
``conditioner.embedders.*``) with ``from_single_file``. Real checkpoints weigh gigabytes,
so the tests and benchmarks build tiny pipelines and write them in that layout themselves. diffusers
only converts LDM -> diffusers; the inverse (diffusers -> LDM) lives here.

The mapping is checked by a round trip: write, load with ``from_single_file``, compare
every tensor. Every parameter gets a small distinct perturbation when built, so two
tensors of the same shape that a wrong mapping swapped (two layer norms, q and k) can
never compare equal by accident.
"""

from __future__ import annotations

import json
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    DiffusionPipeline,
    EulerDiscreteScheduler,
    PNDMScheduler,
    UNet2DConditionModel,
)
from safetensors.torch import save_file
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)

from kd_server.assembly import Components, assemble_pipeline
from kd_server.families import Family

FAMILIES = ("sd15", "sd15-inpaint", "sdxl", "sdxl-inpaint")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_TOKENIZER = REPO_ROOT / "resources" / "tokenizer"

CLIP_VOCAB_SIZE = 49408
CLIP_MAX_LENGTH = 77
START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
# Hidden sizes of the two SDXL text encoders. They must differ: diffusers tells the two
# encoders in one file apart by the width of their position embeddings.
TEXT_HIDDEN = 32
TEXT2_HIDDEN = 64
TEXT2_PROJECTION = 32
# diffusers' detector for SDXL looks for resblock 9 of the OpenCLIP encoder; ten cheap
# layers make the tiny SDXL file detectable the way a real one is.
TEXT2_LAYERS = 10
ADDITION_TIME_EMBED_DIM = 8
# Size of the perturbation added to every parameter (see the module docstring).
PERTURBATION = 0.01

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD15_CLIP_PREFIX = "cond_stage_model.transformer.text_model."
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer.text_model."
SDXL_OPENCLIP_PREFIX = "conditioner.embedders.1.model."

Tensors = dict[str, torch.Tensor]


# --------------------------------------------------------------------------- building


def _is_xl(family: str) -> bool:
    return family.startswith("sdxl")


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")


def _write_byte_level_tokenizer(folder: Path) -> tuple[Path, Path]:
    """A CLIP vocabulary with no merges: enough to tokenize, when the real one is absent."""
    chars = _byte_unicode_chars()
    tokens = chars + [c + "</w>" for c in chars] + [START_TOKEN, END_TOKEN]
    vocab = {token: index for index, token in enumerate(tokens)}
    vocab_path = folder / "vocab.json"
    merges_path = folder / "merges.txt"
    vocab_path.write_text(json.dumps(vocab), encoding="utf-8")
    merges_path.write_text("#version: 0.2\n", encoding="utf-8")
    return vocab_path, merges_path


def _byte_unicode_chars() -> list[str]:
    """The 256 printable stand-ins for bytes that byte-level BPE vocabularies use."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


@lru_cache(maxsize=1)
def tokenizer_files() -> tuple[str, str]:
    """The shipped tokenizer files, or a byte-level stand-in built once per process."""
    vocab = SHIPPED_TOKENIZER / "vocab.json"
    merges = SHIPPED_TOKENIZER / "merges.txt"
    if vocab.is_file() and merges.is_file():
        return str(vocab), str(merges)
    folder = Path(tempfile.mkdtemp(prefix="tiny-clip-tokenizer-"))
    made_vocab, made_merges = _write_byte_level_tokenizer(folder)
    return str(made_vocab), str(made_merges)


def make_tokenizer(pad_token: str = END_TOKEN) -> CLIPTokenizer:
    """A CLIP tokenizer; SDXL's second one pads with "!" instead of the end token."""
    vocab, merges = tokenizer_files()
    return CLIPTokenizer(vocab, merges, pad_token=pad_token, model_max_length=CLIP_MAX_LENGTH)


def _unet_config(family: str) -> dict[str, Any]:
    in_channels = 9 if family.endswith("inpaint") else 4
    common: dict[str, Any] = {
        "sample_size": 32,
        "in_channels": in_channels,
        "out_channels": 4,
        "block_out_channels": (32, 64),
        "layers_per_block": 1,
        "attention_head_dim": 8,
        "norm_num_groups": 32,
    }
    if not _is_xl(family):
        return common | {
            "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
            "cross_attention_dim": TEXT_HIDDEN,
        }
    # SDXL: the UNet attends to both encoders' hidden states side by side, and its added
    # embedding takes the pooled projection plus six size/crop numbers.
    return common | {
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "cross_attention_dim": TEXT_HIDDEN + TEXT2_HIDDEN,
        "transformer_layers_per_block": (1, 2),
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": ADDITION_TIME_EMBED_DIM,
        "projection_class_embeddings_input_dim": 6 * ADDITION_TIME_EMBED_DIM + TEXT2_PROJECTION,
    }


def _vae(family: str) -> AutoencoderKL:
    """Four levels keep the latent factor 8, which the product's speed relies on."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32,) * 4,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
        scaling_factor=0.13025 if _is_xl(family) else 0.18215,
    )


def clip_config(hidden: int, layers: int, act: str, projection: int) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=CLIP_VOCAB_SIZE,
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=CLIP_MAX_LENGTH,
        hidden_act=act,
        projection_dim=projection,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )


def _scheduler(family: str) -> PNDMScheduler | EulerDiscreteScheduler:
    """The schedulers the real pipelines ship with, with SD's beta schedule."""
    betas: dict[str, Any] = {
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "steps_offset": 1,
    }
    if _is_xl(family):
        return EulerDiscreteScheduler(**betas, timestep_spacing="leading")
    return PNDMScheduler(**betas, skip_prk_steps=True, set_alpha_to_one=False)


def _perturb(module: torch.nn.Module) -> None:
    """Make every parameter distinct (see the module docstring); keeps outputs sane."""
    with torch.no_grad():
        for param in module.parameters():
            param.add_(torch.randn_like(param) * PERTURBATION)


def build_tiny_components(family: str, seed: int = 0) -> Any:
    """A tiny pipeline of the given family, the same for the same seed.

    The global torch RNG is left as it was, so building does not shift other tests' seeds.
    """
    _check_family(family)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**_unet_config(family))
        vae = _vae(family)
        text_encoder = CLIPTextModel(clip_config(TEXT_HIDDEN, 2, "quick_gelu", TEXT_HIDDEN))
        modules: list[Any] = [unet, vae, text_encoder]
        if _is_xl(family):
            text_encoder_2 = CLIPTextModelWithProjection(
                clip_config(TEXT2_HIDDEN, TEXT2_LAYERS, "gelu", TEXT2_PROJECTION)
            )
            modules.append(text_encoder_2)
        for module in modules:
            _perturb(module)
            module.eval()
    return _assemble(family, unet, vae, text_encoder, modules)


def _assemble(family: str, unet: Any, vae: Any, text_encoder: Any, modules: list[Any]) -> Any:
    parts = Components(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=make_tokenizer(),
        scheduler=_scheduler(family),
    )
    if _is_xl(family):
        parts.text_encoder_2, parts.tokenizer_2 = modules[3], make_tokenizer(pad_token="!")
    return assemble_pipeline(Family(family), parts)


# ------------------------------------------------------------------ config folder


def clip_tokenizer_settings(tokenizer: CLIPTokenizer) -> dict[str, Any]:
    return {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": tokenizer.model_max_length,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
        "bos_token": str(tokenizer.bos_token),
        "eos_token": str(tokenizer.eos_token),
        "unk_token": str(tokenizer.unk_token),
        "pad_token": str(tokenizer.pad_token),
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def save_config_folder(pipe: Any, folder: str | Path) -> Path:
    """Write the pipeline's diffusers config folder, without weights or vocabularies.

    This is the sidecar ``<stem>.config/`` the product reads when a checkpoint's
    architecture is not one of the shipped full-size ones. Tokenizer folders hold only
    their settings, like the shipped configs: the product passes its own tokenizers.
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    pipe.save_config(root)
    for name, component in pipe.components.items():
        if component is None:
            continue
        target = root / name
        if isinstance(component, CLIPTokenizer):
            config = clip_tokenizer_settings(component)
            special = {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
            write_json(target / "tokenizer_config.json", config)
            write_json(target / "special_tokens_map.json", special)
        elif hasattr(component, "save_config"):
            component.save_config(target)
        else:
            target.mkdir(parents=True, exist_ok=True)
            component.config.save_pretrained(target)
    return root


# ------------------------------------------------------------------ UNet to LDM

_UNET_RESNET_PARTS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}


def _unet_prefixes(config: Any) -> dict[str, str]:
    """diffusers module prefix -> LDM module prefix, from the UNet's block layout.

    LDM numbers its blocks flat: ``input_blocks`` are conv_in, then per level
    ``layers_per_block`` (resnet, attention) pairs and a downsampler; ``output_blocks``
    have one more pair per level, with the upsampler after the attention if any.
    """
    per_level = config.layers_per_block
    levels = len(config.block_out_channels)
    prefixes = {
        "conv_in": "input_blocks.0.0",
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "add_embedding.linear_1": "label_emb.0.0",
        "add_embedding.linear_2": "label_emb.0.2",
        "mid_block.resnets.0": "middle_block.0",
        "mid_block.attentions.0": "middle_block.1",
        "mid_block.resnets.1": "middle_block.2",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
    }
    for level in range(levels):
        first = 1 + level * (per_level + 1)
        for layer in range(per_level):
            prefixes[f"down_blocks.{level}.resnets.{layer}"] = f"input_blocks.{first + layer}.0"
            prefixes[f"down_blocks.{level}.attentions.{layer}"] = f"input_blocks.{first + layer}.1"
        if level < levels - 1:
            down = f"input_blocks.{first + per_level}.0.op"
            prefixes[f"down_blocks.{level}.downsamplers.0.conv"] = down
    for level, block_type in enumerate(config.up_block_types):
        first = level * (per_level + 1)
        for layer in range(per_level + 1):
            prefixes[f"up_blocks.{level}.resnets.{layer}"] = f"output_blocks.{first + layer}.0"
            prefixes[f"up_blocks.{level}.attentions.{layer}"] = f"output_blocks.{first + layer}.1"
        if level < levels - 1:
            slot = 2 if "CrossAttn" in block_type else 1
            up = f"output_blocks.{first + per_level}.{slot}.conv"
            prefixes[f"up_blocks.{level}.upsamplers.0.conv"] = up
    return prefixes


def _split_prefix(key: str, prefixes: dict[str, str]) -> tuple[str, str]:
    """The longest known module prefix of ``key`` and the rest; unknown keys are errors."""
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:cut])
        if head in prefixes:
            return head, ".".join(parts[cut:])
    raise KeyError(f"no LDM name for {key!r}")


def _rename_first(rest: str, names: dict[str, str]) -> str:
    first, _, tail = rest.partition(".")
    return f"{names.get(first, first)}.{tail}" if tail else names.get(first, first)


def unet_to_ldm(unet: Any) -> Tensors:
    """UNet weights under ``model.diffusion_model.*``; attention internals keep their names."""
    prefixes = _unet_prefixes(unet.config)
    out: Tensors = {}
    for key, tensor in unet.state_dict().items():
        head, rest = _split_prefix(key, prefixes)
        if ".resnets." in head:
            rest = _rename_first(rest, _UNET_RESNET_PARTS)
        out[f"{UNET_PREFIX}{prefixes[head]}.{rest}"] = tensor
    return out


# ------------------------------------------------------------------- VAE to LDM

_VAE_ATTENTION_PARTS = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out": "proj_out",
}


def _vae_prefixes(config: Any) -> dict[str, str]:
    """diffusers VAE module prefix -> LDM prefix; LDM numbers decoder levels bottom-up."""
    levels = len(config.block_out_channels)
    prefixes = {"quant_conv": "quant_conv", "post_quant_conv": "post_quant_conv"}
    for side in ("encoder", "decoder"):
        prefixes[f"{side}.conv_in"] = f"{side}.conv_in"
        prefixes[f"{side}.conv_out"] = f"{side}.conv_out"
        prefixes[f"{side}.conv_norm_out"] = f"{side}.norm_out"
        prefixes[f"{side}.mid_block.resnets.0"] = f"{side}.mid.block_1"
        prefixes[f"{side}.mid_block.resnets.1"] = f"{side}.mid.block_2"
        prefixes[f"{side}.mid_block.attentions.0"] = f"{side}.mid.attn_1"
    for level in range(levels):
        down, up = f"encoder.down_blocks.{level}", f"decoder.up_blocks.{level}"
        ldm_up = f"decoder.up.{levels - 1 - level}"
        for layer in range(config.layers_per_block + 1):
            prefixes[f"{down}.resnets.{layer}"] = f"encoder.down.{level}.block.{layer}"
            prefixes[f"{up}.resnets.{layer}"] = f"{ldm_up}.block.{layer}"
        prefixes[f"{down}.downsamplers.0.conv"] = f"encoder.down.{level}.downsample.conv"
        prefixes[f"{up}.upsamplers.0.conv"] = f"{ldm_up}.upsample.conv"
    return prefixes


def _vae_attention_entry(rest: str, tensor: torch.Tensor) -> tuple[str, torch.Tensor]:
    """LDM's VAE attention uses 1x1 convolutions where diffusers uses linear layers."""
    name = _rename_first(rest, _VAE_ATTENTION_PARTS).replace("proj_out.0.", "proj_out.")
    if tensor.ndim == 2:
        tensor = tensor[:, :, None, None]
    return name, tensor


def vae_to_ldm(vae: Any) -> Tensors:
    """VAE weights under ``first_stage_model.*``."""
    prefixes = _vae_prefixes(vae.config)
    out: Tensors = {}
    for key, tensor in vae.state_dict().items():
        head, rest = _split_prefix(key, prefixes)
        if head.endswith("attentions.0"):
            rest, tensor = _vae_attention_entry(rest, tensor)
        elif ".resnets." in head:
            rest = _rename_first(rest, {"conv_shortcut": "nin_shortcut"})
        out[f"{VAE_PREFIX}{prefixes[head]}.{rest}"] = tensor
    return out


# ----------------------------------------------------------- text encoders to LDM


def _text_model_state(model: torch.nn.Module) -> Tensors:
    """State dict keyed as inside ``text_model``.

    transformers >= 5.6 flattened CLIPTextModel (no ``text_model.`` level), while
    CLIPTextModelWithProjection still has it; this hides the difference.
    """
    state: Tensors = {}
    for key, tensor in model.state_dict().items():
        state[key.removeprefix("text_model.")] = tensor
    return state


def clip_to_ldm(model: CLIPTextModel, prefix: str) -> Tensors:
    """A transformers CLIP text model kept in its own layout under an LDM prefix."""
    state = _text_model_state(model)
    return {
        f"{prefix}{key}": tensor
        for key, tensor in state.items()
        if not key.endswith("position_ids")
    }


_OPENCLIP_LAYER_PARTS = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "self_attn.out_proj": "attn.out_proj",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}


def _openclip_layer(index: int, state: Tensors) -> Tensors:
    """One transformer layer; OpenCLIP keeps q, k, v as one stacked in_proj."""
    src = f"encoder.layers.{index}."
    dst = f"transformer.resblocks.{index}."
    out: Tensors = {}
    for kind in ("weight", "bias"):
        stacked = [state[f"{src}self_attn.{p}_proj.{kind}"] for p in "qkv"]
        out[f"{dst}attn.in_proj_{kind}"] = torch.cat(stacked, dim=0)
        for ours, theirs in _OPENCLIP_LAYER_PARTS.items():
            out[f"{dst}{theirs}.{kind}"] = state[f"{src}{ours}.{kind}"]
    return out


def openclip_to_ldm(model: CLIPTextModelWithProjection, prefix: str) -> Tensors:
    """SDXL's second encoder in OpenCLIP layout, as SDXL checkpoints store it."""
    state = _text_model_state(model)
    out: Tensors = {
        "token_embedding.weight": state["embeddings.token_embedding.weight"],
        "positional_embedding": state["embeddings.position_embedding.weight"],
        "ln_final.weight": state["final_layer_norm.weight"],
        "ln_final.bias": state["final_layer_norm.bias"],
        # OpenCLIP multiplies x @ text_projection: the transpose of a Linear weight.
        "text_projection": state["text_projection.weight"].T,
    }
    for index in range(model.config.num_hidden_layers):
        out.update(_openclip_layer(index, state))
    return {f"{prefix}{key}": tensor for key, tensor in out.items()}


# ------------------------------------------------------------------------ writing


def ldm_state_dict(pipe: Any) -> Tensors:
    """The whole pipeline in the original single-file layout (not yet cast or copied)."""
    tensors: Tensors = {}
    tensors.update(unet_to_ldm(pipe.unet))
    tensors.update(vae_to_ldm(pipe.vae))
    text_encoder_2 = getattr(pipe, "text_encoder_2", None)
    if text_encoder_2 is None:
        tensors.update(clip_to_ldm(pipe.text_encoder, SD15_CLIP_PREFIX))
    else:
        tensors.update(clip_to_ldm(pipe.text_encoder, SDXL_CLIP_PREFIX))
        tensors.update(openclip_to_ldm(text_encoder_2, SDXL_OPENCLIP_PREFIX))
    return tensors


def write_ldm_checkpoint(
    pipe: DiffusionPipeline,
    path: str | Path,
    dtype: torch.dtype = torch.float16,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Save the pipeline as one ``.safetensors`` file in the original key layout.

    fp16 is the default because that is what users' files usually are. `metadata` goes
    into the header beside `format` (merging tools record e.g. `modelspec.title`).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        key: tensor.detach().to(device="cpu", dtype=dtype).contiguous().clone()
        for key, tensor in ldm_state_dict(pipe).items()
    }
    save_file(tensors, str(target), metadata={"format": "pt", **(metadata or {})})
    return target
