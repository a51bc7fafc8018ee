"""ComfyUI's split layout: a transformer file plus text encoder and VAE files.

Flux and SD 3.5 are mostly shared as separate files: the transformer alone in
`models/unet` or `models/diffusion_models` (fp16, fp8 or GGUF), the text encoders in
`models/clip` or `models/text_encoders` (clip_l, clip_g, t5xxl) and the VAE in
`models/vae`. The library pairs each transformer with the parts its family needs and
lists the result as one checkpoint (`ModelFormat.SPLIT`) whose `parts` say where each
piece is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelParts:
    """The files a SPLIT checkpoint is assembled from (None: the family does not use it)."""

    transformer: Path
    vae: Path | None = None
    clip_l: Path | None = None
    clip_g: Path | None = None
    t5xxl: Path | None = None
    #: how the transformer file stores its weights: "fp8-e4m3fn", "gguf-q8_0", ...;
    #: None for plain fp16 / bf16 / fp32
    quantisation: str | None = None
