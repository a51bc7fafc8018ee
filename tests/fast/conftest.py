"""A model folder of fast-model stand-ins and a tiny preview decoder, and a real server.

Each stand-in is a real file of the kind an artist downloads (a LoRA in diffusers
format for the embedded model, a single-file checkpoint in the original layout), with
the naming or the safetensors metadata of the real one: the kind is read from those,
exactly as for the real files. Every generation is tiny (64x64, a few steps).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.live import LiveServer, start_server, stop_server
from kd_server.config import Settings
from modelkit.loras import write_test_lora
from modelkit.taesd import write_taesd_decoder

#: LoRA name -> (seed, metadata): the kind comes from the name or from the metadata.
LORAS: dict[str, tuple[int, dict[str, str]]] = {
    "lcm-lora-sdv1-5": (1, {}),
    "Hyper-SD15-8steps-CFG-lora": (2, {}),
    "turbo-details": (3, {}),
    "lightning/pytorch_lora_weights": (4, {}),  # the kind is in the folder's name
    "brush-strokes": (5, {"ss_output_name": "sd15_lightning_2step_lora"}),
    "ink": (6, {"ss_output_name": "ink_style_v2"}),  # an ordinary LoRA
}
#: A merged checkpoint whose name says nothing, but whose metadata does.
FAST_CHECKPOINT = "merge-v3"
FAST_CHECKPOINT_TITLE = "Merge v3 LCM"
#: The TAESD stand-in decodes every latent to this colour (modelkit.taesd).
PREVIEW_COLOUR = (200, 40, 90)


@pytest.fixture(scope="session")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kd_server.tiny_model import build_embedded_pipeline
    from modelkit import ldm_layout

    root = tmp_path_factory.mktemp("fast-models")
    unet = build_embedded_pipeline().unet
    for name, (seed, metadata) in LORAS.items():
        write_test_lora(root / "loras", name, seed, unet=unet, scale=0.2, metadata=metadata)
    pipe = ldm_layout.build_tiny_components("sd15", seed=7)
    path = ldm_layout.write_ldm_checkpoint(
        pipe,
        root / "checkpoints" / f"{FAST_CHECKPOINT}.safetensors",
        metadata={"modelspec.title": FAST_CHECKPOINT_TITLE},
    )
    ldm_layout.save_config_folder(pipe, path.with_suffix(".config"))
    decoders = root / "vae_approx"  # as in ComfyUI's models/ folder
    write_taesd_decoder(decoders / "taesd_decoder.safetensors", colour=PREVIEW_COLOUR)
    (decoders / "taesdxl_decoder.pth").write_bytes(b"\x80\x04 a pickle: never opened")
    return root


@pytest.fixture(scope="session")
def library(models_root: Path) -> Any:
    from kd_server.library import EMBEDDED_NAME, ModelLibrary

    return ModelLibrary([models_root], default_model=EMBEDDED_NAME)


@pytest.fixture(scope="session")
def engine(library: Any) -> Any:
    from kd_server.engine import Engine

    return Engine(library, device="cpu")


@pytest.fixture(scope="session")
def server(engine: Any, library: Any) -> Iterator[LiveServer]:
    live = start_server(Settings(device="cpu"), engine, library)
    yield live
    stop_server(live)
