"""What a control-related file is, told from its safetensors header alone.

The library reads tensor names and shapes (never weights) and asks `detect_control`
whether a file is a ControlNet, a union ControlNet, an IP-Adapter, the CLIP image
encoder an IP-Adapter needs, or a depth estimator, and for which model family.

Why names first: names say what a file is in every size, including the tiny
stand-ins the tests write. Widths are read only where a family leaves no trace in
the names (an IP-Adapter attends to the text encoder's width: 768 is SD 1.5's, 2048
SDXL's two encoders side by side) and to pick the shipped config of a known size.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

from kd_server.families import Family


class ControlRole(str, enum.Enum):
    """What a control-related file is. The first three are what jobs name as a control
    (`ControlKind` on the wire); the other two serve them."""

    CONTROLNET = "controlnet"
    UNION = "union"
    IP_ADAPTER = "ip-adapter"
    IMAGE_ENCODER = "image-encoder"
    DEPTH_ESTIMATOR = "depth-estimator"

    @property
    def is_control(self) -> bool:
        return self in (ControlRole.CONTROLNET, ControlRole.UNION, ControlRole.IP_ADAPTER)


class EmbedSource(str, enum.Enum):
    """Which output of the CLIP image encoder an IP-Adapter reads."""

    IMAGE_EMBEDS = "image_embeds"  # the projected embedding (IP-Adapter, full-face)
    HIDDEN_STATES = "hidden_states"  # the penultimate hidden states (IP-Adapter plus)


@dataclass(frozen=True)
class ControlFacts:
    """Facts the loader and the pairing of IP-Adapters with encoders need."""

    role: ControlRole
    layout: str  # "ldm" (A1111/original keys), "diffusers" or "transformers"
    config: str | None = None  # the shipped config folder of a known size, if one fits
    embed_source: EmbedSource | None = None  # IP-Adapter: what it reads from the encoder
    embed_width: int | None = None  # IP-Adapter: width it reads; encoder: projection width
    hidden_width: int | None = None  # encoder: hidden width
    control_types: int | None = None  # union: how many control types it knows


@dataclass(frozen=True)
class ControlDetection:
    """A control file's role and family, or why it cannot be used (`reason`)."""

    role: ControlRole | None
    family: Family | None
    facts: ControlFacts | None
    reason: str | None = None  # set when the file is unusable

    @property
    def usable(self) -> bool:
        return self.reason is None


#: The text encoder width an IP-Adapter's key/value projections read, per family.
#: The embedded tiny model (kd_server.tiny_model, TEXT_HIDDEN) is an SD 1.5 model.
EMBEDDED_CONTEXT_WIDTH = 32
CONTEXT_WIDTHS: dict[int, Family] = {
    768: Family.SD15,
    2048: Family.SDXL,
    EMBEDDED_CONTEXT_WIDTH: Family.SD15,
}

#: Shipped CLIP vision configs by (hidden width, layers).
IMAGE_ENCODER_CONFIGS: dict[tuple[int, int], str] = {
    (1280, 32): "clip-vision-vit-h",
    (1664, 48): "clip-vision-vit-bigg",
}
#: Shipped Depth Anything V2 configs by backbone width.
DEPTH_CONFIGS: dict[int, str] = {
    384: "depth-anything-v2-small",
    768: "depth-anything-v2-base",
    1024: "depth-anything-v2-large",
}

Shapes = dict[str, tuple[int, ...]]


def _unusable(
    role: ControlRole | None, reason: str, family: Family | None = None
) -> ControlDetection:
    return ControlDetection(role, family, None, reason)


def _has(names: Iterable[str], part: str) -> bool:
    return any(part in name for name in names)


def _starts(names: Iterable[str], prefix: str) -> bool:
    return any(name.startswith(prefix) for name in names)


def detect_control(shapes: Shapes) -> ControlDetection | None:
    """The file's control role, or None when it is no control-related file at all."""
    names = list(shapes)
    if _has(names, "lllite"):
        return _unusable(
            ControlRole.CONTROLNET,
            "This is a ControlLLLite model, which is not supported: use a ControlNet.",
        )
    if _has(names, "lora_controlnet"):
        return _unusable(
            ControlRole.CONTROLNET,
            "This is a Control-LoRA, which is not supported: use a full ControlNet.",
        )
    if _starts(names, "image_proj.") and _starts(names, "ip_adapter."):
        return _ip_adapter(shapes)
    if _has(names, "input_hint_block.") or _starts(names, "controlnet_cond_embedding."):
        return _controlnet(shapes)
    if _starts(names, "adapter.body.") or (
        _starts(names, "body.0.") and "conv_in.weight" in shapes
    ):
        return _unusable(
            ControlRole.CONTROLNET,
            "This is a T2I-Adapter, which is not supported: use a ControlNet.",
        )
    if _starts(names, "vision_model.embeddings.") or _starts(names, "visual.transformer."):
        return _image_encoder(shapes)
    if (
        _starts(names, "backbone.embeddings.")
        and _starts(names, "head.")
        and _starts(names, "neck.")
    ):
        return _depth_anything(shapes)
    if _starts(names, "pretrained.blocks.") and _starts(names, "depth_head."):
        return _unusable(
            ControlRole.DEPTH_ESTIMATOR,
            "This depth estimator is in its original layout: use the transformers version "
            "(Depth-Anything-V2-*-hf, model.safetensors), or run "
            "`python3 -m installer download depth-anything-v2-small`.",
        )
    return None


