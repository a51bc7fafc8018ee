"""Clients, cancellation, reconnection and queue limits against the live server."""

from __future__ import annotations

import json
import uuid

import pytest

from api.live import LiveServer, job, receive_until_done, recv_event

#: Long enough that a job is still running when the test acts on its first progress
#: event (the tiny model makes each step quick, so use many of them).
LONG = {"steps": 150, "width": 256, "height": 256, "preview_every": 0}


def client() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def next_event(ws, job_id: str, kind: str) -> dict:
    while True:
        event = recv_event(ws, 120)
        if event["job_id"] == job_id and event["type"] == kind:
            return event


def test_two_clients_see_only_their_own_events(server: LiveServer) -> None:
    alice, bob = client(), client()
    with server.events(alice) as ws_a, server.events(bob) as ws_b:
        job_a = server.submit(client_id=alice)
        job_b = server.submit(client_id=bob)
        events_a = receive_until_done(ws_a, job_a)
        events_b = receive_until_done(ws_b, job_b)
        # anything else either connection received belongs to its own client's jobs
        server.wait(job_a), server.wait(job_b)
        extra_a = _drain(ws_a)
        extra_b = _drain(ws_b)
    assert {e["job_id"] for e in events_a + extra_a} == {job_a}
    assert {e["job_id"] for e in events_b + extra_b} == {job_b}


def _drain(ws) -> list[dict]:
    events = []
    try:
        while True:
            events.append(recv_event(ws, 0.2))
    except TimeoutError:
        return events


def test_two_connections_of_one_client_both_hear(server: LiveServer) -> None:
    me = client()
    with server.events(me) as first, server.events(me) as second:
        job_id = server.submit(client_id=me)
        assert receive_until_done(first, job_id)[-1]["type"] == "finished"
        assert receive_until_done(second, job_id)[-1]["type"] == "finished"


def test_cancel_queued_and_running(server: LiveServer) -> None:
    me = client()
    with server.events(me) as ws:
        running = server.submit(client_id=me, **LONG)
        waiting = server.submit(client_id=me)
        next_event(ws, running, "progress")

        response = server.delete(f"/v1/jobs/{waiting}")
        assert response.status_code == 200 and response.json()["status"] == "cancelled"
        next_event(ws, waiting, "cancelled")

        response = server.delete(f"/v1/jobs/{running}")
        assert response.status_code == 202 and response.json()["status"] == "running"
        next_event(ws, running, "cancelled")
    state = server.get(f"/v1/jobs/{running}").json()
    assert state["status"] == "cancelled" and state["images"] == []
    assert server.get(f"/v1/jobs/{waiting}").json()["status"] == "cancelled"

    again = server.delete(f"/v1/jobs/{running}")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "job_not_active"
    # the worker is free again
    assert server.wait(server.submit())["status"] == "finished"


def test_queued_positions_are_announced(server: LiveServer) -> None:
    me = client()
    with server.events(me) as ws:
        first = server.submit(client_id=me, **LONG)
        next_event(ws, first, "started")
        second = server.submit(client_id=me)
        third = server.submit(client_id=me)
        assert next_event(ws, third, "queued")["position"] == 1
        server.delete(f"/v1/jobs/{second}")
        assert next_event(ws, third, "queued")["position"] == 0  # moved up
        assert server.get(f"/v1/jobs/{third}").json()["position"] == 0
        server.delete(f"/v1/jobs/{first}")
        assert receive_until_done(ws, third)[-1]["type"] == "finished"


def test_disconnect_does_not_cancel_and_results_wait(server: LiveServer) -> None:
    me = client()
    with server.events(me) as ws:
        job_id = server.submit(client_id=me, steps=20, preview_every=5)
        next_event(ws, job_id, "progress")
    # connection gone mid-job; the result is still delivered to GET
    state = server.wait(job_id)
    assert state["status"] == "finished"
    png = server.get(state["images"][0]["url"])
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    with server.events(me) as ws:  # reconnecting is fine too
        again = server.submit(client_id=me)
        assert receive_until_done(ws, again)[-1]["type"] == "finished"


def test_unknown_job_and_image(server: LiveServer) -> None:
    missing = server.get("/v1/jobs/0123456789abcdef")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "job_not_found"
    assert server.delete("/v1/jobs/0123456789abcdef").status_code == 404
    done = server.wait(server.submit())
    no_image = server.get(f"/v1/jobs/{done['job_id']}/images/5")
    assert no_image.status_code == 404
    assert no_image.json()["error"]["code"] == "image_not_found"
    route = server.get("/v2/health")
    assert route.status_code == 404 and route.json()["error"]["code"] == "not_found"


def test_queue_full_gives_429_with_retry_after(server_factory) -> None:
    small = server_factory(max_queue=1)
    me = client()
    with small.events(me) as ws:
        running = small.submit(client_id=me, **LONG)
        next_event(ws, running, "started")
        waiting = small.submit(client_id=me)
        refused = small.post("/v1/jobs", json=job(client_id=me))
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1
        error = refused.json()["error"]
        assert error["code"] == "queue_full" and "queue" in error["message"]
        small.delete(f"/v1/jobs/{waiting}")
        small.delete(f"/v1/jobs/{running}")
        next_event(ws, running, "cancelled")


@pytest.mark.parametrize("chunked", [False, True])
def test_body_over_limit_gives_413(server_factory, chunked: bool) -> None:
    small = server_factory(max_body_bytes=2000)
    body = json.dumps(job(prompt="x" * 5000)).encode()
    if chunked:  # no Content-Length: the server counts while reading
        response = small.post(
            "/v1/jobs",
            data=iter([body[:1000], body[1000:]]),
            headers={"Content-Type": "application/json"},
        )
    else:
        response = small.post("/v1/jobs", data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
