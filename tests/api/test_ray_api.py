"""The API's core with the Ray executor: the real server (gateway) on loopback, a
local Ray cluster on loopback, two CPU replicas of the embedded tiny model. Runs only
inside the private network namespace that `test_ray.py` makes (see
`support.ray_cluster`); a plain `pytest` run skips it.

The core API tests are imported and run here again against the Ray-backed `server`:
lifecycle of each task (previews, batch seeds, the inpaint contract), event routing,
a dropped connection. Tests below cover what differs: cancel reaches a job on a
replica, a waiting job stays in our queue, and a replica killed mid-job.
"""

from __future__ import annotations

import pytest

from support.ray_cluster import inside_private_network

if not inside_private_network():
    pytest.skip(
        "starts Ray: runs inside the private network namespace of test_ray.py",
        allow_module_level=True,
    )

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import psutil

from api.live import LiveServer, receive_until_done, recv_event, stop_server
from api.test_jobs_http import (  # noqa: F401  (run here against the Ray server)
    test_disconnect_does_not_cancel_and_results_wait,
    test_two_clients_see_only_their_own_events,
    test_two_connections_of_one_client_both_hear,
    test_unknown_job_and_image,
)
from api.test_lifecycle import (  # noqa: F401
    test_img2img_lifecycle,
    test_inpaint_lifecycle,
    test_job_without_client_id_is_polled,
    test_random_seed_is_reported,
    test_txt2img_lifecycle,
)
from kd_server.config import Settings
from support.ray_cluster import start_local_ray, start_ray_server, stop_local_ray
from support.workers import services_of

pytestmark = pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20")

LONG = {"steps": 40, "preview_every": 0}


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    start_local_ray()
    yield
    stop_local_ray()


@pytest.fixture(scope="module")
def ray_server(ray_cluster: None, engine: Any, library: Any) -> Iterator[tuple[LiveServer, Any]]:
    settings = Settings(device="cpu", ray_address="auto", ray_replicas="2:2", ray_device="cpu")
    live, executor = start_ray_server(settings, engine, library)
    yield live, executor
    stop_server(live)


@pytest.fixture(scope="module")
def server(ray_server: tuple[LiveServer, Any]) -> LiveServer:
    """Overrides the api folder's `server`: the same app, jobs on two Ray replicas."""
    return ray_server[0]


def _next(ws: Any, job_id: str, kind: str) -> dict:
    while True:
        event = recv_event(ws, 120)
        if event["job_id"] == job_id and event["type"] == kind:
            return event


def test_only_the_loopback_is_reachable(server: LiveServer) -> None:
    """Ray and the server listen here, and the loopback is the only interface: no
    socket of theirs can be reached from another machine."""
    assert set(psutil.net_if_addrs()) == {"lo"}
    listening = [c for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN]
    assert len(listening) > 3  # the gateway, the GCS, the raylet, the replicas ...


def test_jobs_run_on_the_replicas(server: LiveServer) -> None:
    queue = services_of(server).queue
    assert [w.name for w in queue.workers()] == ["ray-0", "ray-1"]
    ids = [server.submit(client_id=f"spread-{n}", **LONG) for n in range(2)]
    for job_id in ids:
        assert server.wait(job_id)["status"] == "finished"
    assert {queue.get(job_id).worker for job_id in ids} == {"ray-0", "ray-1"}


def test_cancel_reaches_a_job_on_a_replica(server: LiveServer) -> None:
    with server.events("ray-cancel") as ws:
        running = server.submit(client_id="ray-cancel", **LONG)
        _next(ws, running, "progress")
        response = server.delete(f"/v1/jobs/{running}")
        assert response.status_code == 202
        _next(ws, running, "cancelled")
    assert server.get(f"/v1/jobs/{running}").json()["status"] == "cancelled"
    assert server.wait(server.submit())["status"] == "finished"


def test_a_third_job_waits_in_our_queue_and_cancels_at_once(server: LiveServer) -> None:
    """Two replicas: two jobs go to Ray, the third stays queued here with an exact
    position, so cancelling it is immediate (200, not 202)."""
    with server.events("ray-queue") as ws:
        first, second, third = (server.submit(client_id="ray-queue", **LONG) for _ in "123")
        _next(ws, first, "started")
        _next(ws, second, "started")
        assert server.get(f"/v1/jobs/{third}").json()["position"] == 0
        response = server.delete(f"/v1/jobs/{third}")
        assert response.status_code == 200 and response.json()["status"] == "cancelled"
        for job_id in (first, second):
            server.delete(f"/v1/jobs/{job_id}")
            _next(ws, job_id, "cancelled")


def test_a_replica_killed_mid_job(ray_server: tuple[LiveServer, Any]) -> None:
    """SIGKILL the replica running a job: the job fails with `worker_lost` and says
    so, nothing hangs, the next jobs finish, and Serve brings a replica back."""
    from kd_server.executors.ray_serve import running_replicas

    server, executor = ray_server
    queue = services_of(server).queue
    with server.events("ray-kill") as ws:
        job_id = server.submit(client_id="ray-kill", **LONG)
        _next(ws, job_id, "progress")
        lane = next(w for w in executor.workers() if w.name == queue.get(job_id).worker)
        pid = lane.replica_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        events = receive_until_done(ws, job_id)
    assert events[-1]["type"] == "failed"
    assert events[-1]["error"]["code"] == "worker_lost"
    assert "Generate again" in events[-1]["error"]["message"]
    after = [server.submit(client_id="ray-kill") for _ in range(3)]
    for later in after:
        assert server.wait(later, timeout=300)["status"] == "finished"
    deadline = time.monotonic() + 300  # hang guard only
    while running_replicas() < 2:
        assert time.monotonic() < deadline, "Serve did not replace the killed replica"
        time.sleep(0.5)
