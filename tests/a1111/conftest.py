"""A real server for the A1111-API tests: uvicorn on a free loopback port (the v1
tests' helper), the real engine on CPU, and a model folder in A1111's layout with the
embedded tiny model, a second tiny SD1.5 checkpoint and a tiny LoRA.

Every generation is tiny (64x64, one or two steps): the machine is shared.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import webuiapi
from a1111.names import EMBEDDED, SECOND
from api.live import LiveServer, start_server, stop_server

from kd_server.config import Settings


def _write_lora(folder: Path, name: str, seed: int) -> None:
    """A real LoRA for the embedded model's attention layers (diffusers format)."""
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    from kd_server.tiny_model import build_embedded_pipeline

    unet = build_embedded_pipeline().unet
    config = LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    unet = inject_adapter_in_model(config, unet, adapter_name="default")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param_name, param in unet.named_parameters():
            if "lora_" in param_name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    folder.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(
        str(folder),
        unet_lora_layers=get_peft_model_state_dict(unet, adapter_name="default"),
        weight_name=f"{name}.safetensors",
    )


@pytest.fixture(scope="session")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from support import ldm_layout

    root = tmp_path_factory.mktemp("a1111-models")
    checkpoints = root / "models" / "Stable-diffusion"
    checkpoints.mkdir(parents=True)
    pipe = ldm_layout.build_tiny_components("sd15", seed=5)
    path = ldm_layout.write_ldm_checkpoint(pipe, checkpoints / f"{SECOND}.safetensors")
    ldm_layout.save_config_folder(pipe, path.with_suffix(".config"))
    _write_lora(root / "models" / "Lora", "bright", seed=1)
    return root


@pytest.fixture(scope="session")
def library(models_root: Path) -> Any:
    from kd_server.library import ModelLibrary

    return ModelLibrary([models_root])


@pytest.fixture(scope="session")
def engine(library: Any) -> Any:
    from kd_server.engine import Engine

    return Engine(library, device="cpu")


@pytest.fixture(scope="session")
def server(engine: Any, library: Any) -> Iterator[LiveServer]:
    live = start_server(Settings(device="cpu"), engine, library)
    yield live
    stop_server(live)


@pytest.fixture(autouse=True)
def embedded_model(request: pytest.FixtureRequest) -> None:
    """Each test starts on the embedded model (the library's default is the file)."""
    if "server" in request.fixturenames:
        live: LiveServer = request.getfixturevalue("server")
        response = live.post("/sdapi/v1/options", json={"sd_model_checkpoint": EMBEDDED})
        assert response.status_code == 200, response.text


@pytest.fixture
def api(server: LiveServer) -> webuiapi.WebUIApi:
    """The third-party client, pointed at our server with only the URL changed."""
    return webuiapi.WebUIApi(baseurl=server.url + "/sdapi/v1", sampler="Euler", steps=2)


@pytest.fixture
def server_factory(engine: Any, library: Any) -> Iterator[Callable[..., LiveServer]]:
    started: list[LiveServer] = []

    def factory(**settings: Any) -> LiveServer:
        live = start_server(Settings(device="cpu", **settings), engine, library)
        started.append(live)
        return live

    yield factory
    for live in started:
        with contextlib.suppress(Exception):
            stop_server(live)
