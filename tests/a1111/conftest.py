"""A real server for the A1111-API tests: uvicorn on a free loopback port (the v1
tests' helper), the real engine on CPU, and a model folder in A1111's layout with the
embedded tiny model, a second tiny SD1.5 checkpoint and a tiny LoRA.

Every generation is tiny (64x64, one or two steps): the machine is shared.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import webuiapi
from a1111.names import EMBEDDED, SECOND, UPSCALER

from api.live import LiveServer, start_server, stop_server
from kd_server.config import Settings
from modelkit.loras import write_test_lora
from modelkit.upscalers import write_esrgan
from support.control import Layout, write_control_models

#: ControlNets and the IP-Adapter where A1111 and its ControlNet extension keep them.
A1111_CONTROL = Layout(
    controlnet="models/ControlNet",
    ipadapter="extensions/sd-webui-controlnet/models",
    clip_vision="models/clip_vision",
    depth="models/depth",
)


@pytest.fixture(scope="session")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modelkit import ldm_layout

    root = tmp_path_factory.mktemp("a1111-models")
    checkpoints = root / "models" / "Stable-diffusion"
    checkpoints.mkdir(parents=True)
    pipe = ldm_layout.build_tiny_components("sd15", seed=5)
    path = ldm_layout.write_ldm_checkpoint(pipe, checkpoints / f"{SECOND}.safetensors")
    ldm_layout.save_config_folder(pipe, path.with_suffix(".config"))
    write_test_lora(root / "models" / "Lora", "bright", seed=1)
    write_esrgan(root / "models" / "ESRGAN" / f"{UPSCALER}.safetensors")
    write_control_models(root, layout=A1111_CONTROL)
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
