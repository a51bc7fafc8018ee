"""Textual-inversion embedding files for tiny models, in the layouts artists have.

Written by the tests that check embeddings are found and change the picture: A1111's
SD 1.5 layout (`emb_params`), diffusers' `learned_embeds` (one tensor under the
token's name) and SDXL's `clip_l` + `clip_g`. The vectors are seeded noise at the
scale of real token embeddings, so a prompt naming one visibly differs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

#: Token embeddings of the tiny CLIP models are of this order.
SCALE = 0.5


def _vectors(count: int, width: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, width, generator=generator) * SCALE


def write_sd15_embedding(
    path: Path, width: int, vectors: int = 2, seed: int = 0, key: str = "emb_params"
) -> Path:
    """A one-encoder embedding: A1111's `emb_params` [vectors, width], or under another
    key (diffusers' file keeps it under its token, e.g. `<cat-toy>`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: _vectors(vectors, width, seed).contiguous()}, str(path))
    return path


def write_sdxl_embedding(
    path: Path, widths: tuple[int, int], vectors: int = 2, seed: int = 0
) -> Path:
    """SDXL's layout: `clip_l` (first encoder) and `clip_g` (second), same vector count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        "clip_l": _vectors(vectors, widths[0], seed).contiguous(),
        "clip_g": _vectors(vectors, widths[1], seed + 1).contiguous(),
    }
    save_file(tensors, str(path))
    return path
