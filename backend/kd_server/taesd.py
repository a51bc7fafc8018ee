"""A TAESD decoder loaded for previews: diffusers' `DecoderTiny` (the decoder of
`AutoencoderTiny`) with the weights of the artist's file, on the model's device.

Why only the decoder: previews never encode. The file's layout is mapped by
`kd_server.taesd_files`; the channel width is read from the weights (64 in the
published files), so a stand-in of the same architecture with fewer channels loads
through the very same code. A file that does not load is logged once and the
previews use the latent map instead: a preview is never worth a failed job.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image

from kd_server.devices import DeviceChoice
from kd_server.families import Family
from kd_server.taesd_files import FIRST_CONV, PreviewDecoder, decoder_key

log = logging.getLogger(__name__)

#: DecoderTiny's stages, as in every published TAESD decoder.
NUM_BLOCKS = (3, 3, 3, 1)
#: A latent pixel is 8x8 image pixels (three 2x upsamplings).
LATENT_SCALE = 8


class TaesdError(Exception):
    """The file is not a loadable TAESD decoder; the message says why."""


def load_state(path: str) -> dict[str, torch.Tensor]:
    """The decoder's tensors under `DecoderTiny`'s names."""
    from safetensors.torch import load_file

    state = {decoder_key(key): value for key, value in load_file(path).items()}
    return {key: value for key, value in state.items() if key is not None}


def build_decoder(width: int, latent_channels: int = 4) -> torch.nn.Module:
    """An empty `DecoderTiny` of TAESD's architecture with `width` channels."""
    from diffusers.models.autoencoders.vae import DecoderTiny

    return DecoderTiny(
        in_channels=latent_channels,
        out_channels=3,
        num_blocks=NUM_BLOCKS,
        block_out_channels=(width,) * len(NUM_BLOCKS),
        upsampling_scaling_factor=2,
        act_fn="relu",
        upsample_fn="nearest",
    )


def load_decoder(path: str, device: torch.device | str, dtype: torch.dtype) -> torch.nn.Module:
    """The file's decoder, ready for inference; TaesdError if it does not fit."""
    state = load_state(path)
    first = state.get(FIRST_CONV)
    if first is None or first.ndim != 4:
        raise TaesdError(f"{path} has no TAESD input convolution ({FIRST_CONV}).")
    module = build_decoder(width=first.shape[0], latent_channels=first.shape[1])
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise TaesdError(f"{path} does not have TAESD's architecture: {exc}") from exc
    return module.eval().requires_grad_(False).to(device=device, dtype=dtype)


def decode_preview(module: torch.nn.Module, latents: torch.Tensor, max_side: int) -> Image.Image:
    """The first latent of a batch as an RGB image of at most `max_side` pixels.

    Latents larger than the preview needs are averaged down first (by a power of two,
    never below `max_side`): an SDXL 1024x1024 preview then costs what a 256x256 one
    does instead of 16 times more."""
    parameter = next(module.parameters())
    channels = parameter.shape[1]  # the input convolution's: 4, or 16 (SD 3, Flux)
    latent = latents[:1, :channels].to(device=parameter.device, dtype=parameter.dtype)
    factor = 1
    while max(latent.shape[-2:]) // (factor * 2) * LATENT_SCALE >= max_side:
        factor *= 2
    if factor > 1:
        latent = F.avg_pool2d(latent, factor)
    rgb = module(latent)[0].float()  # -1..1, DecoderTiny's convention
    pixels = ((rgb + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    image = Image.fromarray(pixels.permute(1, 2, 0).cpu().numpy(), mode="RGB")
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return image


@dataclass
class _Loaded:
    signature: tuple[str, int, int]  # path, size, mtime: a replaced file loads again
    module: torch.nn.Module | None  # None: the file failed to load (logged once)


class PreviewDecoders:
    """The loaded TAESD decoder of each family, on the engine's device and dtype."""

    def __init__(self, device: DeviceChoice) -> None:
        self.device = device
        self._loaded: dict[Family, _Loaded] = {}
        self._lock = threading.Lock()

    def module_for(self, entry: PreviewDecoder | None) -> torch.nn.Module | None:
        """The decoder of `entry` (the library's choice for a family), loaded once per
        file version; None without one or when it does not load."""
        if entry is None or entry.family is None:
            return None
        try:
            info = entry.path.stat()
        except OSError:
            return None
        signature = (str(entry.path), info.st_size, info.st_mtime_ns)
        with self._lock:
            loaded = self._loaded.get(entry.family)
            if loaded is None or loaded.signature != signature:
                loaded = _Loaded(signature, self._load(entry))
                self._loaded[entry.family] = loaded
            return loaded.module

    def _load(self, entry: PreviewDecoder) -> torch.nn.Module | None:
        try:
            module = load_decoder(str(entry.path), self.device.device, self.device.dtype)
        except Exception as exc:
            log.warning("Previews use the latent map: %s could not be loaded (%s)", entry.name, exc)
            return None
        log.info("Previews use the tiny VAE %s", entry.path)
        return module
