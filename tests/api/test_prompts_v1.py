"""Prompt syntax over protocol v1 (since 5), on a real server with the embedded model:
`<lora:name:weight>` tags in the prompt apply the LoRA (the PNG keeps the prompt as
sent), `clip_skip`, `vae` and embeddings change the picture, `/v1/models` lists
embeddings and VAE files, and what cannot be honoured is refused at submit."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from api.live import LiveServer
from kd_server.pngmeta import read_parameters
from modelkit.embeddings import write_sd15_embedding
from modelkit.loras import write_test_lora
from modelkit.vaes import embedded_vae, write_vae


@pytest.fixture(scope="module")
def prompt_server(tmp_path_factory) -> Any:

    from api.live import start_server, stop_server
    from kd_server.config import Settings
    from kd_server.engine import Engine
    from kd_server.library import ModelLibrary

    root = tmp_path_factory.mktemp("webui")
    write_test_lora(root / "models" / "Lora", "ink", seed=3)
    write_sd15_embedding(root / "embeddings" / "grain.safetensors", 32, seed=4)
    write_vae(root / "models" / "VAE" / "warm.safetensors", embedded_vae(seed=7))
    library = ModelLibrary([root])
    live = start_server(Settings(device="cpu"), Engine(library, device="cpu"), library)
    yield live
    stop_server(live)


def run(live: LiveServer, **body: Any) -> tuple[np.ndarray, str]:
    job_id = live.submit(preview_every=0, **body)
    assert live.wait(job_id)["status"] == "finished"
    png = live.get(f"/v1/jobs/{job_id}/images/0").content
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB")), read_parameters(png) or ""


def test_a_lora_tag_in_the_prompt_is_the_lora(prompt_server: LiveServer) -> None:
    tagged, text = run(prompt_server, prompt="a red apple <lora:ink:0.8>")
    listed, _ = run(prompt_server, prompt="a red apple", loras=[{"name": "ink", "weight": 0.8}])
    plain, _ = run(prompt_server, prompt="a red apple")
    assert np.array_equal(tagged, listed)
    assert not np.array_equal(tagged, plain)
    assert text.startswith("a red apple <lora:ink:0.8>\n")  # as sent, as A1111 writes it
    assert 'Lora weights: "ink: 0.8"' in text
    odd, _ = run(prompt_server, prompt="a red apple <3:you>")  # unknown kind: ignored
    assert np.array_equal(odd, plain)
    both, _ = run(
        prompt_server, prompt="a red apple <lora:ink:0.8>", loras=[{"name": "ink", "weight": 0.8}]
    )
    assert np.array_equal(both, tagged)


def test_weights_clip_skip_vae_and_embeddings_change_the_picture(prompt_server) -> None:
    plain, plain_text = run(prompt_server, prompt="a red apple")
    for body, recorded in (
        ({"prompt": "a (red:1.5) apple"}, "a (red:1.5) apple"),
        ({"prompt": "a red apple", "clip_skip": 2}, "Clip skip: 2"),
        ({"prompt": "a red apple", "vae": "warm"}, "VAE: warm"),
        ({"prompt": "a red apple, grain"}, "grain"),
    ):
        changed, text = run(prompt_server, **body)
        assert not np.array_equal(plain, changed), body
        assert recorded in text and recorded not in plain_text
    same, _ = run(prompt_server, prompt="a red apple", clip_skip=1)
    assert np.array_equal(plain, same)


def test_models_list_embeddings_and_vaes(prompt_server: LiveServer) -> None:
    models = prompt_server.get("/v1/models").json()
    assert models["embeddings"] == [
        {"name": "grain", "family": None, "vectors": 2, "usable": True, "reason": None}
    ]
    assert models["vaes"] == [{"name": "warm", "usable": True, "reason": None}]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"prompt": "<hypernet:h:1> a"}, "prompt: the extra network <hypernet:...>"),
        ({"prompt": "<lora:ink:0.5:1> a"}, "separate text-encoder"),
        ({"prompt": "<lora::1> a"}, "has no name"),
        ({"negative_prompt": "<lora:ink:heavy>"}, "negative_prompt: <lora:ink:heavy>"),
        (
            {"prompt": "<lora:ink:0.5>", "loras": [{"name": "ink", "weight": 1}]},
            "given twice with different weights",
        ),
        ({"clip_skip": 0}, "clip_skip"),
        ({"clip_skip": 13}, "clip_skip"),
    ],
)
def test_what_cannot_be_honoured_is_refused(prompt_server: LiveServer, body, words) -> None:
    response = prompt_server.post("/v1/jobs", json={"task": "txt2img", **body})
    assert response.status_code == 422, response.text
    assert words in response.json()["error"]["message"]


def test_unknown_vae_and_lora_are_refused_by_name(prompt_server: LiveServer) -> None:
    response = prompt_server.post("/v1/jobs", json={"task": "txt2img", "vae": "nope"})
    assert response.status_code in (404, 422) and "nope" in response.text
    response = prompt_server.post("/v1/jobs", json={"task": "txt2img", "prompt": "<lora:gone:1>"})
    assert response.status_code == 404 and "gone" in response.text
