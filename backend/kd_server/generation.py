"""The engine's vocabulary: what a generation asks for and what it gives back.

These types are the seam between the diffusion engine and whatever drives it (the
HTTP API, the CLI, the A1111 layer). They hold plain data only, so every caller can
build and check them without importing torch or diffusers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image


class Task(str, enum.Enum):
    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    INPAINT = "inpaint"


@dataclass(frozen=True)
class LoraSpec:
    name: str
    weight: float = 1.0


@dataclass
class GenerationRequest:
    """One job as the engine sees it. Images are PIL images (RGB/RGBA image, L mask)."""

    task: Task
    prompt: str
    negative_prompt: str = ""
    model: str | None = None  # None: the library's default checkpoint
    loras: list[LoraSpec] = field(default_factory=list)
    sampler: str = "DPM++ 2M Karras"
    steps: int = 20
    cfg_scale: float = 7.0
    seed: int | None = None  # None or -1: random; the seed used is reported per image
    batch_size: int = 1
    width: int = 512  # txt2img only; img2img/inpaint use the image's size
    height: int = 512
    strength: float = 0.75  # img2img and inpaint
    image: Image.Image | None = None
    mask: Image.Image | None = None  # white = repaint, grey levels kept
    mask_grow: int = 0
    mask_feather: int = 0
    preview_every: int = 0  # 0 = no previews


@dataclass(frozen=True)
class Progress:
    """Reported after every denoising step; `preview` is set every `preview_every` steps."""

    step: int
    total: int
    preview: Image.Image | None = None


@dataclass(frozen=True)
class GeneratedImage:
    index: int
    seed: int
    image: Image.Image  # RGB for txt2img/img2img, RGBA (alpha = feathered mask) for inpaint
    parameters: str  # A1111-style "parameters" text, also written into the PNG


class EngineErrorCode(str, enum.Enum):
    MODEL_NOT_FOUND = "model_not_found"
    MODEL_UNUSABLE = "model_unusable"
    LORA_NOT_FOUND = "lora_not_found"
    LORA_UNUSABLE = "lora_unusable"
    SAMPLER_NOT_FOUND = "sampler_not_found"
    INVALID_INPUT = "invalid_input"
    OUT_OF_MEMORY = "out_of_memory"
    INTERNAL = "internal_error"


class EngineError(Exception):
    """A failure the engine can explain to an artist: `message` says what to do."""

    def __init__(self, code: EngineErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Cancelled(Exception):
    """Raised by the engine when `should_cancel` turned true between two steps."""
