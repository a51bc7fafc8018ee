"""Load on loopback: N clients x M jobs at once against the real server process.

Every submission is either accepted (202) and then completes, or refused with 429
and a `Retry-After`; nothing is lost, nothing fails. While a long job holds the
worker, the waiting jobs' positions are a permutation of 0..k-1 and each client's
own jobs keep their submission order (FIFO per client). Every client's WebSocket
sees the end of each of its jobs and no other client's. Afterwards the server's
resident memory is back near its baseline. Sizes stay tiny (64x64, 2 steps).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from websockets.sync.client import ClientConnection, connect

from hardening.figures import record
from hardening.support import HANG_GUARD_S, TERMINAL, ProcessServer, rss_of, wait_job

QUICK = (4, 3)  # clients, jobs each
FULL = (8, 8)
#: Growth of the server's RSS over its warm baseline that still counts as "back near
#: it": allocator caches and the retained PNGs of this many small results.
RSS_SLACK = 200 * 1024 * 1024


def small_job(client_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"task": "txt2img", "prompt": "load", "steps": 2, "width": 64}
    body.update(height=64, client_id=client_id, sampler="Euler", preview_every=1)
    body.update(overrides)
    return body


@dataclass
class Client:
    """One artist: submits M jobs in order and listens to its own events."""

    name: str
    server: ProcessServer
    accepted: list[str] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def submit(self, count: int, barrier: threading.Barrier) -> None:
        barrier.wait(timeout=HANG_GUARD_S)
        for _ in range(count):
            reply = requests.post(
                f"{self.server.url}/v1/jobs",
                json=small_job(self.name),
                headers=self.server.headers,
                timeout=HANG_GUARD_S,
            )
            if reply.status_code == 202:
                self.accepted.append(reply.json()["job_id"])
            elif reply.status_code == 429:
                self.refused.append({**reply.json(), "retry": reply.headers.get("Retry-After")})
            else:
                self.errors.append(f"{reply.status_code} {reply.text[:200]}")

    def listen(self, ws: ClientConnection, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.events.append(json.loads(ws.recv(timeout=0.2)))
            except TimeoutError:
                continue
            except Exception as exc:  # the connection closed under load: a failure
                self.errors.append(f"events: {exc!r}")
                return


@pytest.fixture
def clients(process_server: ProcessServer, full: bool) -> Iterator[list[Client]]:
    count = (FULL if full else QUICK)[0]
    yield [Client(f"load-{i}", process_server) for i in range(count)]


def _positions(server: ProcessServer, ids: list[str]) -> dict[str, int | None]:
    states = {
        job_id: requests.get(
            f"{server.url}/v1/jobs/{job_id}", headers=server.headers, timeout=HANG_GUARD_S
        ).json()
        for job_id in ids
    }
    assert all(s["status"] == "queued" for s in states.values()), states
    return {job_id: state["position"] for job_id, state in states.items()}


def _hold_worker(server: ProcessServer) -> str:
    """A long job that keeps the worker busy while the load arrives."""
    body = small_job("blocker", steps=150, width=512, height=512, preview_every=0)
    reply = requests.post(f"{server.url}/v1/jobs", json=body, headers=server.headers, timeout=30)
    assert reply.status_code == 202, reply.text
    job_id = reply.json()["job_id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = requests.get(f"{server.url}/v1/jobs/{job_id}", headers=server.headers).json()
        if state["status"] == "running" and state["step"] >= 1:
            return str(job_id)
        time.sleep(0.05)
    raise AssertionError("the blocking job never started")


def test_many_clients_many_jobs(process_server: ProcessServer, clients: list[Client], full: bool):
    server = process_server
    for _ in range(2):  # warm: model built, allocator settled
        assert wait_job(server.url, server.headers, _submit(server, "warm"))["status"] == "finished"
    baseline = rss_of(server.pid)
    per_client = (FULL if full else QUICK)[1]
    blocker = _hold_worker(server)

    exits = contextlib.ExitStack()
    sockets = [
        exits.enter_context(
            connect(
                f"{server.url.replace('http', 'ws')}/v1/events?client_id={c.name}",
                additional_headers=server.headers,
                open_timeout=HANG_GUARD_S,
            )
        )
        for c in clients
    ]
    stop = threading.Event()
    listeners = [
        threading.Thread(target=c.listen, args=(ws, stop), daemon=True)
        for c, ws in zip(clients, sockets, strict=True)
    ]
    barrier = threading.Barrier(len(clients))
    submitters = [
        threading.Thread(target=c.submit, args=(per_client, barrier), daemon=True) for c in clients
    ]
    try:
        for thread in [*listeners, *submitters]:
            thread.start()
        for thread in submitters:
            thread.join(HANG_GUARD_S * per_client)
        assert not any(c.errors for c in clients), [c.errors for c in clients]
        accepted = [job_id for c in clients for job_id in c.accepted]
        refused = [r for c in clients for r in c.refused]
        assert len(accepted) + len(refused) == len(clients) * per_client
        assert len(accepted) == 6  # max_queue of the process server: the rest got 429
        for refusal in refused:
            assert refusal["error"]["code"] == "queue_full" and int(refusal["retry"]) >= 1

        # positions while the worker is held: 0..k-1, FIFO within each client
        positions = _positions(server, accepted)
        assert sorted(positions.values()) == list(range(len(accepted)))
        for client in clients:
            mine = [positions[job_id] for job_id in client.accepted]
            assert mine == sorted(mine), (client.name, mine)
        health = requests.get(f"{server.url}/v1/health", headers=server.headers, timeout=30)
        assert health.json()["queue_length"] == len(accepted)

        requests.delete(f"{server.url}/v1/jobs/{blocker}", headers=server.headers, timeout=30)
        states = [wait_job(server.url, server.headers, job_id) for job_id in accepted]
        assert all(s["status"] == "finished" for s in states), states
        _wait_for_terminal_events(clients)
    finally:
        stop.set()
        for thread in listeners:
            thread.join(5)
        exits.close()
    for client in clients:  # each heard the end of its jobs and nothing of the others'
        heard = {e["job_id"] for e in client.events}
        assert heard == set(client.accepted), (client.name, heard, client.accepted)

    rounds = _more_rounds(server, clients, per_client, rounds=3 if full else 1)
    after = rss_of(server.pid)
    record(
        "load",
        {
            "clients": len(clients),
            "jobs_each": per_client,
            "accepted_first_round": len(accepted),
            "refused_429_first_round": len(refused),
            "jobs_completed_total": len(accepted) + rounds,
            "rss_baseline_mib": round(baseline / 2**20),
            "rss_after_mib": round(after / 2**20),
        },
    )
    assert after <= baseline + RSS_SLACK, (baseline, after)


def _submit(server: ProcessServer, client: str) -> str:
    reply = requests.post(
        f"{server.url}/v1/jobs", json=small_job(client), headers=server.headers, timeout=30
    )
    assert reply.status_code == 202, reply.text
    return str(reply.json()["job_id"])


def _wait_for_terminal_events(clients: list[Client], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = all(
            {e["job_id"] for e in c.events if e["type"] in TERMINAL} >= set(c.accepted)
            for c in clients
        )
        if done:
            return
        time.sleep(0.05)
    raise AssertionError("some terminal events never arrived")


def _more_rounds(server: ProcessServer, clients: list[Client], per_client: int, rounds: int) -> int:
    """Rounds of concurrent submissions that retry on 429: all jobs eventually run."""
    completed = 0
    lock = threading.Lock()

    def artist(name: str) -> None:
        nonlocal completed
        for _ in range(per_client):
            deadline = time.monotonic() + 120
            while True:
                assert time.monotonic() < deadline, "never accepted"
                body = small_job(name)
                reply = requests.post(
                    f"{server.url}/v1/jobs", json=body, headers=server.headers, timeout=30
                )
                if reply.status_code == 202:
                    break
                assert reply.status_code == 429, reply.text
                time.sleep(0.2)  # our Retry-After: the tests do not wait whole seconds
            state = wait_job(server.url, server.headers, reply.json()["job_id"])
            assert state["status"] == "finished", state
            with lock:
                completed += 1

    for _ in range(rounds):
        threads = [threading.Thread(target=artist, args=(c.name,)) for c in clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(600)
    assert completed == rounds * len(clients) * per_client
    return completed
