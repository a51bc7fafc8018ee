"""Several devices the way `serve --device cpu --device cpu` runs them: one worker
process per device (`kd_server.executors.processes`), the real server on loopback,
the embedded tiny model built in each worker process."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from api.live import LiveServer, receive_until_done, recv_event, stop_server
from kd_server.config import Settings
from support.workers import services_of, start_with_workers


@pytest.fixture(scope="module")
def process_server(library: Any) -> Iterator[LiveServer]:
    """The app as the CLI builds it for two devices (create_app makes the workers)."""
    live = start_with_workers(Settings(device="cpu,cpu"), None, library, [])
    yield live
    stop_server(live)


def _next(ws: Any, job_id: str, kind: str) -> dict:
    while True:
        event = recv_event(ws, 300)
        if event["job_id"] == job_id and event["type"] == kind:
            return event


def _worker(live: LiveServer, name: str) -> Any:
    executor = live.running.server.kd_app.state.executor
    return next(w for w in executor.workers() if w.name == name)


def test_two_worker_processes_run_jobs_at_the_same_time(process_server: LiveServer) -> None:
    live = process_server
    with live.events("proc-parallel") as ws:
        long_id = live.submit(client_id="proc-parallel", steps=30, preview_every=0)
        short_id = live.submit(client_id="proc-parallel", steps=2, preview_every=1)
        order: list[tuple[str, str]] = []
        while len([e for e in order if e[1] == "finished"]) < 2:
            event = recv_event(ws, 300)
            order.append((event["job_id"], event["type"]))
    assert order.index((short_id, "finished")) < order.index((long_id, "finished"))
    assert (short_id, "preview") in order  # previews come back from the process
    queue = services_of(live).queue
    workers = {queue.get(long_id).worker, queue.get(short_id).worker}
    assert workers == {"cpu#0", "cpu#1"}
    assert len({_worker(live, name).pid for name in workers}) == 2


def test_cancel_reaches_a_job_in_a_worker_process(process_server: LiveServer) -> None:
    live = process_server
    with live.events("proc-cancel") as ws:
        job_id = live.submit(client_id="proc-cancel", steps=40, preview_every=0)
        _next(ws, job_id, "progress")
        assert live.delete(f"/v1/jobs/{job_id}").status_code == 202
        assert receive_until_done(ws, job_id)[-1]["type"] == "cancelled"
    assert live.wait(live.submit(client_id="proc-cancel"))["status"] == "finished"


def test_a_worker_process_killed_mid_job(process_server: LiveServer) -> None:
    """SIGKILL the process running a job: it fails with `worker_lost`, nothing
    hangs, and the next jobs finish (a fresh process takes the dead one's place)."""
    live = process_server
    queue = services_of(live).queue
    with live.events("proc-kill") as ws:
        job_id = live.submit(client_id="proc-kill", steps=40, preview_every=0)
        _next(ws, job_id, "progress")
        worker = _worker(live, str(queue.get(job_id).worker))
        os.kill(worker.pid, signal.SIGKILL)
        events = receive_until_done(ws, job_id)
    assert events[-1]["type"] == "failed"
    assert events[-1]["error"]["code"] == "worker_lost"
    later = [live.submit(client_id=f"proc-after-{n}") for n in range(3)]
    assert [live.wait(j, timeout=300)["status"] for j in later] == ["finished"] * 3
