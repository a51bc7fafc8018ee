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
    UPSCALE = "upscale"  # enlarge `inputs.image` to `upscaling`'s size, then refine it


#: Seeds are 32-bit, as in A1111 and ComfyUI, so a seed copied between them matches.
MAX_SEED = 2**32 - 1
#: LoRAs one job may apply; more rarely helps and each costs memory on the GPU.
MAX_LORAS = 8
#: Control layers one job may use: each ControlNet runs beside the UNet at every step.
MAX_CONTROLS = 4


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
    #: Flux's distilled guidance (the model's own "guidance" input, not CFG); None: the
    #: family's default. Families without it refuse a value (kd_server.families).
    guidance: float | None = None


class ControlMode(str, enum.Enum):
    """What a control image shows. It picks a union ControlNet's control type, the
    polarity line images are given in (light lines on black, as ControlNets are
    trained), and what `preprocess` does (kd_server.control.preprocess)."""

    DEPTH = "depth"
    CANNY = "canny"
    LINEART = "lineart"
    SCRIBBLE = "scribble"
    SOFTEDGE = "softedge"
    POSE = "pose"
    TILE = "tile"
    NORMAL = "normal"
    SEGMENT = "segment"


@dataclass
class ControlInput:
    """One control layer: a ControlNet and the image it follows.

    The image covers exactly the region being generated (txt2img: width x height;
    img2img/inpaint: the size of `inputs.image`). `strength` scales the ControlNet's
    effect (0 = none, 1 = as trained, up to 2); it acts from `start` to `end`, as
    fractions of the denoising steps that run."""

    model: str
    image: Image.Image
    mode: ControlMode | None = None  # None: the image is used exactly as sent
    preprocess: bool = False  # derive the control image from a picture first
    strength: float = 1.0
    start: float = 0.0
    end: float = 1.0
    low_threshold: int = 100  # canny: edges weaker than this are dropped (0..255)
    high_threshold: int = 200  # canny: edges stronger than this are always kept


@dataclass
class ReferenceInput:
    """A reference image (IP-Adapter): the picture borrows its look; `weight` 0..2."""

    model: str
    image: Image.Image
    weight: float = 0.6


@dataclass
class Conditioning:
    """What steers the picture: the prompts, LoRAs, control layers and a reference."""

    prompt: str = ""  # A1111's syntax: (word:1.3), [word], BREAK (kd_server.prompt_syntax)
    negative_prompt: str = ""
    loras: list[LoraSpec] = field(default_factory=list)
    control: list[ControlInput] = field(default_factory=list)
    reference: ReferenceInput | None = None
    #: A1111's "Clip skip": 1 reads the text encoder's last layer, 2 the one before ...
    #: (SD 1.5; SDXL always reads its penultimate layers, as A1111 does)
    clip_skip: int = 1


class FillMode(str, enum.Enum):
    """What the area to repaint (and any transparent pixel) holds before denoising.

    At low strength the sampler keeps much of what is there, so an expanded canvas's
    empty strip must hold something plausible: its edge pixels stretched, or a blur."""

    KEEP = "keep"  # the original pixels (transparent ones: as NEUTRAL)
    NEUTRAL = "neutral"  # mid grey
    BLUR = "blur"  # the surrounding picture, heavily blurred into the area
    EDGE = "edge"  # the nearest pixels outside the area, stretched into it
    NOISE = "noise"  # random colours (latent noise, as A1111's "latent noise")


@dataclass
class ImageInputs:
    """The pixels a job starts from (img2img, inpaint, upscale), and how the mask and
    the area to repaint are treated."""

    image: Image.Image | None = None  # RGB or RGBA
    mask: Image.Image | None = None  # L: white = repaint, grey levels kept
    mask_grow: int = 0
    mask_feather: int = 0
    strength: float = 0.75  # how much to change, 0..1
    fill: FillMode = FillMode.KEEP


@dataclass
class Upscaling:
    """How an image grows beyond the model's working size (the `upscale` task, and
    the second pass of a hi-res txt2img).

    `width` x `height` is the final size. The image is enlarged with `upscaler` (a
    model from the library's upscalers; None: Lanczos), then refined tile by tile with
    img2img at `strength` (0: no diffusion at all), tiles of `tile_size` pixels (None:
    the model's working size) overlapping and blended. `steps` (None: the job's own)
    is the refine's step count."""

    width: int
    height: int
    upscaler: str | None = None
    strength: float = 0.35
    tile_size: int | None = None
    steps: int | None = None


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
    #: a VAE file from the library's VAE folders (kd_server.vae_files) to decode (and
    #: encode) with instead of the checkpoint's own; None: the checkpoint's
    vae: str | None = None
    #: `upscale` task: the target and the refine; txt2img: a hi-res second pass
    #: (first pass at `width` x `height`, then upscaled and refined to its size)
    upscaling: Upscaling | None = None
    #: a memory mode's wire value (kd_server.memory_modes) the job asks for; None: the
    #: server's choice for the model and the free memory
    memory_mode: str | None = None


@dataclass(frozen=True)
class Progress:
    """Reported after every denoising step, on the thread that runs the job."""

    step: int
    total: int


@dataclass(frozen=True)
class Preview:
    """A picture of the job after `step`: due every `preview_every` steps and at the
    last one. Made and reported on the engine's preview thread, so the denoising never
    waits for it; one that is stale before it is made is skipped, the last one never.
    Every preview of a job is reported before `generate` returns."""

    step: int
    total: int
    image: Image.Image


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
    UPSCALER_NOT_FOUND = "upscaler_not_found"
    UPSCALER_UNUSABLE = "upscaler_unusable"  # found, but cannot be loaded or run
    CONTROL_MISMATCH = "control_mismatch"  # a control model of another family
    PREPROCESSOR_UNAVAILABLE = "preprocessor_unavailable"  # e.g. no depth estimator
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
