"""Each task end to end over HTTP and the WebSocket, on the real engine."""

from __future__ import annotations

import io
import uuid

import pytest
from PIL import Image

from api.live import (
    LiveServer,
    picture,
    png_b64,
    receive_until_done,
    square_mask,
)


def client() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def check_event_order(events: list[dict], job_id: str, batch: int) -> None:
    types = [e["type"] for e in events]
    assert all(e["job_id"] == job_id for e in events)
    assert types[0] == "queued" and events[0]["position"] >= 0
    assert "started" in types
    first_result = types.index("result")
    assert types.index("started") < types.index("progress") < first_result
    assert "preview" in types[:first_result], types
    assert types[-1] == "finished"
    steps = [e["step"] for e in events if e["type"] == "progress"]
    assert steps == sorted(steps) and steps[-1] == events[types.index("progress")]["total"]
    results = [e for e in events if e["type"] == "result"]
    assert [r["index"] for r in results] == list(range(batch))
    assert events[-1]["images"] == [
        {"index": r["index"], "seed": r["seed"], "url": r["url"]} for r in results
    ]


def download(server: LiveServer, url: str) -> Image.Image:
    response = server.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


def run_job(server: LiveServer, **body: object) -> tuple[str, list[dict]]:
    client_id = client()
    with server.events(client_id) as ws:
        job_id = server.submit(client_id=client_id, **body)
        events = receive_until_done(ws, job_id)
        # the job's state is updated before its event: it reads as finished now
        state = server.get(f"/v1/jobs/{job_id}").json()
    assert state["status"] == "finished", (state, events)
    return job_id, events


def test_txt2img_lifecycle(server: LiveServer) -> None:
    job_id, events = run_job(server, batch_size=2, seed=1234, prompt="a red apple")
    check_event_order(events, job_id, batch=2)
    previews = [e for e in events if e["type"] == "preview"]
    assert previews and all(isinstance(p["image"], str) for p in previews)
    state = server.get(f"/v1/jobs/{job_id}").json()
    assert [i["seed"] for i in state["images"]] == [1234, 1235]
    assert state["step"] == state["total"] == 2 and state["error"] is None
    image = download(server, state["images"][1]["url"])
    assert image.size == (64, 64)
    parameters = image.info["parameters"]
    assert parameters.startswith("a red apple") and "Seed: 1235" in parameters


def test_random_seed_is_reported(server: LiveServer) -> None:
    _, events = run_job(server, seed=-1)
    (result,) = [e for e in events if e["type"] == "result"]
    image = download(server, result["url"])
    assert f"Seed: {result['seed']}" in image.info["parameters"]


def test_img2img_lifecycle(server: LiveServer) -> None:
    job_id, events = run_job(
        server, task="img2img", image=png_b64(picture(72, 56)), strength=0.6, steps=3
    )
    check_event_order(events, job_id, batch=1)
    image = download(server, events[-1]["images"][0]["url"])
    assert image.size == (72, 56)
    assert "Denoising strength: 0.6" in image.info["parameters"]


def test_inpaint_lifecycle(server: LiveServer) -> None:
    job_id, events = run_job(
        server,
        task="inpaint",
        image=png_b64(picture(64, 64)),
        mask=png_b64(square_mask(64, 64)),
        strength=1.0,
        steps=3,
    )
    check_event_order(events, job_id, batch=1)
    image = download(server, events[-1]["images"][0]["url"])
    assert image.size == (64, 64) and image.mode == "RGBA"
    alpha = image.getchannel("A")
    assert alpha.getpixel((0, 0)) == 0 and alpha.getpixel((32, 32)) == 255
    assert "parameters" in image.info


@pytest.mark.parametrize("convert", ["L", "P", "I;16", "LA"])
def test_other_png_modes_are_converted(server: LiveServer, convert: str) -> None:
    source = picture(64, 64)
    if convert == "I;16":
        grey = source.convert("L")
        image = Image.frombytes("I;16", grey.size, bytes(b for v in grey.tobytes() for b in (0, v)))
    else:
        image = source.convert(convert)
    job_id, _ = run_job(server, task="img2img", image=png_b64(image), strength=0.5)
    assert server.get(f"/v1/jobs/{job_id}").json()["status"] == "finished"


def test_job_without_client_id_is_polled(server: LiveServer) -> None:
    job_id = server.submit()
    state = server.wait(job_id)
    assert state["status"] == "finished" and len(state["images"]) == 1


def test_server_facts(server: LiveServer) -> None:
    health = server.get("/v1/health").json()
    assert health["status"] == "ok"
    for key in ("version", "device", "dtype", "queue_length", "model_loaded"):
        assert key in health
    assert health["device"] == "cpu"
    models = server.get("/v1/models").json()
    default = [c for c in models["checkpoints"] if c["default"]]
    assert default and default[0]["family"] == "sd15"
    assert isinstance(models["loras"], list)
    samplers = server.get("/v1/samplers").json()
    assert "Euler a" in samplers and "DPM++ 2M Karras" in samplers


def test_openapi_describes_models_and_events(server: LiveServer) -> None:
    schema = server.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    request = components["JobRequest"]["properties"]
    for name in ("task", "prompt", "steps", "cfg_scale", "seed", "image", "mask", "client_id"):
        assert request[name].get("description"), name
    for event in ("QueuedEvent", "StartedEvent", "ProgressEvent", "PreviewEvent"):
        assert event in components
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/health"} <= set(schema["paths"])
