"""Write the shipped configs of control models under resources/model-configs/.

Why this exists: ControlNet, CLIP image encoder and depth estimator files carry only
weights, and diffusers/transformers would fetch their configs from the hub. We ship
them instead:

- ControlNets (plain and union) are derived from the shipped UNet config of their
  family with diffusers' own `from_unet` (a ControlNet is a copy of the UNet's
  encoder), built on the meta device so no weights are allocated.
- The CLIP vision encoders (ViT-H-14 for SD 1.5 and most SDXL IP-Adapters, ViT-bigG-14
  for the original SDXL ones) and Depth Anything V2 (small, base, large) are written
  from their published sizes.

The loader checks every file against its config tensor by tensor, so a config that
does not fit a file is reported when it loads, never used silently.

Usage (the output is committed; rerun only to rebuild it):

    python resources/make_control_configs.py [-o resources/model-configs]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

CLIP_VISION = {
    "clip-vision-vit-h": {"hidden_size": 1280, "intermediate_size": 5120, "layers": 32,
                          "heads": 16, "projection_dim": 1024},
    "clip-vision-vit-bigg": {"hidden_size": 1664, "intermediate_size": 8192, "layers": 48,
                             "heads": 16, "projection_dim": 1280},
}  # fmt: skip

DEPTH_ANYTHING_V2 = {
    "depth-anything-v2-small": {"hidden_size": 384, "heads": 6, "layers": 12,
                                "out_indices": [3, 6, 9, 12],
                                "neck": [48, 96, 192, 384], "fusion": 64},
    "depth-anything-v2-base": {"hidden_size": 768, "heads": 12, "layers": 12,
                               "out_indices": [3, 6, 9, 12],
                               "neck": [96, 192, 384, 768], "fusion": 128},
    "depth-anything-v2-large": {"hidden_size": 1024, "heads": 16, "layers": 24,
                                "out_indices": [5, 12, 18, 24],
                                "neck": [256, 512, 1024, 1024], "fusion": 256},
}  # fmt: skip


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(path)


def controlnet_configs(out: Path) -> None:
    import torch
    from diffusers import ControlNetModel, ControlNetUnionModel, UNet2DConditionModel

    for family, name, cls in (
        ("sd15", "controlnet-sd15", ControlNetModel),
        ("sdxl", "controlnet-sdxl", ControlNetModel),
        ("sdxl", "controlnet-union-sdxl", ControlNetUnionModel),
    ):
        unet_config = json.loads((out / family / "unet" / "config.json").read_text())
        with torch.device("meta"):
            unet = UNet2DConditionModel.from_config(unet_config)
            controlnet = cls.from_unet(unet, load_weights_from_unet=False)
        config = {k: v for k, v in dict(controlnet.config).items() if not k.startswith("_")}
        _write(out / name / "config.json", {"_class_name": cls.__name__, **config})


def clip_vision_configs(out: Path) -> None:
    for name, size in CLIP_VISION.items():
        _write(
            out / name / "config.json",
            {
                "architectures": ["CLIPVisionModelWithProjection"],
                "model_type": "clip_vision_model",
                "hidden_act": "gelu",
                "hidden_size": size["hidden_size"],
                "intermediate_size": size["intermediate_size"],
                "num_hidden_layers": size["layers"],
                "num_attention_heads": size["heads"],
                "projection_dim": size["projection_dim"],
                "image_size": 224,
                "patch_size": 14,
                "num_channels": 3,
                "layer_norm_eps": 1e-05,
            },
        )


def depth_configs(out: Path) -> None:
    for name, size in DEPTH_ANYTHING_V2.items():
        stages = [f"stage{i}" for i in size["out_indices"]]
        _write(
            out / name / "config.json",
            {
                "architectures": ["DepthAnythingForDepthEstimation"],
                "model_type": "depth_anything",
                "backbone_config": {
                    "model_type": "dinov2",
                    "hidden_size": size["hidden_size"],
                    "num_attention_heads": size["heads"],
                    "num_hidden_layers": size["layers"],
                    "image_size": 518,
                    "patch_size": 14,
                    "out_features": stages,
                    "out_indices": size["out_indices"],
                    "reshape_hidden_states": False,
                },
                "depth_estimation_type": "relative",
                "fusion_hidden_size": size["fusion"],
                "head_hidden_size": 32,
                "head_in_index": -1,
                "neck_hidden_sizes": size["neck"],
                "patch_size": 14,
                "reassemble_factors": [4, 2, 1, 0.5],
                "reassemble_hidden_size": size["hidden_size"],
                "use_pretrained_backbone": False,
            },
        )
        _write(
            out / name / "preprocessor_config.json",
            {
                "image_processor_type": "DPTImageProcessor",
                "do_resize": True,
                "size": {"height": 518, "width": 518},
                "keep_aspect_ratio": True,
                "ensure_multiple_of": 14,
                "resample": 3,
                "do_rescale": True,
                "rescale_factor": 1 / 255,
                "do_normalize": True,
                "image_mean": [0.485, 0.456, 0.406],
                "image_std": [0.229, 0.224, 0.225],
                "do_pad": False,
            },
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=HERE / "model-configs")
    args = parser.parse_args()
    controlnet_configs(args.out)
    clip_vision_configs(args.out)
    depth_configs(args.out)


if __name__ == "__main__":
    main()
