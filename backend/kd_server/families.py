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

    @property
    def info(self) -> FamilyInfo:
        return FAMILY_INFO[self]


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

    @property
    def config_dir(self) -> Path:
        """The shipped diffusers config folder `from_single_file(config=...)` needs."""
        return resources_dir() / "model-configs" / self.config_folder

    @property
    def unet_in_channels(self) -> int:
        return 9 if self.is_inpaint else 4


FAMILY_INFO: dict[Family, FamilyInfo] = {
    Family.SD15: FamilyInfo(Family.SD15, "SD 1.5", "sd15", 512, False, False, Family.SD15),
    Family.SD15_INPAINT: FamilyInfo(
        Family.SD15_INPAINT, "SD 1.5 inpaint", "sd15-inpainting", 512, True, False, Family.SD15
    ),
    Family.SDXL: FamilyInfo(Family.SDXL, "SDXL", "sdxl", 1024, False, True, Family.SDXL),
    Family.SDXL_INPAINT: FamilyInfo(
        Family.SDXL_INPAINT, "SDXL inpaint", "sdxl-inpainting", 1024, True, True, Family.SDXL
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
