"""Model families the server can run, and the facts the engine needs about each.

Why a table: the library detects a family from a file's tensor names, and everything
downstream (which shipped config to load with, which resolution to work at, whether
the inpaint path is the 9-channel one) follows from that one value. Keeping those facts
here means no other module compares family strings.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path


class Family(str, enum.Enum):
    """The architectures we load. The values are what the wire protocol reports."""

    SD15 = "sd15"
    SD15_INPAINT = "sd15-inpaint"
    SDXL = "sdxl"
    SDXL_INPAINT = "sdxl-inpaint"
    #: Flux.1 dev and its derivatives: guidance-distilled, no CFG and no negative prompt
    FLUX_DEV = "flux-dev"
    #: Flux.1 schnell: no guidance embedding, 1-4 steps, no CFG and no negative prompt
    FLUX_SCHNELL = "flux-schnell"
    #: Flux.1 Fill: img_in reads 384 = 64 + 64 + 256 features (latents, masked image, mask)
    FLUX_FILL = "flux-fill"
    #: SD 3.5 medium (MMDiT-X: dual attention in the first 13 blocks)
    SD35_MEDIUM = "sd35-medium"
    #: SD 3.5 large and large turbo (same architecture; turbo is told by fast_modes)
    SD35_LARGE = "sd35-large"

    @property
    def info(self) -> FamilyInfo:
        return FAMILY_INFO[self]


class Architecture(str, enum.Enum):
    """The denoiser's kind, which decides pipelines, latents and text encoders."""

    UNET = "unet"  # SD 1.5 / SDXL
    FLUX = "flux"  # FluxTransformer2DModel (BFL double/single stream blocks)
    SD3 = "sd3"  # SD3Transformer2DModel (MMDiT joint blocks)


@dataclass(frozen=True)
class FamilyInfo:
    """Per-family facts; look them up with `family_info(family)` or `family.info`."""

    family: Family
    label: str  # for people: "SD 1.5 inpaint"
    config_folder: str  # folder name under resources/model-configs/
    working_size: int  # the side of the square the family was trained at (pixels)
    is_inpaint: bool  # a 9-channel UNet (latents + mask + masked-image latents)
    is_xl: bool  # two text encoders, SDXL pipelines and conditioning
    base: Family  # the non-inpaint family sharing the text encoders and VAE
    architecture: Architecture = Architecture.UNET
    uses_cfg: bool = True  # the negative prompt and the CFG scale apply
    uses_guidance: bool = False  # Flux's distilled "guidance" value applies
    latent_channels: int = 4
    #: the text encoder parts, in pipeline order ("clip_l", "clip_g", "t5xxl")
    text_encoders: tuple[str, ...] = ("clip_l",)
    default_steps: int = 20
    #: the family's default guidance value: the CFG scale where `uses_cfg`, else the
    #: distilled guidance where `uses_guidance`, else 1.0 (no guidance at all)
    default_cfg: float = 7.0

    @property
    def config_dir(self) -> Path:
        """The shipped diffusers config folder `from_single_file(config=...)` needs."""
        return resources_dir() / "model-configs" / self.config_folder

    @property
    def unet_in_channels(self) -> int:
        """The SD 1.5 / SDXL UNet's input channels (meaningless for transformers)."""
        return 9 if self.is_inpaint else 4

    @property
    def is_transformer(self) -> bool:
        """Flux or SD 3.5: a transformer denoiser, 16-channel latents, T5 text encoder."""
        return self.architecture is not Architecture.UNET


FAMILY_INFO: dict[Family, FamilyInfo] = {
    Family.SD15: FamilyInfo(Family.SD15, "SD 1.5", "sd15", 512, False, False, Family.SD15),
    Family.SD15_INPAINT: FamilyInfo(
        Family.SD15_INPAINT, "SD 1.5 inpaint", "sd15-inpainting", 512, True, False, Family.SD15
    ),
    Family.SDXL: FamilyInfo(
        Family.SDXL,
        "SDXL",
        "sdxl",
        1024,
        False,
        True,
        Family.SDXL,
        text_encoders=("clip_l", "clip_g"),
    ),
    Family.SDXL_INPAINT: FamilyInfo(
        Family.SDXL_INPAINT,
        "SDXL inpaint",
        "sdxl-inpainting",
        1024,
        True,
        True,
        Family.SDXL,
        text_encoders=("clip_l", "clip_g"),
    ),
    Family.FLUX_DEV: FamilyInfo(
        Family.FLUX_DEV,
        "Flux.1 dev",
        "flux-dev",
        1024,
        False,
        False,
        Family.FLUX_DEV,
        architecture=Architecture.FLUX,
        uses_cfg=False,
        uses_guidance=True,
        latent_channels=16,
        text_encoders=("clip_l", "t5xxl"),
        default_steps=28,
        default_cfg=3.5,
    ),
    Family.FLUX_SCHNELL: FamilyInfo(
        Family.FLUX_SCHNELL,
        "Flux.1 schnell",
        "flux-schnell",
        1024,
        False,
        False,
        Family.FLUX_SCHNELL,
        architecture=Architecture.FLUX,
        uses_cfg=False,
        uses_guidance=False,
        latent_channels=16,
        text_encoders=("clip_l", "t5xxl"),
        default_steps=4,
        default_cfg=1.0,
    ),
    Family.FLUX_FILL: FamilyInfo(
        Family.FLUX_FILL,
        "Flux.1 Fill",
        "flux-fill",
        1024,
        True,
        False,
        Family.FLUX_DEV,
        architecture=Architecture.FLUX,
        uses_cfg=False,
        uses_guidance=True,
        latent_channels=16,
        text_encoders=("clip_l", "t5xxl"),
        default_steps=50,
        default_cfg=30.0,
    ),
    Family.SD35_MEDIUM: FamilyInfo(
        Family.SD35_MEDIUM,
        "SD 3.5 medium",
        "sd35-medium",
        1024,
        False,
        False,
        Family.SD35_MEDIUM,
        architecture=Architecture.SD3,
        latent_channels=16,
        text_encoders=("clip_l", "clip_g", "t5xxl"),
        default_steps=40,
        default_cfg=4.5,
    ),
    Family.SD35_LARGE: FamilyInfo(
        Family.SD35_LARGE,
        "SD 3.5 large",
        "sd35-large",
        1024,
        False,
        False,
        Family.SD35_LARGE,
        architecture=Architecture.SD3,
        latent_channels=16,
        text_encoders=("clip_l", "clip_g", "t5xxl"),
        default_steps=28,
        default_cfg=3.5,
    ),
}


def family_info(family: Family | str) -> FamilyInfo:
    """Facts for a family given as the enum or its wire value ("sdxl-inpaint")."""
    return FAMILY_INFO[Family(family)]


def resources_dir() -> Path:
    """The shipped `resources/` folder (model configs, tokenizer).

    It is installed as the namespace package `kd_resources`, so this works from a
    checkout (editable install) and from an installed wheel alike. A namespace package
    has no `__file__`; its first `__path__` entry is the folder.
    """
    import kd_resources

    return Path(next(iter(kd_resources.__path__)))


def tokenizer_dir() -> Path:
    """The shipped CLIP tokenizer files (`vocab.json`, `merges.txt`)."""
    return resources_dir() / "tokenizer"
