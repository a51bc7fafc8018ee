"""A ComfyUI models folder of tiny Flux.1 and SD 3.5 files, for the tests that load them.

`write_tiny_models(root)` builds the five tiny pipelines (`modelkit.flux_sd3`) and writes
them the ways people share them (modelkit/flux_sd3_files.py), each transformer or
checkpoint with its `<name>.config/` sidecar (the shipped configs describe the full-size
models):

    root/diffusion_models/  flux1-dev-tiny, flux1-schnell-tiny, flux1-fill-tiny,
                            sd3.5_medium-tiny, sd3.5_large-tiny      (.safetensors, fp32)
                            flux1-dev-tiny-fp8.safetensors           (fp8 matrices)
                            flux1-dev-tiny-Q8_0.gguf, sd3.5_large-tiny-Q8_0.gguf
    root/text_encoders/     clip_l, clip_g, t5xxl_tiny               (.safetensors, fp32)
    root/vae/               ae.safetensors (Flux), sd3.5_vae.safetensors
    root/checkpoints/       flux1-dev-tiny-aio, sd3.5_medium-tiny-aio (all-in-one, fp32),
                            flux1-schnell-tiny-diffusers/, sd3.5_large-tiny-diffusers/
                            (diffusers folders, tokenizers included)

The text encoders and VAEs are shared between the transformers as in real life (the
builders seed them alike), so every split transformer pairs with the same parts.
fp32 files: what a loader reads back equals the in-memory pipeline exactly.

In a module fixture, `session_models(tmp_path_factory)` gives the folder written once
per test session (read-only; `write_tiny_models(root)` writes a private one). The
library names entries by their file name (`flux1-dev-tiny`, `flux1-dev-tiny-aio`, ...;
GGUF ones keep `.gguf`); `TinyModels.pipes` / `pipe_of(name)` hold the pipelines.
Generate at 64x64 with `max_sequence_length=32` to stay fast (~0.1 s for 2 steps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

#: kind -> (the transformer's file stem, the family's wire value)
TRANSFORMERS = {
    "dev": ("flux1-dev-tiny", "flux-dev"),
    "schnell": ("flux1-schnell-tiny", "flux-schnell"),
    "fill": ("flux1-fill-tiny", "flux-fill"),
    "medium": ("sd3.5_medium-tiny", "sd35-medium"),
    "large": ("sd3.5_large-tiny", "sd35-large"),
}
FLUX_KINDS = ("dev", "schnell", "fill")
SD35_KINDS = ("medium", "large")
#: Other entries: name -> (kind, how it is written)
EXTRA = {
    "flux1-dev-tiny-fp8": ("dev", "fp8"),
    "flux1-dev-tiny-Q8_0": ("dev", "gguf"),
    "sd3.5_large-tiny-Q8_0": ("large", "gguf"),
    "flux1-dev-tiny-aio": ("dev", "all-in-one"),
    "sd3.5_medium-tiny-aio": ("medium", "all-in-one"),
    "flux1-schnell-tiny-diffusers": ("schnell", "diffusers"),
    "sd3.5_large-tiny-diffusers": ("large", "diffusers"),
}


@dataclass
class TinyModels:
    root: Path  # the models folder to give ModelLibrary
    pipes: dict[str, Any] = field(default_factory=dict)  # kind -> in-memory pipeline
    files: dict[str, Path] = field(default_factory=dict)  # entry name / part -> path

    def pipe_of(self, name: str) -> Any:
        """The in-memory pipeline an entry was written from."""
        for kind, (stem, _) in TRANSFORMERS.items():
            if name == stem:
                return self.pipes[kind]
        return self.pipes[EXTRA[name][0]]


_SESSION: dict[str, TinyModels] = {}


def session_models(tmp_path_factory: Any) -> TinyModels:
    """The folder written once per test session (build + write ~2 s); treat it as
    read-only: copy a file before changing or removing it."""
    if "models" not in _SESSION:
        root = tmp_path_factory.mktemp("flux-sd3") / "models"
        _SESSION["models"] = write_tiny_models(root)
    return _SESSION["models"]


def build_pipes(seed: int = 0) -> dict[str, Any]:
    from modelkit.flux_sd3 import build_tiny_flux, build_tiny_sd35

    pipes: dict[str, Any] = {kind: build_tiny_flux(kind, seed) for kind in FLUX_KINDS}  # type: ignore[arg-type]
    pipes.update({kind: build_tiny_sd35(kind, seed) for kind in SD35_KINDS})  # type: ignore[arg-type]
    return pipes


def write_tiny_models(root: Path, seed: int = 0, pipes: dict[str, Any] | None = None) -> TinyModels:
    """Write the folder described in the module docstring under `root` (made if needed)."""
    from modelkit import flux_sd3_files as files

    pipes = pipes or build_pipes(seed)
    models = TinyModels(Path(root), pipes)
    transformers = models.root / "diffusion_models"
    checkpoints = models.root / "checkpoints"
    encoders = models.root / "text_encoders"
    vaes = models.root / "vae"
    f32 = torch.float32
    for kind, (stem, _) in TRANSFORMERS.items():
        path = files.write_transformer(pipes[kind], transformers / f"{stem}.safetensors", f32)
        files.write_config_folder(pipes[kind], path.with_suffix(".config"))
        models.files[stem] = path
    flux, sd3 = pipes["dev"], pipes["medium"]
    models.files["clip_l"] = files.write_text_encoder(
        flux, "clip_l", encoders / "clip_l.safetensors", f32
    )
    models.files["clip_g"] = files.write_text_encoder(
        sd3, "clip_g", encoders / "clip_g.safetensors", f32
    )
    models.files["t5xxl"] = files.write_text_encoder(
        flux, "t5xxl", encoders / "t5xxl_tiny.safetensors", f32
    )
    models.files["flux-vae"] = files.write_vae(flux, vaes / "ae.safetensors")
    models.files["sd3-vae"] = files.write_vae(sd3, vaes / "sd3.5_vae.safetensors")
    for name, (kind, how) in EXTRA.items():
        pipe = pipes[kind]
        if how == "fp8":
            path = files.write_transformer(pipe, transformers / f"{name}.safetensors", fp8=True)
        elif how == "gguf":
            path = files.write_gguf_transformer(pipe, transformers / f"{name}.gguf")
        elif how == "all-in-one":
            path = files.write_all_in_one(pipe, checkpoints / f"{name}.safetensors", f32)
        else:
            path = files.write_diffusers_folder(pipe, checkpoints / name)
        if how != "diffusers":
            files.write_config_folder(pipe, path.with_suffix(".config"))
        models.files[name] = path
    return models
