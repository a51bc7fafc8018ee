"""PNG output carrying A1111-style generation parameters.

A1111, ComfyUI, Krita's own metadata viewer and many image browsers read the
`parameters` text chunk, so a result keeps its recipe wherever the file goes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, PngImagePlugin


@dataclass(frozen=True)
class ParameterText:
    prompt: str
    negative_prompt: str
    steps: int
    sampler: str
    cfg_scale: float
    seed: int
    width: int
    height: int
    model: str
    denoising_strength: float | None = None
    loras: tuple[tuple[str, float], ...] = ()

    def render(self) -> str:
        """The three-part A1111 layout: prompt, negative prompt, then key: value pairs."""
        lines = [self.prompt]
        if self.negative_prompt:
            lines.append(f"Negative prompt: {self.negative_prompt}")
        pairs = [
            ("Steps", str(self.steps)),
            ("Sampler", self.sampler),
            ("CFG scale", f"{self.cfg_scale:g}"),
            ("Seed", str(self.seed)),
            ("Size", f"{self.width}x{self.height}"),
            ("Model", self.model),
        ]
        if self.denoising_strength is not None:
            pairs.append(("Denoising strength", f"{self.denoising_strength:g}"))
        if self.loras:
            hashes = ", ".join(f"{name}: {weight:g}" for name, weight in self.loras)
            pairs.append(("Lora weights", f'"{hashes}"'))
        lines.append(", ".join(f"{key}: {value}" for key, value in pairs))
        return "\n".join(lines)


def encode_png(image: Image.Image, parameters: str, compress_level: int = 1) -> bytes:
    """PNG bytes with the `parameters` text chunk.

    Level 1 instead of PIL's default 6: the encoding sits between the end of the
    diffusion and the artist's first byte of the result. On a textured 1024x1024
    image level 1 took 0.42 s against 0.69 s at level 4, for files 11% larger
    (docs/performance.md); results mostly cross loopback, where size is free.
    """
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", parameters)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=compress_level)
    return buffer.getvalue()


def read_parameters(png: bytes) -> str | None:
    with Image.open(io.BytesIO(png)) as image:
        return image.info.get("parameters")
