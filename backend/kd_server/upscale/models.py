"""Upscaler models: load one safely, keep it warm, run it tile by tile.

Loading: safetensors are read as tensors only; a pickle (`.pth`, the usual form of
ESRGAN files) only through torch's weights-only unpickler, which refuses any object
that is not a tensor or a plain container before it is built, so a file cannot run
code (`files.load_pickle`). spandrel then builds the architecture from the tensors.
spandrel's own file loader is not used: it would open `.pt` files with TorchScript.

Running: the picture is cut into overlapping tiles of at most `TILE` input pixels
(`tiling`), each tile is enlarged alone, and the enlarged tiles are blended a strip
at a time, so memory follows the tile, not the picture.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from kd_server.devices import DeviceChoice, is_out_of_memory
from kd_server.generation import EngineError, EngineErrorCode
from kd_server.upscale.files import (
    PICKLE_WITH_CODE,
    UnsafePickle,
    UpscalerFile,
    load_pickle,
    refusal,
    state_dict_of,
)
from kd_server.upscale.tiling import StripBlender, Tile, tile_grid

log = logging.getLogger(__name__)

#: Input pixels per tile side, and the overlap between tiles (input pixels). An
#: ESRGAN's activations for a 192 px tile at 4x take about 0.5 GB in float32.
TILE = 192
OVERLAP = 16

TileDone = Callable[[], None]


@dataclass
class LoadedUpscaler:
    name: str
    signature: tuple[str, int, int]  # path, size, mtime: a replaced file loads again
    descriptor: Any  # spandrel's ImageModelDescriptor
    scale: int
    multiple_of: int
    minimum: int


def _signature(entry: UpscalerFile) -> tuple[str, int, int]:
    info = entry.path.stat()
    return (str(entry.path), info.st_size, info.st_mtime_ns)


def unusable(entry: UpscalerFile, reason: str) -> EngineError:
    return EngineError(
        EngineErrorCode.UPSCALER_UNUSABLE, f"The upscaler '{entry.name}' cannot be used: {reason}"
    )


class UpscalerRuntime:
    """One warm upscaler at a time (they are small next to a checkpoint)."""

    def __init__(self, device: DeviceChoice) -> None:
        self.device = device
        self._warm: LoadedUpscaler | None = None
        self._lock = threading.Lock()

    def load(self, entry: UpscalerFile) -> LoadedUpscaler:
        if not entry.usable:
            raise unusable(entry, entry.reason or "it is not usable.")
        with self._lock:
            signature = _signature(entry)
            if self._warm is not None and self._warm.signature == signature:
                return self._warm
            self._warm = None
            self._warm = self._load(entry, signature)
            return self._warm

    def unload(self) -> None:
        with self._lock:
            self._warm = None

    def _load(self, entry: UpscalerFile, signature: tuple[str, int, int]) -> LoadedUpscaler:
        from kd_server.upscale.spandrel_import import import_spandrel

        spandrel = import_spandrel()
        try:
            tensors = _read_tensors(entry)
            descriptor = spandrel.MAIN_REGISTRY.load(tensors)
        except UnsafePickle as exc:
            raise unusable(entry, PICKLE_WITH_CODE) from exc
        except Exception as exc:
            if is_out_of_memory(exc):
                raise
            log.exception("Loading the upscaler %s failed", entry.name)
            raise unusable(
                entry, f"it did not load ({type(exc).__name__}; the server log has the details)."
            ) from exc
        reason = refusal(descriptor)
        if reason is not None:
            raise unusable(entry, reason)
        descriptor.eval()
        use_half = self.device.device.type == "cuda" and descriptor.supports_half
        descriptor.to(self.device.device, dtype=torch.float16 if use_half else torch.float32)
        requirements = descriptor.size_requirements
        return LoadedUpscaler(
            entry.name,
            signature,
            descriptor,
            int(descriptor.scale),
            max(1, int(requirements.multiple_of)),
            max(1, int(requirements.minimum)),
        )


def _read_tensors(entry: UpscalerFile) -> dict[str, Any]:
    if entry.is_pickle:
        return load_pickle(entry.path, device="cpu")
    from safetensors.torch import load_file

    return state_dict_of(load_file(str(entry.path), device="cpu"))


def model_tiles(width: int, height: int, tile: int = TILE) -> list[list[Tile]]:
    """The input tiles a model upscale of a `width` x `height` picture runs."""
    return tile_grid(width, height, tile, OVERLAP)


def run_model(
    model: LoadedUpscaler,
    image: Image.Image,
    on_tile: TileDone | None = None,
    tile: int = TILE,
) -> Image.Image:
    """`image` enlarged `model.scale` times, tile by tile; `on_tile` after each tile
    (progress, and the place a cancel is noticed: it may raise)."""
    image = image.convert("RGB")
    scale = model.scale
    rows = model_tiles(image.width, image.height, tile)
    scaled = [[part.scaled(scale) for part in row] for row in rows]
    blender = StripBlender(image.width * scale, image.height * scale)
    for index, row in enumerate(rows):
        for part, target in zip(row, scaled[index], strict=True):
            blender.add(target, _run_tile(model, image.crop(part.box)))
            if on_tile is not None:
                on_tile()
        blender.end_row(scaled, index)
    return blender.finish()


def _run_tile(model: LoadedUpscaler, crop: Image.Image) -> Image.Image:
    """One tile through the model, padded (reflected) to the sizes it accepts."""
    width, height = crop.size
    pad_w = _padded(width, model)
    pad_h = _padded(height, model)
    pixels = torch.from_numpy(np.asarray(crop, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    if (pad_w, pad_h) != (width, height):
        mode = "reflect" if min(width, height) > 1 else "replicate"
        pixels = torch.nn.functional.pad(pixels, (0, pad_w - width, 0, pad_h - height), mode=mode)
    descriptor = model.descriptor
    parameter = next(descriptor.model.parameters())
    with torch.inference_mode():
        out = descriptor(pixels.to(parameter.device, parameter.dtype))
    out = out[0, :, : height * model.scale, : width * model.scale].float().clamp(0, 1)
    array = (out.permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    return Image.fromarray(array, "RGB")


def _padded(size: int, model: LoadedUpscaler) -> int:
    size = max(size, model.minimum)
    return -(-size // model.multiple_of) * model.multiple_of


def lanczos(image: Image.Image, width: int, height: int) -> Image.Image:
    """The enlargement without a model."""
    return image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)


#: The model's own output may exceed the target (a 4x model asked for 2x); past this
#: side the input is shrunk first, so the intermediate picture stays bounded.
MAX_MODEL_OUTPUT = 8192


def enlarge(
    image: Image.Image,
    model: LoadedUpscaler | None,
    width: int,
    height: int,
    on_tile: TileDone | None = None,
) -> Image.Image:
    """`image` at `width` x `height`: through the model (then Lanczos to the exact
    size), or Lanczos alone without one."""
    if model is None:
        return lanczos(image, width, height)
    source = fit_for_model(image, model.scale, width, height)
    enlarged = run_model(model, source, on_tile)
    if enlarged.size != (width, height):
        enlarged = lanczos(enlarged, width, height)
    return enlarged


def fit_for_model(image: Image.Image, scale: int, width: int, height: int) -> Image.Image:
    """The input to give a `scale`x model for a `width` x `height` target: the image
    itself, unless the model's output would pass `MAX_MODEL_OUTPUT` on a side."""
    limit = max(width, height, MAX_MODEL_OUTPUT)
    largest = max(image.width, image.height) * scale
    if largest <= limit:
        return image
    factor = limit / largest
    size = (max(1, int(image.width * factor)), max(1, int(image.height * factor)))
    return image.resize(size, Image.Resampling.LANCZOS)


def model_tile_count(
    image_size: tuple[int, int], model: LoadedUpscaler | None, width: int, height: int
) -> int:
    """How many tiles `enlarge` runs (its share of a job's progress)."""
    if model is None:
        return 0
    w, h = image_size
    limit = max(width, height, MAX_MODEL_OUTPUT)
    largest = max(w, h) * model.scale
    if largest > limit:
        factor = limit / largest
        w, h = max(1, int(w * factor)), max(1, int(h * factor))
    return sum(len(row) for row in model_tiles(w, h))
