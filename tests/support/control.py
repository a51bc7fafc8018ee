"""Tiny control models in the folders artists keep them in, written once per session.

`write_control_models(root)` lays out what an A1111 or ComfyUI user has: ControlNets
(SD 1.5 in the original key layout, one in diffusers layout), an IP-Adapter with its
CLIP image encoder, and a Depth Anything estimator, all tiny stand-ins of the real
architectures for the embedded model (modelkit/control_models.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from modelkit import control_models

DEPTH = "tiny-depth"  # SD 1.5 ControlNet, original (A1111) key layout
LINES = "tiny-lines"  # SD 1.5 ControlNet, diffusers key layout
IP_ADAPTER = "tiny-ip-adapter"
ENCODER = "tiny-clip-vision"
ESTIMATOR = "tiny-depth-anything"


@dataclass(frozen=True)
class Layout:
    """Where each kind goes: ComfyUI's models/ subfolders by default."""

    controlnet: str = "models/controlnet"
    ipadapter: str = "models/ipadapter"
    clip_vision: str = "models/clip_vision"
    depth: str = "models/depth"


def write_control_models(root: Path, estimator: bool = True, layout: Layout = Layout()) -> Path:
    """The control models for the embedded checkpoint under `root` (a model folder)."""
    unet = control_models.embedded_unet()
    control_models.write_controlnet(root / layout.controlnet, DEPTH, unet, seed=11)
    control_models.write_controlnet(
        root / layout.controlnet, LINES, unet, seed=12, layout="diffusers"
    )
    control_models.write_ip_adapter(root / layout.ipadapter, IP_ADAPTER, unet, seed=13)
    control_models.write_image_encoder(root / layout.clip_vision, ENCODER, seed=14)
    if estimator:
        control_models.write_depth_estimator(root / layout.depth, ESTIMATOR, seed=15)
    return root


def disc(
    size: tuple[int, int] = (64, 64), background: str = "black", ink: str = "white"
) -> Image.Image:
    """A filled circle: a depth map of a ball, or (with ink on paper) a drawing."""
    image = Image.new("RGB", size, background)
    width, height = size
    ImageDraw.Draw(image).ellipse(
        (width // 5, height // 5, 4 * width // 5, 4 * height // 5), fill=ink
    )
    return image


def outline(
    size: tuple[int, int] = (64, 64), background: str = "white", ink: str = "black"
) -> Image.Image:
    """A drawn square outline, as an artist sketches: dark lines on a light sheet."""
    image = Image.new("RGB", size, background)
    width, height = size
    ImageDraw.Draw(image).rectangle(
        (width // 4, height // 4, 3 * width // 4, 3 * height // 4), outline=ink, width=2
    )
    return image


def write_tensors(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    """A safetensors file with these tensor names and shapes (zeros): enough for the
    library, which reads headers only, to tell what a real file of that layout is."""
    import torch
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {name: torch.zeros(shape, dtype=torch.float16) for name, shape in shapes.items()}, str(path)
    )
    return path


#: The names that make a ControlNet an SDXL one (its added time embedding), tiny shapes.
SDXL_CONTROLNET_HEADER = {
    "controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3),
    "controlnet_down_blocks.0.weight": (32, 32, 1, 1),
    "add_embedding.linear_1.weight": (32, 16),
    "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": (64, 2048),
}
