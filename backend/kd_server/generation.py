"""The engine's vocabulary: what a generation asks for and what it gives back.

These types are the seam between the diffusion engine and whatever drives it (the
HTTP API, the CLI, the A1111 layer). They hold plain data only, so every caller can
build and check them without importing torch or diffusers.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image


class Task(str, enum.Enum):
    """The kinds of job. Each one is declared once, in `kd_server.tasks`."""

    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    INPAINT = "inpaint"


#: Seeds are 32-bit, as in A1111 and ComfyUI, so a seed copied between them matches.
MAX_SEED = 2**32 - 1
#: LoRAs one job may apply; more rarely helps and each costs memory on the GPU.
MAX_LORAS = 8


def resolve_seed(seed: int | None) -> int:
    """The seed a job runs with: a random one for None or -1 (both front doors' "random")."""
    if seed is None or seed < 0:
        return random.randint(0, MAX_SEED)
    return seed % (MAX_SEED + 1)


@dataclass(frozen=True)
class LoraSpec:
    name: str
    weight: float = 1.0


@dataclass
class Sampling:
    """How the denoising runs: the same for every task."""

    sampler: str = "DPM++ 2M Karras"
    steps: int = 20
    cfg_scale: float = 7.0
    seed: int | None = None  # None: random; the seed used is reported per image
    batch_size: int = 1


@dataclass
class Conditioning:
    """What steers the picture. Control layers and reference images will live here."""

    prompt: str = ""
    negative_prompt: str = ""
    loras: list[LoraSpec] = field(default_factory=list)


@dataclass
class ImageInputs:
    """The pixels a job starts from (img2img, inpaint), and how the mask is treated."""

    image: Image.Image | None = None  # RGB or RGBA
    mask: Image.Image | None = None  # L: white = repaint, grey levels kept
    mask_grow: int = 0
    mask_feather: int = 0
    strength: float = 0.75  # how much to change, 0..1


@dataclass
class GenerationRequest:
    """One job as the engine sees it, nested by concern so that a new input has one
    obvious place. `width`/`height` are the output size of tasks that start from
    nothing; tasks that start from an image keep the image's size."""

    task: Task
    conditioning: Conditioning = field(default_factory=Conditioning)
    sampling: Sampling = field(default_factory=Sampling)
    inputs: ImageInputs = field(default_factory=ImageInputs)
    model: str | None = None  # None: the library's default checkpoint
    width: int = 512
    height: int = 512
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
