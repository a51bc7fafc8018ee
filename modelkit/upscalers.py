"""Tiny ESRGAN upscalers (RRDBNet), in the key layout of the published Real-ESRGAN files.

Real-ESRGAN's `RealESRGAN_x4plus` is BasicSR's `RRDBNet`: `conv_first`, residual
blocks `body.N.rdbM.convK`, `conv_body`, two nearest-neighbour upsampling convs
`conv_up1`/`conv_up2`, `conv_hr` and `conv_last`. The 2x variant
(`RealESRGAN_x2plus`) packs each 2x2 block of pixels into channels first (pixel
unshuffle), so its `conv_first` reads 12 channels. These stand-ins keep that layout
with 8 features and one block (the growth channels stay at the published 32, which
spandrel assumes), seeded small weights and a pass-through path, so the output stays
close to a nearest-neighbour enlargement. spandrel tells them apart from the names
and shapes alone, exactly as it does a real file, so the server
loads them through the same code path.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from safetensors.torch import save_file

FEATURES = 8
GROWTH = 32  # spandrel reads ESRGAN files with the published growth of 32
BLOCKS = 1


def _conv(out_channels: int, in_channels: int, generator: torch.Generator, gain: float) -> dict:
    weight = torch.randn(out_channels, in_channels, 3, 3, generator=generator) * gain
    return {"weight": weight, "bias": torch.zeros(out_channels)}


def _pass_through(tensors: dict[str, torch.Tensor], layer: str, sources: list[int]) -> None:
    """Make `layer` copy input channel `sources[c]` to output channel c (centre tap)."""
    weight = tensors[f"{layer}.weight"]
    for out_channel, source in enumerate(sources):
        weight[out_channel, source, 1, 1] += 1.0


def esrgan_tensors(scale: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """The tensors of a tiny `RRDBNet` upscaler of `scale` (4 or 2), by published name.

    Seeded small random weights, plus a pass-through path (channels 0..2 carry the
    picture from `conv_first` to `conv_last`), so the output is a slightly textured
    nearest-neighbour enlargement of the input: recognisable, and deterministic."""
    if scale not in (2, 4):
        raise ValueError("the tiny ESRGAN is made at 2x or 4x")
    generator = torch.Generator().manual_seed(seed)
    in_channels = 3 * (4 if scale == 2 else 1)  # the 2x model reads unshuffled pixels
    layers: dict[str, dict] = {"conv_first": _conv(FEATURES, in_channels, generator, 0.01)}
    for block in range(BLOCKS):
        for rdb in (1, 2, 3):
            for k in range(1, 6):
                out_channels = FEATURES if k == 5 else GROWTH
                layers[f"body.{block}.rdb{rdb}.conv{k}"] = _conv(
                    out_channels, FEATURES + (k - 1) * GROWTH, generator, 0.01
                )
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        layers[name] = _conv(FEATURES, FEATURES, generator, 0.01)
    layers["conv_last"] = _conv(3, FEATURES, generator, 0.01)
    tensors = {
        f"{layer}.{kind}": value.contiguous()
        for layer, params in layers.items()
        for kind, value in params.items()
    }
    # Pixel unshuffle puts sub-pixel (0, 0) of colour c in channel 4c.
    _pass_through(tensors, "conv_first", [0, 4, 8] if scale == 2 else [0, 1, 2])
    for name in ("conv_up1", "conv_up2", "conv_hr", "conv_last"):
        _pass_through(tensors, name, [0, 1, 2])
    return tensors


def write_esrgan(path: Path, scale: int = 4, seed: int = 0) -> Path:
    """Write a tiny ESRGAN upscaler; `.pth` paths get a plain (weights-only) pickle."""
    tensors = esrgan_tensors(scale, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".safetensors":
        save_file(tensors, str(path))
    else:
        torch.save({"params_ema": tensors}, path)
    return path


class _CreatesFile:
    """Unpickling this runs `open(target, "w")`: what a malicious model file does."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.target), "w"))


def write_malicious_pickle(path: Path, target: Path) -> Path:
    """A `.pth` whose unpickling would create `target` (for the refusal tests)."""
    tensors: dict[str, object] = dict(esrgan_tensors(4))
    tensors["payload"] = _CreatesFile(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tensors, path, pickle_module=pickle)
    return path
