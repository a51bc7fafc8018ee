"""Cheap step previews: a linear map from latents straight to RGB, or a tiny VAE.

A VAE decode per step costs about as much as 1.6 UNet steps on a GPU; this map costs
under a millisecond and is close enough for an artist to see where the image is going.
The factors are the published least-squares fits for each latent space. When the
artist has a tiny autoencoder (TAESD, `kd_server.taesd`) it decodes the preview
instead: far sharper, a few milliseconds on a GPU; the map stays the fallback.

The denoising thread only takes a `snapshot` of the latents; `render` runs on the
preview thread (`kd_server.preview_worker`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from PIL import Image

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


def latents_to_preview(latents: torch.Tensor, is_xl: bool, max_side: int = 256) -> Image.Image:
    """Map the first latent of a batch (C, H, W) to a small RGB image.

    The latent is 1/8 of the image size; it is upscaled to at most `max_side` pixels on
    its long side so the preview keeps the output's aspect.
    """
    factors = SDXL_LATENT_RGB if is_xl else SD15_LATENT_RGB
    bias = SDXL_BIAS if is_xl else SD15_BIAS
    latent = latents[0, :4].detach().float().cpu()
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
    latents: torch.Tensor, is_xl: bool, decode: Decode | None = None, max_side: int = PREVIEW_SIDE
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
