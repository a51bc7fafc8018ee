"""Flux and SD 3.5 components read from the files people share, one by one.

Why component by component: Flux.1 and SD 3.5 mostly come as ComfyUI split files (the
transformer, clip_l / clip_g / t5xxl and the VAE apart; the transformer in fp16, fp8 or
GGUF), and all-in-one checkpoints are the same parts under prefixes. Each part is read
alone (only its own tensors, from the safetensors header) and built with the family's
config folder (shipped, or a `<name>.config/` sidecar).

- Transformers: the original layout (BFL for Flux, SAI for SD3; optionally under
  ``model.diffusion_model.``) or diffusers'. SD3 files go through diffusers' own
  converter. Flux files are converted here: diffusers' converter assumes the full-size
  width (3072) when it splits the single blocks' fused projection, so it cannot read a
  Flux of another width (our tiny stand-ins, pruned "lite" models); ours reads the
  widths from the tensors. tests/engine/test_flux_sd3_loading.py checks that both give
  the same result at the real width. GGUF files (Q8_0 and the other types diffusers
  knows) stay quantised, dequantised per layer at compute time.
- Text encoders: Hugging Face key layout (as ComfyUI saves them), optionally under
  ``text_encoders.<part>.transformer.``; fp8 files are upcast (ComfyUI's scaled fp8
  ones with their per-tensor scales applied).
- VAE: the LDM layout (``encoder.down.0...``, optionally under ``vae.`` or
  ``first_stage_model.``) or diffusers'.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

Tensors = dict[str, Any]

TRANSFORMER_PREFIXES = ("model.diffusion_model.",)
TEXT_ENCODER_PREFIX = "text_encoders.{part}.transformer."
VAE_PREFIXES = ("vae.", "first_stage_model.")
#: Prefixes of the parts an all-in-one or partial file holds besides the transformer.
OTHER_PART_PREFIXES = (*VAE_PREFIXES, "text_encoders.", "cond_stage_model.", "conditioner.")
FP8_DTYPES = tuple(
    getattr(torch, name) for name in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, name)
)


class PartError(ValueError):
    """A component file that cannot be used; the message says which and why."""


# ------------------------------------------------------------------------ reading


def is_gguf(path: Path) -> bool:
    return path.suffix.lower() == ".gguf"


def read_tensors(
    path: Path, prefixes: tuple[str, ...] = (), prefix_required: bool = False
) -> Tensors:
    """The file's tensors. With `prefixes`: only those under the first prefix present,
    with it removed; when none is present, every tensor (a part's own file), or none
    if `prefix_required` (a part missing from an all-in-one checkpoint). GGUF files
    give GGUFParameters."""
    if is_gguf(path):
        from diffusers.models.model_loading_utils import load_gguf_checkpoint

        tensors: Tensors = load_gguf_checkpoint(str(path))
        prefix = _prefix_of(list(tensors), prefixes, prefix_required)
        if prefix is None:
            return {}
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())
        prefix = _prefix_of(keys, prefixes, prefix_required)
        if prefix is None:
            return {}
        return {
            key[len(prefix) :]: handle.get_tensor(key) for key in keys if key.startswith(prefix)
        }


def _prefix_of(keys: list[str], prefixes: tuple[str, ...], required: bool) -> str | None:
    found = next((p for p in prefixes if any(k.startswith(p) for k in keys)), None)
    if found is None and not required:
        return ""
    return found


def has_fp8(tensors: Tensors) -> bool:
    return any(getattr(t, "dtype", None) in FP8_DTYPES for t in tensors.values())


def _floating(tensors: Tensors, dtype: torch.dtype) -> Tensors:
    """Floating tensors in `dtype` (fp8 files upcast); others as they are.

    ComfyUI's "scaled" fp8 files store each matrix divided by a per-tensor
    ``<layer>.scale_weight`` (and mark themselves with a ``scaled_fp8`` tensor): the
    matrix is multiplied back, and the scales, input scales and the mark dropped.
    """
    out: Tensors = {}
    for key, value in tensors.items():
        if key == "scaled_fp8" or key.endswith((".scaled_fp8", ".scale_weight", ".scale_input")):
            continue
        if not torch.is_floating_point(value):
            out[key] = value
            continue
        value = value.to(dtype)
        if key.endswith(".weight"):
            scale = tensors.get(key[: -len("weight")] + "scale_weight")
            if scale is not None:
                value = value * scale.to(dtype)
        out[key] = value
    return out


# --------------------------------------------------------- Flux: BFL -> diffusers


def _halves_swapped(tensor: Any) -> Any:
    """BFL's final modulation is (shift, scale); diffusers' (scale, shift)."""
    shift, scale = tensor.chunk(2, dim=0)
    return torch.cat([scale, shift], dim=0)


_FLUX_TOP = {
    "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
    "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
    "txt_in": "context_embedder",
    "img_in": "x_embedder",
    "final_layer.linear": "proj_out",
}
_FLUX_DOUBLE = {
    "img_mod.lin": "norm1.linear",
    "txt_mod.lin": "norm1_context.linear",
    "img_mlp.0": "ff.net.0.proj",
    "img_mlp.2": "ff.net.2",
    "txt_mlp.0": "ff_context.net.0.proj",
    "txt_mlp.2": "ff_context.net.2",
    "img_attn.proj": "attn.to_out.0",
    "txt_attn.proj": "attn.to_add_out",
}
_FLUX_DOUBLE_NORMS = {
    "img_attn.norm.query_norm": "attn.norm_q",
    "img_attn.norm.key_norm": "attn.norm_k",
    "txt_attn.norm.query_norm": "attn.norm_added_q",
    "txt_attn.norm.key_norm": "attn.norm_added_k",
}


def is_flux_original(tensors: Tensors) -> bool:
    return any(key.startswith("double_blocks.") for key in tensors)


def _block_count(tensors: Tensors, prefix: str) -> int:
    numbers = {int(k.split(".")[1]) for k in tensors if k.startswith(prefix)}
    return max(numbers) + 1 if numbers else 0


def flux_to_diffusers(tensors: Tensors) -> Tensors:
    """A Flux transformer in BFL's layout (no prefix) -> diffusers' keys.

    The widths come from the tensors (img_in's rows are the inner width; the rest of a
    single block's fused projection is the MLP), so any width converts. Every tensor
    must be used: a leftover means a layout we do not know, and fails.
    """
    source = dict(tensors)
    out: Tensors = {}

    def take(name: str) -> Any:
        try:
            return source.pop(name)
        except KeyError:
            raise PartError(f"the Flux transformer has no tensor {name!r}") from None

    def linear(theirs: str, ours: str) -> None:
        for kind in ("weight", "bias"):
            if f"{theirs}.{kind}" in source:
                out[f"{ours}.{kind}"] = take(f"{theirs}.{kind}")

    def split(theirs: str, ours: list[str], sizes: list[int]) -> None:
        for kind in ("weight", "bias"):
            pieces = torch.split(take(f"{theirs}.{kind}"), sizes, dim=0)
            for name, piece in zip(ours, pieces, strict=True):
                out[f"{name}.{kind}"] = piece

    inner = source["img_in.weight"].shape[0]
    for theirs, ours in _FLUX_TOP.items():
        linear(theirs, ours)
    for kind in ("weight", "bias"):
        out[f"norm_out.linear.{kind}"] = _halves_swapped(
            take(f"final_layer.adaLN_modulation.1.{kind}")
        )
    for i in range(_block_count(tensors, "double_blocks.")):
        theirs, ours = f"double_blocks.{i}.", f"transformer_blocks.{i}."
        for a, b in _FLUX_DOUBLE.items():
            linear(theirs + a, ours + b)
        for a, b in _FLUX_DOUBLE_NORMS.items():
            out[f"{ours}{b}.weight"] = take(f"{theirs}{a}.scale")
        split(theirs + "img_attn.qkv", [f"{ours}attn.to_{p}" for p in "qkv"], [inner] * 3)
        split(theirs + "txt_attn.qkv", [f"{ours}attn.add_{p}_proj" for p in "qkv"], [inner] * 3)
    for i in range(_block_count(tensors, "single_blocks.")):
        theirs, ours = f"single_blocks.{i}.", f"single_transformer_blocks.{i}."
        linear(theirs + "modulation.lin", ours + "norm.linear")
        linear(theirs + "linear2", ours + "proj_out")
        out[f"{ours}attn.norm_q.weight"] = take(f"{theirs}norm.query_norm.scale")
        out[f"{ours}attn.norm_k.weight"] = take(f"{theirs}norm.key_norm.scale")
        mlp = source[f"{theirs}linear1.weight"].shape[0] - 3 * inner
        names = [f"{ours}attn.to_{p}" for p in "qkv"] + [f"{ours}proj_mlp"]
        split(theirs + "linear1", names, [inner, inner, inner, mlp])
    if source:
        unknown = ", ".join(sorted(source)[:5])
        raise PartError(f"the Flux transformer has tensors of an unknown layout: {unknown}")
    return out


# ------------------------------------------------------------------- components


#: Key beginnings of each architecture's transformer: original layout, then diffusers'.
_LAYOUT_MARKS = {
    "flux": ("double_blocks.", "single_transformer_blocks."),
    "sd3": ("joint_blocks.", "pos_embed.pos_embed"),
}


def transformer_class(architecture: str) -> Any:
    import diffusers

    name = "FluxTransformer2DModel" if architecture == "flux" else "SD3Transformer2DModel"
    return getattr(diffusers, name)


def load_transformer(path: Path, architecture: str, config_dir: Path, dtype: torch.dtype) -> Any:
    """The transformer of a split file or an all-in-one checkpoint (its
    ``model.diffusion_model.`` part), built with `config_dir`/transformer/config.json.
    GGUF files stay quantised (compute in `dtype`); fp8 files are upcast to `dtype`."""
    tensors = read_tensors(path, TRANSFORMER_PREFIXES)
    # a bare transformer may share its file with other parts (SAI's files carry the VAE)
    tensors = {k: v for k, v in tensors.items() if not k.startswith(OTHER_PART_PREFIXES)}
    if not tensors:
        raise PartError(f"{path.name} holds no transformer weights")
    marks = _LAYOUT_MARKS[architecture]
    if not any(key.startswith(marks) for key in tensors):
        name = "Flux" if architecture == "flux" else "SD 3.5"
        raise PartError(f"{path.name} does not hold a {name} transformer")
    kwargs: dict[str, Any] = {}
    if is_gguf(path):
        from diffusers import GGUFQuantizationConfig

        kwargs["quantization_config"] = GGUFQuantizationConfig(compute_dtype=dtype)
    else:
        tensors = _floating(tensors, dtype)  # fp8 upcast, scaled fp8 unscaled
    if architecture == "flux" and is_flux_original(tensors):
        tensors = flux_to_diffusers(tensors)
    try:
        model = transformer_class(architecture).from_single_file(
            tensors,
            config=str(config_dir),
            subfolder="transformer",
            local_files_only=True,
            torch_dtype=dtype,
            **kwargs,
        )
    except (KeyError, RuntimeError, ValueError) as exc:
        raise PartError(f"{path.name} does not fit the model's configuration ({exc})") from exc
    _check_loaded(model, path)
    return model


def _check_loaded(model: Any, path: Path) -> None:
    """diffusers leaves weights a file lacks on the meta device (or random): refuse."""
    for name, param in model.named_parameters():
        if param.device.type == "meta":
            raise PartError(f"{path.name} lacks the weights of {name}: not this architecture")


def _text_config(config_dir: Path, subfolder: str) -> Any:
    from transformers import AutoConfig

    folder = config_dir / subfolder
    if not (folder / "config.json").is_file():
        raise PartError(f"the config folder {config_dir} has no {subfolder}/config.json")
    return AutoConfig.from_pretrained(str(folder), local_files_only=True)


def _build_from_state(cls: Any, config: Any, tensors: Tensors, what: str) -> Any:
    """A transformers model with `tensors` as its weights, never randomly initialised
    (a real T5-XXL would take minutes); a weight the file lacks is an error."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = cls(config)
    wanted = model.state_dict()
    missing = [k for k in wanted if k not in tensors]
    model.load_state_dict(
        {k: v for k, v in tensors.items() if k in wanted}, strict=False, assign=True
    )
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    still_missing = [k for k in missing if model.state_dict()[k].device.type == "meta"]
    if still_missing:
        raise PartError(f"{what} lacks {len(still_missing)} weights, e.g. {still_missing[0]}")
    model.eval()
    return model


def load_clip(
    tensors: Tensors,
    config_dir: Path,
    subfolder: str,
    dtype: torch.dtype,
    what: str,
    with_projection: bool,
    identity_projection: bool = False,
) -> Any:
    """A CLIP text encoder from HF-layout tensors (``text_model.*``, maybe
    ``text_projection.weight``): CLIPTextModelWithProjection for SD 3.5's two,
    CLIPTextModel for Flux's. `identity_projection`: SD3's CLIP-L, whose pooled output is
    used unprojected (as diffusers and ComfyUI load it, whatever the file holds)."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    config = _text_config(config_dir, subfolder)
    state: Tensors = {}
    for key, tensor in _floating(tensors, dtype).items():
        if key.startswith("text_projection."):
            if with_projection:
                state[key] = tensor
            continue
        bare = key.removeprefix("text_model.")
        # transformers 5 nests the projection model's encoder under text_model., not the other
        state[("text_model." + bare) if with_projection else bare] = tensor
    if identity_projection:
        state["text_projection.weight"] = torch.eye(config.hidden_size, dtype=dtype)
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return _build_from_state(cls, config, state, what)


def load_t5(
    tensors: Tensors, config_dir: Path, subfolder: str, dtype: torch.dtype, what: str
) -> Any:
    """A T5 encoder from t5xxl-layout tensors (``shared.weight``, ``encoder.*``)."""
    from transformers import T5EncoderModel

    config = _text_config(config_dir, subfolder)
    state = _floating(tensors, dtype)
    if "encoder.embed_tokens.weight" not in state and "shared.weight" in state:
        state["encoder.embed_tokens.weight"] = state["shared.weight"]
    if dtype == torch.float16:
        # T5's feed-forward output overflows in float16: transformers keeps those layers
        # (`wo`) in float32 when it loads T5 itself; so do we (GPUs without bfloat16)
        kept = T5EncoderModel._keep_in_fp32_modules or []
        for key, tensor in state.items():
            if any(name in key.split(".") for name in kept):
                state[key] = tensor.float()
    return _build_from_state(T5EncoderModel, config, state, what)


def load_vae(tensors: Tensors, config_dir: Path, dtype: torch.dtype, what: str) -> Any:
    """An AutoencoderKL from LDM-layout (or diffusers-layout) tensors."""
    from diffusers import AutoencoderKL

    if not tensors:
        raise PartError(f"{what} holds no VAE weights")
    try:
        vae = AutoencoderKL.from_single_file(
            _floating(tensors, dtype),
            config=str(config_dir),
            subfolder="vae",
            local_files_only=True,
            torch_dtype=dtype,
        )
    except (KeyError, RuntimeError, ValueError) as exc:
        raise PartError(f"{what} is not a VAE of this model ({exc})") from exc
    for name, param in vae.named_parameters():
        if param.device.type == "meta":
            raise PartError(f"{what} lacks the VAE weights {name}: not this model's VAE")
    return vae
