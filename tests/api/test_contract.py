"""The protocol as published: every event type checked against `/openapi.json`, the
two front doors refusing the same bad input the same way, what v2 added, and the
fields v5 publishes (upscale, hires, fill, upscalers)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from api.live import TERMINAL, LiveServer, receive_until_done, recv_event
from kd_server.engine import Engine
from kd_server.job_events import ALL_EVENTS
from kd_server.library import ModelLibrary
from support import event_schemas
from support.faults import OutOfMemoryAtStep


def test_every_event_type_is_published_and_sent_as_published(server_factory, tmp_path) -> None:
    """A fresh engine (so the first job loads its model) that fails at step 3, on a
    durable server whose outputs folder cannot be made (a file is in its place): jobs
    of 2 steps finish with a warning, one of 5 fails, one is cancelled while queued,
    and a resuming connection gets their states. Every event the server sends is
    validated against its schema on receipt (`api.live`)."""
    blocked = tmp_path / "outputs"
    blocked.write_text("a file where the outputs folder should be", encoding="utf-8")
    fresh = Engine(ModelLibrary([]), device="cpu")
    live = server_factory(
        engine=OutOfMemoryAtStep(fresh, step=3),
        library=fresh.library,
        state_dir=tmp_path / "state",
        outputs_dir=blocked,
    )
    published = event_schemas.event_types()
    assert published == {event.kind for event in ALL_EVENTS} | {"state"}
    types: set[str] = set()
    with live.events("contract") as ws:
        first = live.submit(client_id="contract", steps=2, batch_size=2)
        failing = live.submit(client_id="contract", steps=5)
        queued = live.submit(client_id="contract", steps=2)
        live.delete(f"/v1/jobs/{queued}")
        ended: set[str] = set()
        while ended != {first, failing, queued}:
            event = recv_event(ws, 120)
            types.add(event["type"])
            if event["type"] in TERMINAL:
                ended.add(event["job_id"])
    with live.events("contract", resume=True) as ws:
        states = {recv_event(ws, 30)["job_id"] for _ in range(3)}
    assert states == {first, failing, queued}
    types.add("state")
    assert types == published, published - types


def test_the_first_job_on_a_cold_model_names_the_model_it_loads(server_factory) -> None:
    fresh = Engine(ModelLibrary([]), device="cpu")
    live = server_factory(engine=fresh, library=fresh.library)
    with live.events("cold") as ws:
        events = receive_until_done(ws, live.submit(client_id="cold", steps=1))
    loading = [e["loading_model"] for e in events if e["type"] == "started"]
    assert loading == [None, "tiny-sd15-embedded"], events


def _post_raw(live: LiveServer, path: str, body: str) -> requests.Response:
    headers = {**live.headers, "Content-Type": "application/json"}
    return requests.post(live.url + path, data=body.encode(), headers=headers, timeout=30)


BAD_PROMPTS = {
    "lone surrogate": '"a \\ud800 fox"',  # valid JSON, not valid Unicode text
    "over-long": json.dumps("x" * 4001),  # over the default max_prompt_length of 4000
}


@pytest.mark.parametrize("case", sorted(BAD_PROMPTS))
@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_both_front_doors_refuse_the_same_bad_prompt_alike(
    server: LiveServer, case: str, field: str
) -> None:
    text = BAD_PROMPTS[case]
    ours = _post_raw(server, "/v1/jobs", f'{{"task": "txt2img", "{field}": {text}, "steps": 1}}')
    a1111 = _post_raw(server, "/sdapi/v1/txt2img", f'{{"{field}": {text}, "steps": 1}}')
    replies: list[dict[str, Any]] = [ours.json(), a1111.json()]
    assert ours.status_code == a1111.status_code == 422, (ours.text, a1111.text)
    assert replies[0] == replies[1], replies
    assert replies[0]["error"]["message"].startswith(f"{field}:")


def test_health_names_the_protocol_version_and_models_their_working_size(
    server: LiveServer,
) -> None:
    assert server.get("/v1/health").json()["protocol"] == 6
    checkpoints = server.get("/v1/models").json()["checkpoints"]
    embedded = next(c for c in checkpoints if c["name"] == "tiny-sd15-embedded")
    assert embedded["working_size"] == 256  # the embedded model's own size, not SD1.5's 512


def test_v5_publishes_upscale_hires_fill_and_upscalers(server: LiveServer) -> None:
    schemas = server.get("/openapi.json").json()["components"]["schemas"]
    job_fields = schemas["JobRequest"]["properties"]
    assert {"upscale", "hires", "fill"} <= set(job_fields)
    assert "upscale" in schemas["Task"]["enum"]
    assert schemas["FillMode"]["enum"] == ["keep", "neutral", "blur", "edge", "noise"]
    assert set(schemas["UpscaleRequest"]["properties"]) == {
        "factor",
        "width",
        "height",
        "upscaler",
        "strength",
        "tile_size",
        "steps",
    }
    assert schemas["UpscaleRequest"]["properties"]["strength"]["default"] == 0.35
    assert schemas["HiresRequest"]["properties"]["strength"]["default"] == 0.5
    assert set(schemas["Upscaler"]["properties"]) == {
        "name",
        "usable",
        "reason",
        "scale",
        "architecture",
        "found_in",
    }
    assert server.get("/v1/models").json()["upscalers"] == []  # none in this library


def test_a_v4_body_is_still_valid_under_v5(server: LiveServer) -> None:
    """A body of the previous protocol (no upscale, hires or fill) runs as before."""
    state = server.wait(server.submit(steps=1))
    assert state["status"] == "finished", state
