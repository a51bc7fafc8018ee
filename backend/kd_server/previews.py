"""Cheap step previews: a linear map from latents straight to RGB, or a tiny VAE.

A VAE decode per step costs about as much as 1.6 UNet steps on a GPU; this map costs
under a millisecond and is close enough for an artist to see where the image is going.
The factors are the published least-squares fits for each latent space (SD 1.5 and
SDXL: A1111's; SD 3 and Flux, whose VAEs have 16 channels: the fits ComfyUI publishes
in `comfy/latent_formats.py`, on latents as the pipelines hold them: scaled and
shifted). Flux holds its latents packed, each 2x2 patch of 16 channels as one token
of 64 features; `unpack_flux` lays them out as an image again. When the
artist has a tiny autoencoder (TAESD, `kd_server.taesd`) it decodes the preview
instead: far sharper, a few milliseconds on a GPU; the map stays the fallback.

The denoising thread only takes a `snapshot` of the latents; `render` runs on the
preview thread (`kd_server.preview_worker`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image

from kd_server.families import Architecture, Family

log = logging.getLogger(__name__)

#: The long side of a preview image, in pixels (the API shrinks it to its setting).
PREVIEW_SIDE = 256

# Rows: latent channels 0..3; columns: R, G, B.
SD15_LATENT_RGB = (
    (0.298, 0.207, 0.208),
    (0.187, 0.286, 0.173),
    (-0.158, 0.189, 0.264),
    (-0.184, -0.271, -0.473),
)
SD15_BIAS = (0.0, 0.0, 0.0)

SDXL_LATENT_RGB = (
    (0.3651, 0.4232, 0.4341),
    (-0.2533, -0.0042, 0.1068),
    (0.1076, 0.1111, -0.0362),
    (-0.3165, -0.2492, -0.2188),
)
SDXL_BIAS = (0.1084, -0.0175, -0.0011)

# 16 rows: latent channels 0..15 of SD 3's VAE (SD 3.5 medium and large share it).
SD3_LATENT_RGB = (
    (-0.0922, -0.0175, 0.0749),
    (0.0311, 0.0633, 0.0954),
    (0.1994, 0.0927, 0.0458),
    (0.0856, 0.0339, 0.0902),
    (0.0587, 0.0272, -0.0496),
    (-0.0006, 0.1104, 0.0309),
    (0.0978, 0.0306, 0.0427),
    (-0.0042, 0.1038, 0.1358),
    (-0.0194, 0.0020, 0.0669),
    (-0.0488, 0.0130, -0.0268),
    (0.0922, 0.0988, 0.0951),
    (-0.0278, 0.0524, -0.0542),
    (0.0332, 0.0456, 0.0895),
    (-0.0069, -0.0030, -0.0810),
    (-0.0596, -0.0465, -0.0293),
    (-0.1448, -0.1463, -0.1189),
)
SD3_BIAS = (0.2394, 0.2135, 0.1925)

# 16 rows: latent channels 0..15 of Flux's VAE (dev, schnell and Fill share it).
FLUX_LATENT_RGB = (
    (-0.0346, 0.0244, 0.0681),
    (0.0034, 0.0210, 0.0687),
    (0.0275, -0.0668, -0.0433),
    (-0.0174, 0.0160, 0.0617),
    (0.0859, 0.0721, 0.0329),
    (0.0004, 0.0383, 0.0115),
    (0.0405, 0.0861, 0.0915),
    (-0.0236, -0.0185, -0.0259),
    (-0.0245, 0.0250, 0.1180),
    (0.1008, 0.0755, -0.0421),
    (-0.0515, 0.0201, 0.0011),
    (0.0428, -0.0012, -0.0036),
    (0.0817, 0.0765, 0.0749),
    (-0.1264, -0.0522, -0.1103),
    (-0.0280, -0.0881, -0.0499),
    (-0.1262, -0.0982, -0.0778),
)
FLUX_BIAS = (-0.0329, -0.0718, -0.0851)


@dataclass(frozen=True)
class LatentMap:
    """One latent space's linear map to RGB (-1..1): a row of factors per channel."""

    factors: tuple[tuple[float, float, float], ...]
    bias: tuple[float, float, float]

    @property
    def channels(self) -> int:
        return len(self.factors)


