"""Tiny TAESD decoder files, in the layout the published `taesd_decoder.safetensors` has.

The published decoder is the `nn.Sequential` of madebyollin's TAESD: item 0 is a clamp
without weights, so its tensors are named `1.weight` ... `19.bias`. These stand-ins
have that architecture (diffusers' `DecoderTiny`, 4 stages of 3, 3, 3 and 1 blocks)
with fewer channels, seeded weights, and are written under those names, so the server
finds and loads them exactly as it does a real one. `colour` makes every decode one
flat colour, which no latent-to-RGB map would produce: a test can tell at a glance
which of the two made a preview.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from kd_server.taesd import build_decoder


def build_test_decoder(
    width: int = 8, seed: int = 0, colour: tuple[int, int, int] | None = None
) -> Any:
    """A `DecoderTiny` with seeded weights (or a flat-`colour` output)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module: Any = build_decoder(width)
        with torch.no_grad():
            for parameter in module.parameters():
                parameter.normal_(0.0, 0.2)
            if colour is not None:
                last = module.layers[-1]
                last.weight.zero_()
                last.bias.copy_(torch.tensor(colour, dtype=torch.float32) / 255.0)
    return module.eval()


def original_layout(module: Any) -> dict[str, torch.Tensor]:
    """`DecoderTiny`'s tensors under the published file's names (`layers.N` -> `N+1`)."""
    tensors: dict[str, torch.Tensor] = {}
    for key, value in module.state_dict().items():
        _, index, rest = key.split(".", 2)
        tensors[f"{int(index) + 1}.{rest}"] = value.detach().contiguous().clone()
    return tensors


def write_taesd_decoder(
    path: Path,
    width: int = 8,
    seed: int = 0,
    colour: tuple[int, int, int] | None = None,
    diffusers_layout: bool = False,
) -> Path:
    """Write a decoder file; `diffusers_layout`: the names of an `AutoencoderTiny`'s
    weights (`decoder.layers.N...`) instead of the published decoder's."""
    module = build_test_decoder(width, seed, colour)
    if diffusers_layout:
        tensors = {f"decoder.{k}": v.contiguous().clone() for k, v in module.state_dict().items()}
    else:
        tensors = original_layout(module)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path
