"""Live jobs through the real server: `live: true` frames of one client supersede each
other (waiting replaced, stale running one stopped), while another client's jobs run
as they would have, in their turn."""

from __future__ import annotations

import uuid
from typing import Any

from api.live import LiveServer, job, receive_until_done, recv_event

LONG = {"steps": 150, "preview_every": 0}


def client(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def wait_for(ws: Any, job_id: str, kind: str) -> dict[str, Any]:
    while True:
        event = recv_event(ws, 120)
        if event["job_id"] == job_id and event["type"] == kind:
            return event


def test_live_frames_supersede_and_other_clients_keep_their_turn(server: LiveServer) -> None:
    artist, other = client("artist"), client("other")
    with server.events(artist) as mine, server.events(other) as theirs:
        blocker = server.submit(client_id=other, **LONG)
        wait_for(theirs, blocker, "progress")
        first = server.submit(client_id=artist, live=True)
        waiting = server.submit(client_id=other)
        second = server.submit(client_id=artist, live=True)  # first is still waiting

        assert wait_for(mine, first, "cancelled")["reason"] == "superseded"
        # the newer frame waits where the older one did; the other client keeps its turn
        assert server.get(f"/v1/jobs/{second}").json()["position"] == 0
        assert server.get(f"/v1/jobs/{waiting}").json()["position"] == 1

        server.delete(f"/v1/jobs/{blocker}")  # the worker takes my frame, then theirs
        assert receive_until_done(mine, second)[-1]["type"] == "finished"
        stale = server.submit(client_id=artist, live=True, **LONG)
        wait_for(mine, stale, "progress")
        newest = server.submit(client_id=artist, live=True)
        assert wait_for(mine, stale, "cancelled")["reason"] == "superseded"
        assert receive_until_done(mine, newest)[-1]["type"] == "finished"
        theirs_events = receive_until_done(theirs, waiting)
    types = [e["type"] for e in theirs_events]
    assert types[-1] == "finished" and "cancelled" not in types
    assert [e["position"] for e in theirs_events if e["type"] == "queued"] == [1, 0]


def test_a_cancel_asked_by_the_client_has_no_reason(server: LiveServer) -> None:
    me = client("me")
    with server.events(me) as ws:
        job_id = server.submit(client_id=me, **LONG)
        wait_for(ws, job_id, "progress")
        server.delete(f"/v1/jobs/{job_id}")
        assert wait_for(ws, job_id, "cancelled")["reason"] is None


def test_live_needs_a_client_id(server: LiveServer) -> None:
    response = server.post("/v1/jobs", json=job(live=True))
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("live: needs a client_id")
