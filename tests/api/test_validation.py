"""Every submit-time rule: a 4xx with `{"error": {"code", "message"}}` naming the field."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import pytest
from PIL import Image

from api.live import LiveServer, job, picture, png_b64, square_mask

GOOD_IMAGE = png_b64(picture(64, 64))
GOOD_MASK = png_b64(square_mask(64, 64))


def bomb_png(width: int, height: int) -> str:
    """A valid greyscale PNG whose header claims a huge size (its data is tiny)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width + 1) * 16)  # far too little data; never read
    raw = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    return base64.b64encode(raw).decode()


def sixteen_bit_mask() -> str:
    mask = Image.new("I;16", (64, 64), 65535)
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def inpaint(**overrides: object) -> dict:
    return job(**{"task": "inpaint", "image": GOOD_IMAGE, "mask": GOOD_MASK, **overrides})


CASES = [
    # (body, status, code, text the message must contain)
    (job(steps=0), 422, "invalid_request", "steps: must be at least 1"),
    (job(steps=151), 422, "invalid_request", "steps: must be at most 150"),
    (job(steps="many"), 422, "invalid_request", "steps: must be a whole number"),
    (job(cfg_scale=-1), 422, "invalid_request", "cfg_scale: must be at least 0"),
    (job(cfg_scale=30.5), 422, "invalid_request", "cfg_scale: must be at most 30"),
    (job(batch_size=0), 422, "invalid_request", "batch_size: must be at least 1"),
    (job(batch_size=9), 422, "invalid_request", "batch_size: must be at most 8"),
    (job(width=56), 422, "invalid_request", "width: must be at least 64"),
    (job(height=2056), 422, "invalid_request", "height: must be at most 2048"),
    (job(width=100), 422, "invalid_request", "width: must be a multiple of 8"),
    (
        job(width=2048, height=2048, batch_size=8),
        422,
        "invalid_request",
        "width, height, batch_size:",
    ),
    (job(strength=1.5), 422, "invalid_request", "strength: must be at most 1"),
    (job(strength=-0.1), 422, "invalid_request", "strength: must be at least 0"),
    (job(seed=2**40), 422, "invalid_request", "seed: must be at most"),
    (job(seed=-2), 422, "invalid_request", "seed: must be at least -1"),
    (job(preview_every=-1), 422, "invalid_request", "preview_every: must be at least 0"),
    (job(mask_grow=-1), 422, "invalid_request", "mask_grow: must be at least 0"),
    (job(prompt="x" * 4001), 422, "invalid_request", "prompt: must be at most 4000"),
    (job(negative_prompt="x" * 4001), 422, "invalid_request", "negative_prompt: must be"),
    (job(task="paint"), 422, "invalid_request", "task: must be one of"),
    (job(colour="red"), 422, "invalid_request", "colour: is not a known field"),
    (job(client_id="no spaces"), 422, "invalid_request", "client_id:"),
    (job(loras=[{"name": "x", "weight": 11}]), 422, "invalid_request", "loras[0].weight"),
    ({"prompt": "x"}, 422, "invalid_request", "task: is required"),
    (job(image=GOOD_IMAGE), 422, "invalid_request", "image: only img2img and inpaint"),
    (job(task="img2img"), 422, "invalid_request", "image: is required for img2img"),
    (job(task="img2img", image=GOOD_IMAGE, mask=GOOD_MASK), 422, "invalid_request", "mask:"),
    (job(task="inpaint", mask=GOOD_MASK), 422, "invalid_request", "image: is required"),
    (job(task="inpaint", image=GOOD_IMAGE), 422, "invalid_request", "mask: is required"),
    (inpaint(image="not base64!"), 422, "invalid_request", "image: is not valid base64"),
    (
        inpaint(image=base64.b64encode(b"GIF89a....").decode()),
        422,
        "invalid_request",
        "image: must be a PNG",
    ),
    (
        inpaint(image=base64.b64encode(b"\x89PNG\r\n\x1a\ngarbage").decode()),
        422,
        "invalid_request",
        "image: is not a readable PNG",
    ),
    (inpaint(image=bomb_png(5000, 5000)), 422, "invalid_request", "image: is 5000x5000"),
    (
        inpaint(mask=png_b64(square_mask(64, 32))),
        422,
        "invalid_request",
        "mask: must be the same size",
    ),
    (inpaint(mask=sixteen_bit_mask()), 422, "invalid_request", "mask: must be an 8-bit PNG"),
    (inpaint(mask=png_b64(Image.new("L", (64, 64), 0))), 422, "invalid_input", "mask"),
    (job(model="no-such-model"), 404, "model_not_found", "no-such-model"),
    (job(loras=[{"name": "no-such-lora", "weight": 1}]), 404, "lora_not_found", "no-such-lora"),
    (job(sampler="Bogus sampler"), 422, "sampler_not_found", "Bogus sampler"),
]


@pytest.mark.parametrize(("body", "status", "code", "text"), CASES, ids=[c[3][:40] for c in CASES])
def test_rule(server: LiveServer, body: dict, status: int, code: str, text: str) -> None:
    response = server.post("/v1/jobs", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert text in error["message"], error["message"]
    assert "Traceback" not in response.text


def test_invalid_json(server: LiveServer) -> None:
    response = server.post(
        "/v1/jobs", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("body: is not valid JSON")


def test_refused_jobs_are_not_queued(server: LiveServer) -> None:
    before = server.get("/v1/health").json()["queue_length"]
    server.post("/v1/jobs", json=job(steps=0))
    assert server.get("/v1/health").json()["queue_length"] == before


def test_wrong_method(server: LiveServer) -> None:
    response = server.post("/v1/health")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_form_body_is_explained(server: LiveServer) -> None:
    response = server.post("/v1/jobs", data={"task": "txt2img"})  # what `curl -d` sends
    assert response.status_code == 422
    assert "Content-Type: application/json" in response.json()["error"]["message"]