# ----------------------------------------------------------------------- ControlNet


def _controlnet(shapes: Shapes) -> ControlDetection:
    names = list(shapes)
    layout = "ldm" if _has(names, "input_hint_block.") else "diffusers"
    is_xl = _has(names, "add_embedding.linear_1.") or _has(names, "label_emb.0.0.")
    if _context_width(shapes, ".attn2.to_k.weight") == 1024:
        return _unusable(
            ControlRole.CONTROLNET,
            "This ControlNet is made for SD 2.x, which is not supported: use one made for "
            "SD 1.5 or SDXL.",
        )
    if "task_embedding" in shapes or _starts(names, "control_add_embedding."):
        if not is_xl:
            return _unusable(
                ControlRole.UNION, "Only SDXL union ControlNets are supported; this one is not."
            )
        types = shapes.get("task_embedding", (0,))[0]
        facts = ControlFacts(
            ControlRole.UNION, layout, "controlnet-union-sdxl", control_types=types
        )
        return ControlDetection(ControlRole.UNION, Family.SDXL, facts)
    family = Family.SDXL if is_xl else Family.SD15
    config = "controlnet-sdxl" if is_xl else "controlnet-sd15"
    return ControlDetection(
        ControlRole.CONTROLNET, family, ControlFacts(ControlRole.CONTROLNET, layout, config)
    )


def _context_width(shapes: Shapes, suffix: str) -> int | None:
    for name, shape in shapes.items():
        if name.endswith(suffix) and len(shape) == 2:
            return shape[1]
    return None


# ----------------------------------------------------------------------- IP-Adapter


def _ip_adapter(shapes: Shapes) -> ControlDetection:
    names = list(shapes)
    role = ControlRole.IP_ADAPTER
    if _has(names, "_lora.") or _has(names, "lora_"):
        return _unusable(
            role,
            "This is a FaceID IP-Adapter, which needs InsightFace and is not supported: "
            "use a plain or plus IP-Adapter.",
        )
    width = _context_width(shapes, ".to_k_ip.weight")
    if width is None:
        return _unusable(role, "This IP-Adapter has no to_k_ip weights: the file is incomplete.")
    family = CONTEXT_WIDTHS.get(width)
    if family is None:
        what = "SD 2.x" if width == 1024 else f"a model whose text encoder is {width} wide"
        return _unusable(role, f"This IP-Adapter is made for {what}, which is not supported.")
    needs = _embedding_needs(shapes)
    if needs is None:
        return _unusable(
            role,
            "This IP-Adapter's image projection is of an unknown kind: use a plain, plus "
            "or full-face IP-Adapter.",
            family,
        )
    source, embed_width = needs
    facts = ControlFacts(role, "diffusers", embed_source=source, embed_width=embed_width)
    return ControlDetection(role, family, facts)


def _embedding_needs(shapes: Shapes) -> tuple[EmbedSource, int] | None:
    """What the image projection reads, and how wide it is."""
    if "image_proj.latents" in shapes and "image_proj.proj_in.weight" in shapes:
        return EmbedSource.HIDDEN_STATES, shapes["image_proj.proj_in.weight"][1]
    for key in ("image_proj.proj.weight", "image_proj.proj.0.weight"):
        shape = shapes.get(key)
        if shape is not None and len(shape) == 2:
            return EmbedSource.IMAGE_EMBEDS, shape[1]
    return None


# ---------------------------------------------------------------------- CLIP vision


def _image_encoder(shapes: Shapes) -> ControlDetection:
    role = ControlRole.IMAGE_ENCODER
    if _starts(shapes, "visual.transformer."):
        return _unusable(
            role,
            "This image encoder is in OpenCLIP layout: use the transformers version "
            "(CLIP-ViT-H-14 model.safetensors, as ComfyUI's clip_vision folder holds).",
        )
    patch = shapes.get("vision_model.embeddings.patch_embedding.weight")
    projection = shapes.get("visual_projection.weight")
    if patch is None or projection is None or len(projection) != 2:
        return _unusable(
            role,
            "This CLIP vision model has no visual projection, which IP-Adapters need: "
            "use CLIP-ViT-H-14 (model.safetensors of h94/IP-Adapter's image_encoder).",
        )
    hidden = patch[0]
    layers = _count(shapes, re.compile(r"^vision_model\.encoder\.layers\.(\d+)\."))
    facts = ControlFacts(
        role,
        "transformers",
        IMAGE_ENCODER_CONFIGS.get((hidden, layers)),
        embed_width=projection[0],
        hidden_width=hidden,
    )
    return ControlDetection(role, None, facts)


def _count(names: Iterable[str], pattern: re.Pattern[str]) -> int:
    found = {int(m.group(1)) for name in names if (m := pattern.match(name))}
    return max(found) + 1 if found else 0


# -------------------------------------------------------------------- depth models


def _depth_anything(shapes: Shapes) -> ControlDetection:
    patch = shapes.get("backbone.embeddings.patch_embeddings.projection.weight")
    if patch is None:
        return _unusable(
            ControlRole.DEPTH_ESTIMATOR,
            "This depth estimator has no patch embedding: the file is incomplete.",
        )
    facts = ControlFacts(ControlRole.DEPTH_ESTIMATOR, "transformers", DEPTH_CONFIGS.get(patch[0]))
    return ControlDetection(ControlRole.DEPTH_ESTIMATOR, None, facts)
