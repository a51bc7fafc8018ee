"""Control layers over HTTP (protocol 4): listing, jobs with controls and a reference,
refusals at submit, and the preprocess endpoint, on a real server (issue 16)."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from api.live import LiveServer, job, png_b64, start_server, stop_server
from kd_server.config import Settings
from kd_server.engine import Engine
from kd_server.library import ModelLibrary
from support.control import (
    DEPTH,
    ENCODER,
    ESTIMATOR,
    IP_ADAPTER,
    LINES,
    SDXL_CONTROLNET_HEADER,
    disc,
    outline,
    write_control_models,
    write_tensors,
)


@pytest.fixture(scope="module")
def control_server(tmp_path_factory) -> Iterator[LiveServer]:
    root = write_control_models(tmp_path_factory.mktemp("comfyui"))
    write_tensors(root / "models/controlnet/xl-canny.safetensors", SDXL_CONTROLNET_HEADER)
    (root / "models/controlnet/control_v11p_sd15_canny.pth").write_bytes(b"\x80\x02}q\x00.")
    library = ModelLibrary([root])
    live = start_server(Settings(device="cpu"), Engine(library, device="cpu"), library)
    yield live
    stop_server(live)


@pytest.fixture(scope="module")
def bare_server(tmp_path_factory) -> Iterator[LiveServer]:
    """Control models but no depth estimator."""
    root = write_control_models(tmp_path_factory.mktemp("bare"), estimator=False)
    library = ModelLibrary([root])
    live = start_server(Settings(device="cpu"), Engine(library, device="cpu"), library)
    yield live
    stop_server(live)


def control(**fields: Any) -> dict[str, Any]:
    return {"model": DEPTH, "image": png_b64(disc()), "mode": "depth", **fields}


def result(server: LiveServer, **body: Any) -> np.ndarray:
    job_id = server.submit(**body)
    state = server.wait(job_id)
    assert state["status"] == "finished", state
    png = server.get(state["images"][0]["url"]).content
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32)


def refusal(server: LiveServer, **body: Any) -> tuple[int, str, str]:
    response = server.post("/v1/jobs", json=job(**body))
    error = response.json()["error"]
    return response.status_code, error["code"], error["message"]


def test_models_lists_controls_encoders_estimators_and_why_not(control_server):
    models = control_server.get("/v1/models").json()
    controls = {c["name"]: (c["family"], c["kind"]) for c in models["controls"]}
    assert controls == {
        DEPTH: ("sd15", "controlnet"),
        LINES: ("sd15", "controlnet"),
        IP_ADAPTER: ("sd15", "ip-adapter"),
        "xl-canny": ("sdxl", "controlnet"),
    }
    assert models["image_encoders"] == [ENCODER]
    assert models["depth_estimators"] == [ESTIMATOR]
    pickle = next(u for u in models["unusable"] if u["name"] == "control_v11p_sd15_canny.pth")
    assert pickle["kind"] == "control" and "never opens them" in pickle["reason"]
    assert control_server.get("/v1/health").json()["protocol"] >= 4  # control arrived in 4


def test_a_job_with_a_control_and_a_reference_over_http(control_server):
    plain = result(control_server)
    controlled = result(control_server, control=[control()])
    off = result(control_server, control=[control(strength=0)])
    both = result(
        control_server,
        control=[control(), control(model=LINES, image=png_b64(outline()), mode="lineart")],
        reference={"model": IP_ADAPTER, "image": png_b64(disc((48, 32))), "weight": 1.0},
    )
    assert np.abs(controlled - plain).mean() > 3
    assert np.array_equal(off, plain)
    assert np.abs(both - controlled).mean() > 1


def test_inpaint_with_a_control_layer_of_the_region(control_server):
    from api.live import picture, square_mask

    body = {"task": "inpaint", "image": png_b64(picture()), "mask": png_b64(square_mask())}
    plain = result(control_server, **body, strength=0.9)
    controlled = result(control_server, **body, strength=0.9, control=[control()])
    assert np.abs(controlled - plain).mean() > 0.5


@pytest.mark.parametrize(
    ("fields", "status", "code", "words"),
    [
        (
            {"control": [control(model="tiny-dept")]},
            404,
            "model_not_found",
            "Did you mean 'tiny-depth'",
        ),
        ({"control": [control(model="xl-canny")]}, 422, "control_mismatch", "is made for SDXL"),
        ({"control": [control(image=png_b64(disc((64, 48))))]}, 422, "invalid_input", "64x48"),
        ({"control": [control(image="not base64!")]}, 422, "invalid_request", "control[0].image"),
        ({"control": [control(start=0.5, end=0.5)]}, 422, "invalid_request", "control[0].end"),
        ({"control": [control(strength=2.5)]}, 422, "invalid_request", "control[0].strength"),
        ({"control": [control()] * 5}, 422, "invalid_request", "at most 4 items"),
        ({"control": [control(mode="sketch")]}, 422, "invalid_request", "control[0].mode"),
        (
            {"control": [control(model=IP_ADAPTER)]},
            422,
            "invalid_input",
            "send it as the reference",
        ),
        (
            {"reference": {"model": DEPTH, "image": png_b64(disc())}},
            422,
            "invalid_input",
            "needs an IP-Adapter",
        ),
    ],
)
def test_refused_at_submit_with_a_sentence(control_server, fields, status, code, words):
    got_status, got_code, message = refusal(control_server, **fields)
    assert (got_status, got_code) == (status, code), message
    assert words in message


def test_depth_preprocessing_without_an_estimator_is_refused_at_submit(bare_server):
    status, code, message = refusal(bare_server, control=[control(preprocess=True)])
    assert (status, code) == (422, "preprocessor_unavailable")
    assert "python3 -m installer download depth-anything-v2-small" in message
    response = bare_server.post("/v1/preprocess", json={"mode": "depth", "image": png_b64(disc())})
    assert response.status_code == 422
    assert "depth-anything-v2-small" in response.json()["error"]["message"]


def preprocessed(server: LiveServer, **body: Any) -> Image.Image:
    response = server.post("/v1/preprocess", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    image = Image.open(io.BytesIO(base64.b64decode(answer["image"])))
    assert (answer["width"], answer["height"]) == image.size
    return image


def test_preprocess_returns_the_control_image_of_each_mode(control_server):
    photo = disc((80, 48), background="navy", ink="orange")
    edges = np.asarray(
        preprocessed(control_server, mode="canny", image=png_b64(photo)).convert("L")
    )
    assert edges.shape == (48, 80) and set(np.unique(edges)) == {0, 255}
    assert 0.02 < (edges > 0).mean() < 0.3  # an outline, not a fill
    lines = preprocessed(control_server, mode="lineart", image=png_b64(outline((80, 48))))
    assert np.asarray(lines.convert("L")).mean() < 64  # dark sheet, light lines
    depth = preprocessed(control_server, mode="depth", image=png_b64(photo))
    grey = np.asarray(depth.convert("RGB"), dtype=np.int16)
    assert depth.size == (80, 48) and (grey.max(), grey.min()) == (255, 0)
    pose = Image.new("RGB", (80, 48), "black")
    pose.paste((255, 0, 0), (30, 10, 50, 12))
    assert np.array_equal(
        np.asarray(preprocessed(control_server, mode="pose", image=png_b64(pose))), np.asarray(pose)
    )


def test_a_job_with_controls_survives_the_journal():
    """A durable server stores queued jobs: controls and reference come back whole."""
    from kd_server.generation import ControlInput, ControlMode, ReferenceInput
    from kd_server.request_codec import decode_request, encode_request
    from support.jobs import make_request

    layer = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    layer.paste((200, 10, 10, 255), (8, 8, 40, 40))
    control = ControlInput(DEPTH, layer, ControlMode.CANNY, True, 1.5, 0.1, 0.7, 20, 90)
    request = make_request(control=[control], reference=ReferenceInput(IP_ADAPTER, disc(), 0.3))
    back = decode_request(encode_request(request))
    assert back.conditioning.reference is not None
    got = back.conditioning.control[0]
    assert (got.model, got.mode, got.preprocess, got.strength, got.start, got.end) == (
        DEPTH,
        ControlMode.CANNY,
        True,
        1.5,
        0.1,
        0.7,
    )
    assert (got.low_threshold, got.high_threshold) == (20, 90)
    assert got.image.mode == "RGBA" and np.array_equal(np.asarray(got.image), np.asarray(layer))
    assert back.conditioning.reference.weight == 0.3
