"""Tiny Flux.1 and SD 3.5 pipelines of the real architectures, built in memory.

Why this exists: real Flux / SD 3.5 checkpoints weigh 5-24 GB and a step takes minutes on
a CPU. The tests (and the GPU benchmark's shape checks) need pipelines of the same
classes, with the same key layouts in their files, that run txt2img 64x64 in well under
a second. Every parameter gets a small distinct perturbation with a fixed seed (as in
`modelkit.ldm_layout`), so a writer or loader that swapped two same-shaped tensors can
never compare equal by accident.

What stays real: the module classes (FluxTransformer2DModel with or without its guidance
embedding, Fill's 384 input features = 64 packed latents + 64 masked-image latents + 256
mask values, SD3Transformer2DModel with MMDiT-X dual attention for medium, RMS q/k norms),
a 16-channel VAE of factor 8 without quant convs, CLIP-L (+ CLIP-G of another width for
SD3) and a T5 encoder, the flow-match scheduler settings of the real models. What is
tiny: layers, widths and vocabularies. The T5 tokenizer is trained here, on a few
sentences, with the `tokenizers` Unigram trainer: never downloaded.
"""

from __future__ import annotations

import json
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
)
from transformers import (
    CLIPTextModel,
    CLIPTextModelWithProjection,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

from kd_server.assembly import Components, assemble_pipeline
from kd_server.families import Family
from modelkit.ldm_layout import PERTURBATION, clip_config, make_tokenizer

FluxKind = Literal["dev", "schnell", "fill"]
SD35Kind = Literal["medium", "large"]
FLUX_KINDS: tuple[FluxKind, ...] = ("dev", "schnell", "fill")
SD35_KINDS: tuple[SD35Kind, ...] = ("medium", "large")
FLUX_FAMILIES: dict[str, Family] = {
    "dev": Family.FLUX_DEV,
    "schnell": Family.FLUX_SCHNELL,
    "fill": Family.FLUX_FILL,
}
SD35_FAMILIES: dict[str, Family] = {"medium": Family.SD35_MEDIUM, "large": Family.SD35_LARGE}

# ---------------------------------------------------------------- sizes (all tiny)

#: CLIP-L width; SD3's CLIP-G must be of another width (diffusers tells the encoders of
#: one file apart by their shapes; with equal widths it silently loads the wrong weights).
CLIP_L_HIDDEN = 32
CLIP_G_HIDDEN = 48
CLIP_G_LAYERS = 2
#: T5 width = the transformers' joint_attention_dim. SD3 pads the CLIP embeddings
#: (32 + 48 wide, side by side) up to it, so it must be at least their sum.
T5_HIDDEN = 96
T5_LAYERS = 2
T5_VOCAB = 256  # the tiny tokenizer's size; real T5 v1.1 has 32,128 rows
#: T5 tokens the tiny pipelines are run with (real: Flux dev 512, schnell 256, SD3 256).
#: Tests pass `max_sequence_length=` to keep runs fast; any length works.
T5_MAX_LENGTH = 512
LATENT_CHANNELS = 16
FLUX_HEAD_DIM = 16
FLUX_ROPE_AXES = (4, 6, 6)  # sums to the head dim, like the real (16, 56, 56) -> 128
FLUX_HEADS = 2
SD3_HEAD_DIM = 16
SD3_HEADS = 2
#: The tiny models' working size in pixels (as the tiny SD 1.5 / SDXL): the SD3
#: transformer's sample size x 8, the VAE's sample size (which Flux's loader reads).
TINY_WORKING_SIZE = 256
#: The tiny SD3 transformer's latent side; x8 = its working size (the real ones: 128).
SD3_SAMPLE_SIZE = TINY_WORKING_SIZE // 8
SD3_POS_EMBED_MAX = 64  # patches per side: pictures up to 1024 px

#: The real VAEs' latent statistics (Flux.1 ae.safetensors; SD 3.5's VAE).
FLUX_VAE_SCALING, FLUX_VAE_SHIFT = 0.3611, 0.1159
SD3_VAE_SCALING, SD3_VAE_SHIFT = 1.5305, 0.0609

#: Sentences the tiny T5 vocabulary is trained on: prompt-like words, so the prompts of
#: the tests split into pieces and not into unknown tokens.
_T5_CORPUS = [
    "a photo of a cat sitting on a red chair in the garden",
    "a painting of a mountain landscape at sunset, oil on canvas",
    "portrait of a woman with blue eyes, detailed, sharp focus",
    "a dog running on the beach, waves, summer, bright light",
    "a castle on a hill under a starry night sky, fantasy art",
    "an orange fox in a green forest, morning fog, photograph",
    "a bowl of fruit on a wooden table, still life, soft shadows",
    "city street in the rain, neon lights, reflections, night",
    "astronaut riding a horse, digital art, high quality, 4k",
    "a small house by the lake with trees and flowers, watercolor",
    "black and white sketch of an old man, pencil drawing",
    "the quick brown fox jumps over the lazy dog 0123456789",
]


# --------------------------------------------------------------------- tokenizer


def _trained_t5_vocab() -> list[tuple[str, float]]:
    """A Unigram vocabulary with T5's special ids: <pad> 0, </s> 1, <unk> 2."""
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import Unigram
    from tokenizers.trainers import UnigramTrainer

    tokenizer = Tokenizer(Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = UnigramTrainer(
        vocab_size=T5_VOCAB,
        special_tokens=["<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        show_progress=False,
    )
    tokenizer.train_from_iterator(_T5_CORPUS, trainer=trainer)
    model = json.loads(tokenizer.to_str())["model"]
    return [(str(piece), float(score)) for piece, score in model["vocab"]]


def make_t5_tokenizer() -> Any:
    """A T5 tokenizer (T5's special tokens and `</s>` appended) of the tiny vocabulary."""
    # transformers 5: T5TokenizerFast is this class (tokenizers-backed)
    return T5Tokenizer(vocab=_t5_vocab(), extra_ids=0, model_max_length=T5_MAX_LENGTH)


@lru_cache(maxsize=1)
def _t5_vocab() -> list[tuple[str, float]]:
    return _trained_t5_vocab()


def write_t5_tokenizer(folder: str | Path) -> Path:
    """The tiny T5 tokenizer as a folder `T5TokenizerFast.from_pretrained` reads
    (tokenizer.json, tokenizer_config.json), as a ComfyUI t5_tokenizer folder holds."""
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    make_t5_tokenizer().save_pretrained(str(target))
    return target


@lru_cache(maxsize=1)
def t5_tokenizer_dir() -> Path:
    """The tiny T5 tokenizer written once per process to a temporary folder."""
    return write_t5_tokenizer(Path(tempfile.mkdtemp(prefix="tiny-t5-tokenizer-")))


# ------------------------------------------------------------------- components


def _t5_encoder() -> T5EncoderModel:
    """T5 v1.1's shape in small: gated GELU, no tied heads, relative position buckets."""
    config = T5Config(
        vocab_size=T5_VOCAB,
        d_model=T5_HIDDEN,
        d_kv=16,
        d_ff=T5_HIDDEN * 2,
        num_layers=T5_LAYERS,
        num_decoder_layers=T5_LAYERS,
        num_heads=4,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",  # gelu_new, gated
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5EncoderModel(config)


def _vae(scaling: float, shift: float) -> AutoencoderKL:
    """Four levels (factor 8) of 16 latent channels, no quant convs, as Flux's and SD3's."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32,) * 4,
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=32,
        # the picture side the model works at: Flux's loader reads it here (real: 1024)
        sample_size=TINY_WORKING_SIZE,
        scaling_factor=scaling,
        shift_factor=shift,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def flux_scheduler(kind: FluxKind) -> FlowMatchEulerDiscreteScheduler:
    """The schedulers the real Flux.1 folders ship: dev and Fill shift by resolution,
    schnell runs unshifted."""
    if kind == "schnell":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )


def sd3_scheduler() -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)


def _flux_transformer(kind: FluxKind) -> FluxTransformer2DModel:
    packed = LATENT_CHANNELS * 4  # 2x2 patches of 16 channels
    # Fill: packed latents + packed masked-image latents + the 8x8 mask per latent pixel, packed
    in_channels = packed * 2 + 64 * 4 if kind == "fill" else packed
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=in_channels,
        out_channels=packed,
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=FLUX_HEAD_DIM,
        num_attention_heads=FLUX_HEADS,
        joint_attention_dim=T5_HIDDEN,
        pooled_projection_dim=CLIP_L_HIDDEN,
        guidance_embeds=kind != "schnell",
        axes_dims_rope=FLUX_ROPE_AXES,
    )


def _sd3_transformer(kind: SD35Kind) -> SD3Transformer2DModel:
    return SD3Transformer2DModel(
        sample_size=SD3_SAMPLE_SIZE,
        patch_size=2,
        in_channels=LATENT_CHANNELS,
        num_layers=2,
        attention_head_dim=SD3_HEAD_DIM,
        num_attention_heads=SD3_HEADS,
        joint_attention_dim=T5_HIDDEN,
        caption_projection_dim=SD3_HEADS * SD3_HEAD_DIM,
        pooled_projection_dim=CLIP_L_HIDDEN + CLIP_G_HIDDEN,
        out_channels=LATENT_CHANNELS,
        pos_embed_max_size=SD3_POS_EMBED_MAX,
        # medium (MMDiT-X): a second self-attention in its first layers; large: none
        dual_attention_layers=(0,) if kind == "medium" else (),
        qk_norm="rms_norm",
    )


def perturb(module: torch.nn.Module) -> None:
    """Make every parameter distinct (module docstring); keeps outputs sane."""
    with torch.no_grad():
        for param in module.parameters():
            param.add_(torch.randn_like(param) * PERTURBATION)


#: Each module has its own seed offset, so the parts Flux and SD 3.5 share in real life
#: (CLIP-L, T5; CLIP-G between SD 3.5 medium and large; one VAE per architecture) are
#: the same weights in every tiny pipeline built with the same seed: one clip_l /
#: t5xxl / VAE file in a ComfyUI models folder serves all of them, as it does for real.
_OFFSETS = {
    "dev": 1,
    "schnell": 2,
    "fill": 3,
    "medium": 4,
    "large": 5,
    "flux-vae": 10,
    "sd3-vae": 11,
    "clip_l": 20,
    "clip_g": 21,
    "t5xxl": 22,
}


def _seeded(seed: int, what: str, build: Any) -> Any:
    """`build()` under its own seed, perturbed, in eval mode; the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 1009 + _OFFSETS[what])
        module = build()
        perturb(module)
    module.eval()
    return module


def _clip_l(seed: int, with_projection: bool) -> Any:
    """CLIP-L, the same weights for Flux (CLIPTextModel) and SD3 (with projection)."""
    config = clip_config(CLIP_L_HIDDEN, 2, "quick_gelu", CLIP_L_HIDDEN)
    plain = _seeded(seed, "clip_l", lambda: CLIPTextModel(config))
    if not with_projection:
        return plain
    model = CLIPTextModelWithProjection(plain.config)
    # transformers 5 flattened CLIPTextModel; the projection model still nests text_model
    state = {key.removeprefix("text_model."): t for key, t in plain.state_dict().items()}
    model.text_model.load_state_dict(state)
    # SD3 uses CLIP-L's pooled output unprojected: its projection is the identity
    # (diffusers puts one in when loading a single file; so does our loader).
    with torch.no_grad():
        model.text_projection.weight.copy_(torch.eye(CLIP_L_HIDDEN))
    model.eval()
    return model


# --------------------------------------------------------------------- pipelines


def build_tiny_flux(kind: FluxKind = "dev", seed: int = 0) -> Any:
    """A tiny Flux.1 pipeline: FluxPipeline (dev, schnell) or FluxFillPipeline (fill).

    The same seed gives the same weights (the shared parts: see `_OFFSETS`); the global
    torch RNG is left as it was.
    """
    if kind not in FLUX_KINDS:
        raise ValueError(f"unknown Flux kind {kind!r}; expected one of {FLUX_KINDS}")
    transformer = _seeded(seed, kind, lambda: _flux_transformer(kind))
    vae = _seeded(seed, "flux-vae", lambda: _vae(FLUX_VAE_SCALING, FLUX_VAE_SHIFT))
    clip_l = _clip_l(seed, with_projection=False)
    t5 = _seeded(seed, "t5xxl", _t5_encoder)
    parts = Components(
        scheduler=flux_scheduler(kind),
        vae=vae,
        text_encoder=clip_l,
        tokenizer=make_tokenizer(),
        text_encoder_2=t5,
        tokenizer_2=make_t5_tokenizer(),
        transformer=transformer,
    )
    return assemble_pipeline(FLUX_FAMILIES[kind], parts)


def build_tiny_sd35(kind: SD35Kind = "medium", seed: int = 0) -> Any:
    """A tiny StableDiffusion3Pipeline of SD 3.5 medium (MMDiT-X) or large."""
    if kind not in SD35_KINDS:
        raise ValueError(f"unknown SD 3.5 kind {kind!r}; expected one of {SD35_KINDS}")
    transformer = _seeded(seed, kind, lambda: _sd3_transformer(kind))
    vae = _seeded(seed, "sd3-vae", lambda: _vae(SD3_VAE_SCALING, SD3_VAE_SHIFT))
    clip_l = _clip_l(seed, with_projection=True)
    clip_g = _seeded(
        seed,
        "clip_g",
        lambda: CLIPTextModelWithProjection(
            clip_config(CLIP_G_HIDDEN, CLIP_G_LAYERS, "gelu", CLIP_G_HIDDEN)
        ),
    )
    t5 = _seeded(seed, "t5xxl", _t5_encoder)
    parts = Components(
        transformer=transformer,
        scheduler=sd3_scheduler(),
        vae=vae,
        text_encoder=clip_l,
        tokenizer=make_tokenizer(),
        text_encoder_2=clip_g,
        tokenizer_2=make_tokenizer(pad_token="!"),
        text_encoder_3=t5,
        tokenizer_3=make_t5_tokenizer(),
    )
    return assemble_pipeline(SD35_FAMILIES[kind], parts)
