"""Model loading announced in `started`, and CORS only when configured."""

from __future__ import annotations

from api.live import LiveServer, receive_until_done


def test_loading_a_model_is_announced(server: LiveServer, engine) -> None:
    engine.unload()  # the next job must load the embedded model again
    with server.events("loader") as ws:
        job_id = server.submit(client_id="loader")
        events = receive_until_done(ws, job_id)
    started = [e for e in events if e["type"] == "started"]
    assert started[0]["loading_model"] is None
    assert started[1]["loading_model"] == "tiny-sd15-embedded"
    types = [e["type"] for e in events]
    assert types.index("progress") > types.index("started") + 1
    assert events[-1]["type"] == "finished"
    assert server.get("/v1/health").json()["model_loaded"] == "tiny-sd15-embedded"


def test_cors_is_off_by_default(server: LiveServer) -> None:
    response = server.get("/v1/health", headers={"Origin": "http://example.test"})
    assert "access-control-allow-origin" not in response.headers


def test_cors_when_configured(server_factory) -> None:
    live = server_factory(cors_origins=["http://example.test"])
    allowed = live.get("/v1/health", headers={"Origin": "http://example.test"})
    assert allowed.headers["access-control-allow-origin"] == "http://example.test"
    other = live.get("/v1/health", headers={"Origin": "http://elsewhere.test"})
    assert "access-control-allow-origin" not in other.headers