SD15_MAP = LatentMap(SD15_LATENT_RGB, SD15_BIAS)
SDXL_MAP = LatentMap(SDXL_LATENT_RGB, SDXL_BIAS)
SD3_MAP = LatentMap(SD3_LATENT_RGB, SD3_BIAS)
FLUX_MAP = LatentMap(FLUX_LATENT_RGB, FLUX_BIAS)


def latent_map(family: Family) -> LatentMap:
    """The map for a family's latents."""
    info = family.info
    if info.architecture is Architecture.FLUX:
        return FLUX_MAP
    if info.architecture is Architecture.SD3:
        return SD3_MAP
    return SDXL_MAP if info.is_xl else SD15_MAP


#: Flux packs 2x2 latent pixels into one token.
FLUX_PATCH = 2
#: A latent pixel covers 8x8 image pixels (every VAE here).
VAE_SCALE = 8


def unpack_flux(latents: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Flux's packed latents [B, tokens, 64] of a `width` x `height` picture (pixels)
    -> [B, 16, height / 8, width / 8], as the pipeline unpacks them before decoding."""
    if latents.ndim != 3:
        return latents  # already laid out as an image
    batch, _, features = latents.shape
    rows = height // (VAE_SCALE * FLUX_PATCH)
    columns = width // (VAE_SCALE * FLUX_PATCH)
    channels = features // (FLUX_PATCH * FLUX_PATCH)
    grid = latents.reshape(batch, rows, columns, channels, FLUX_PATCH, FLUX_PATCH)
    grid = grid.permute(0, 3, 1, 4, 2, 5)
    return grid.reshape(batch, channels, rows * FLUX_PATCH, columns * FLUX_PATCH)


def _as_map(is_xl: bool | LatentMap) -> LatentMap:
    if isinstance(is_xl, LatentMap):
        return is_xl
    return SDXL_MAP if is_xl else SD15_MAP


def latents_to_preview(
    latents: torch.Tensor, is_xl: bool | LatentMap, max_side: int = 256
) -> Image.Image:
    """Map the first latent of a batch (C, H, W) to a small RGB image.

    `is_xl` picks SDXL's or SD 1.5's map, or is the `LatentMap` to use. The latent is
    1/8 of the image size; it is upscaled to at most `max_side` pixels on its long side
    so the preview keeps the output's aspect.
    """
    mapping = _as_map(is_xl)
    factors, bias = mapping.factors, mapping.bias
    latent = latents[0, : mapping.channels].detach().float().cpu()
    weights = torch.tensor(factors, dtype=torch.float32)
    rgb = torch.einsum("chw,cr->hwr", latent, weights) + torch.tensor(bias)
    pixels = ((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    image = Image.fromarray(pixels, mode="RGB")
    height, width = pixels.shape[:2]
    scale = max_side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)


def snapshot(latents: torch.Tensor) -> torch.Tensor:
    """The first latent of the batch, copied: the only preview work on the denoising
    thread. On a GPU the copy is queued without waiting for it (no host sync), and
    the pipeline may go on changing its own tensor."""
    return latents[:1].detach().clone()


Decode = Callable[[torch.Tensor, int], Image.Image]


def render(
    latents: torch.Tensor,
    is_xl: bool | LatentMap,
    decode: Decode | None = None,
    max_side: int = PREVIEW_SIDE,
) -> Image.Image:
    """A preview of a `snapshot`, on the preview thread: the tiny VAE's decode when
    there is one (the map if it fails), else the linear map."""
    with torch.inference_mode():  # grad mode is per thread: the pipeline's does not apply
        if decode is not None:
            try:
                return decode(latents, max_side)
            except Exception:
                log.exception("The tiny VAE failed on a preview; using the latent map")
        return latents_to_preview(latents, is_xl, max_side)
