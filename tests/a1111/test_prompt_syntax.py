"""A1111's prompt syntax and clip skip through the A1111 API (raw requests): emphasis
changes the picture and is recorded as sent; CLIP_stop_at_last_layers is honoured per
request in override_settings and written as "Clip skip" in the infotext."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import numpy as np
from PIL import Image

from api.live import LiveServer

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
