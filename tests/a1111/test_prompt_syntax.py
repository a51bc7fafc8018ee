"""A1111's prompt syntax and clip skip through the A1111 API (raw requests): emphasis
changes the picture and is recorded as sent; CLIP_stop_at_last_layers is honoured per
request in override_settings and written as "Clip skip" in the infotext."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from a1111.names import EMBEDDED
from PIL import Image

from api.live import LiveServer
from modelkit.embeddings import write_sd15_embedding
from modelkit.vaes import embedded_vae, write_vae

SMALL = {"width": 64, "height": 64, "steps": 2, "sampler_name": "Euler", "seed": 11}
CLIP_SKIP = "CLIP_stop_at_last_layers"


def txt2img(server: LiveServer, **fields: Any) -> dict[str, Any]:
    response = server.post("/sdapi/v1/txt2img", json={"prompt": "a cup", **SMALL, **fields})
    assert response.status_code == 200, response.text
    return dict(response.json())


def infotext(result: dict[str, Any]) -> str:
    return str(json.loads(result["info"])["infotexts"][0])


def decoded(result: dict[str, Any]) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(result["images"][0]))) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_emphasis_changes_the_picture_and_is_recorded_as_sent(server: LiveServer) -> None:
    plain = txt2img(server, prompt="a red cup")
    weighted = txt2img(server, prompt="a (red:1.5) [cup]")
    assert not np.array_equal(decoded(plain), decoded(weighted))
    assert infotext(weighted).startswith("a (red:1.5) [cup]\n")
    escaped = txt2img(server, prompt="a \\(red\\) cup")
    assert not np.array_equal(decoded(escaped), decoded(weighted))


def test_clip_skip_per_request(server: LiveServer) -> None:
    plain = txt2img(server)
    skipped = txt2img(server, override_settings={CLIP_SKIP: 2})
    assert not np.array_equal(decoded(plain), decoded(skipped))
    assert "Clip skip: 2" in infotext(skipped) and "Clip skip" not in infotext(plain)
    same = txt2img(server, override_settings={CLIP_SKIP: 1})
    assert np.array_equal(decoded(plain), decoded(same))


def test_bad_clip_skip_is_refused(server: LiveServer) -> None:
    for value in (0, 13, 1.5, "two"):
        body = {"prompt": "x", **SMALL, "override_settings": {CLIP_SKIP: value}}
        response = server.post("/sdapi/v1/txt2img", json=body)
        assert response.status_code == 422, value
        assert CLIP_SKIP in response.json()["error"]["message"]
    response = server.post("/sdapi/v1/options", json={CLIP_SKIP: 2})
    assert response.status_code == 422
    assert "override_settings" in response.json()["error"]["message"]
    assert server.post("/sdapi/v1/options", json={CLIP_SKIP: 1}).status_code == 200


# ------------------------------------------------- VAE files and embeddings


@pytest.fixture(scope="module")
def files_server(tmp_path_factory) -> Iterator[LiveServer]:
    """The embedded model with a VAE file and an embedding in A1111's folders."""
    from api.live import start_server, stop_server
    from kd_server.config import Settings
    from kd_server.engine import Engine
    from kd_server.library import ModelLibrary

    root = tmp_path_factory.mktemp("webui")
    write_vae(root / "models" / "VAE" / "warm.safetensors", embedded_vae(seed=7))
    write_sd15_embedding(root / "embeddings" / "grain.safetensors", 32, seed=4)
    library = ModelLibrary([root])
    live = start_server(Settings(device="cpu"), Engine(library, device="cpu"), library)
    live.post("/sdapi/v1/options", json={"sd_model_checkpoint": EMBEDDED})
    yield live
    stop_server(live)


def test_sd_vae_per_request(files_server: LiveServer) -> None:
    listed = files_server.get("/sdapi/v1/sd-vae").json()
    assert [item["model_name"] for item in listed] == ["warm.safetensors"]
    own = txt2img(files_server, override_settings={"sd_vae": "Automatic"})
    for name in ("warm.safetensors", "warm"):
        warm = txt2img(files_server, override_settings={"sd_vae": name})
        assert not np.array_equal(decoded(own), decoded(warm))
        assert "VAE: warm" in infotext(warm)
        assert json.loads(warm["info"])["sd_vae_name"] == "warm"
    assert json.loads(own["info"])["sd_vae_name"] is None
    response = files_server.post(
        "/sdapi/v1/txt2img", json={"prompt": "x", **SMALL, "override_settings": {"sd_vae": "nope"}}
    )
    assert response.status_code == 404 and "nope" in response.text
    response = files_server.post("/sdapi/v1/options", json={"sd_vae": "warm.safetensors"})
    assert response.status_code == 422 and "override_settings" in response.text


def test_embeddings_listed_and_used_by_name(files_server: LiveServer, server: LiveServer) -> None:
    listed = files_server.get("/sdapi/v1/embeddings").json()
    assert listed["loaded"]["grain"]["vectors"] == 2 and listed["skipped"] == {}
    with_it = txt2img(files_server, prompt="a cup, grain")
    without = txt2img(server, prompt="a cup, grain")  # no embeddings on that server
    assert not np.array_equal(decoded(with_it), decoded(without))
