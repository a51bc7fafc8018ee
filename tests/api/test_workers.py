"""Several workers in one server (`--device cpu --device cpu`): the real server on
loopback, two real engines on the CPU, two tiny checkpoints. Parallelism, affinity,
fairness and cancel are proven by the order of events and by the queue's own record,
never by timing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.live import LiveServer, receive_until_done, recv_event, stop_server
from kd_server.api.services import EngineRunner
from kd_server.config import Settings
from kd_server.executors.local import EngineWorker, device_list, worker_names
from support.workers import services_of, start_with_workers, write_checkpoints

MODELS = ("alpha", "beta")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoints(tmp_path_factory.mktemp("models"), MODELS)


@pytest.fixture(scope="module")
def two_workers(models: Path) -> Iterator[LiveServer]:
    """A server with two CPU workers, each keeping one checkpoint warm."""
    from kd_server.engine import Engine
    from kd_server.library import ModelLibrary

    library = ModelLibrary([models], default_model="alpha")
    settings = Settings(device="cpu,cpu", cache_size=1)
    devices = device_list(settings.device)
    engines = [Engine(library, device=d, cache_size=1) for d in devices]
    workers = [
        EngineWorker(name, engine, EngineRunner(engine, settings.preview_max_size))
        for name, engine in zip(worker_names(devices), engines, strict=True)
    ]
    live = start_with_workers(settings, engines[0], library, workers)
    yield live
    stop_server(live)


def _job(model: str, steps: int = 2, **extra: Any) -> dict[str, Any]:
    return {"model": model, "steps": steps, "preview_every": 0, **extra}


def test_device_setting_names_one_worker_per_device() -> None:
    assert device_list("cuda:0, cuda:1") == ["cuda:0", "cuda:1"]
    assert device_list(["cpu", "cpu"]) == ["cpu", "cpu"]
    assert device_list("") == ["auto"]
    assert worker_names(["cpu", "cpu"]) == ["cpu#0", "cpu#1"]
    assert worker_names(["cuda:0", "cuda:1"]) == ["cuda:0", "cuda:1"]
    with pytest.raises(ValueError):
        device_list("all,cpu")


def test_two_cold_workers_load_at_once_and_loading_still_works_after(
    models: Path, library: Any
) -> None:
    """Two workers loading their first checkpoint at the same moment: both jobs
    finish, and a load after them works. (Without kd_server.load_lock, diffusers'
    process-wide empty-weights patch left modules on the meta device and broke every
    later load in the process.)"""
    from kd_server.engine import Engine
    from kd_server.library import ModelLibrary

    cold = ModelLibrary([models], default_model="beta")
    settings = Settings(device="cpu,cpu", cache_size=1)
    engines = [Engine(cold, device="cpu", cache_size=1) for _ in range(2)]
    workers = [
        EngineWorker(f"cold#{index}", engine, EngineRunner(engine, settings.preview_max_size))
        for index, engine in enumerate(engines)
    ]
    live = start_with_workers(settings, engines[0], cold, workers)
    try:
        ids = [live.submit(client_id=f"cold-{n}", **_job("beta")) for n in range(2)]
        assert [live.wait(job_id)["status"] for job_id in ids] == ["finished", "finished"]
        assert {services_of(live).queue.get(job_id).worker for job_id in ids} == {
            "cold#0",
            "cold#1",
        }
    finally:
        stop_server(live)
    fresh = Engine(library, device="cpu")
    assert fresh.preload() and fresh.loaded_models()


def test_two_workers_run_jobs_at_the_same_time(two_workers: LiveServer) -> None:
    """A short job submitted after a long one finishes first: it did not wait."""
    with two_workers.events("parallel") as ws:
        long_id = two_workers.submit(client_id="parallel", **_job("alpha", steps=30))
        short_id = two_workers.submit(client_id="parallel", **_job("alpha", steps=2))
        order: list[tuple[str, str]] = []
        while len([e for e in order if e[1] == "finished"]) < 2:
            event = recv_event(ws, 120)
            order.append((event["job_id"], event["type"]))
    assert order.index((short_id, "started")) < order.index((long_id, "finished"))
    assert order.index((short_id, "finished")) < order.index((long_id, "finished"))
    queue = services_of(two_workers).queue
    assert queue.get(long_id).worker != queue.get(short_id).worker


def test_a_job_goes_to_the_worker_holding_its_model(two_workers: LiveServer) -> None:
    """alpha, beta, beta, beta, alpha, one at a time: each model stays on its worker
    (turn-taking alone would send the second beta to the worker holding alpha)."""
    queue = services_of(two_workers).queue
    ran: list[tuple[str, str | None]] = []
    for model in ("alpha", "beta", "beta", "beta", "alpha"):
        job_id = two_workers.submit(client_id="affinity", **_job(model))
        assert two_workers.wait(job_id)["status"] == "finished"
        ran.append((model, queue.get(job_id).worker))
    alpha = {worker for model, worker in ran if model == "alpha"}
    beta = {worker for model, worker in ran if model == "beta"}
    assert len(alpha) == 1 and len(beta) == 1 and alpha != beta


def test_clients_take_turns_with_two_workers(two_workers: LiveServer) -> None:
    """Both workers busy, client a queues 2 more jobs and b 2: they start a, b, a, b,
    and the positions the clients are told are exact."""
    busy = [two_workers.submit(client_id="turn-a", **_job("alpha", steps=30)) for _ in "12"]
    with two_workers.events("turn-a") as ws_a, two_workers.events("turn-b") as ws_b:
        a3 = two_workers.submit(client_id="turn-a", **_job("alpha"))
        a4 = two_workers.submit(client_id="turn-a", **_job("alpha"))
        b1 = two_workers.submit(client_id="turn-b", **_job("alpha"))
        b2 = two_workers.submit(client_id="turn-b", **_job("alpha"))
        assert two_workers.get(f"/v1/jobs/{busy[0]}").json()["status"] == "running"
        assert two_workers.get(f"/v1/jobs/{busy[1]}").json()["status"] == "running"
        told = {**_positions(ws_a, {a3, a4}), **_positions(ws_b, {b1, b2})}
    queue = services_of(two_workers).queue
    # a4 moves back behind b1; then every start moves the rest up by one
    assert told == {a3: [0], a4: [1, 2, 1, 0], b1: [1, 0], b2: [3, 2, 1, 0]}
    started = sorted((a3, a4, b1, b2), key=lambda j: queue.get(j).started_at)
    assert started == [a3, b1, a4, b2]
    for job_id in busy:
        assert two_workers.wait(job_id)["status"] == "finished"


def _positions(ws: Any, jobs: set[str]) -> dict[str, list[int]]:
    """Every position each job was told, up to the end of all of them."""
    told: dict[str, list[int]] = {job_id: [] for job_id in jobs}
    ended: set[str] = set()
    while ended != jobs:
        event = recv_event(ws, 120)
        if event["job_id"] not in jobs:
            continue
        if event["type"] == "queued":
            told[event["job_id"]].append(event["position"])
        elif event["type"] in ("finished", "failed", "cancelled"):
            ended.add(event["job_id"])
    return told


def test_cancel_reaches_a_job_on_the_second_worker(two_workers: LiveServer) -> None:
    queue = services_of(two_workers).queue
    with two_workers.events("cancel") as ws:
        first = two_workers.submit(client_id="cancel", **_job("alpha", steps=30))
        second = two_workers.submit(client_id="cancel", **_job("alpha", steps=30))
        while True:
            event = recv_event(ws, 120)
            if event["job_id"] == second and event["type"] == "progress":
                break
        assert queue.get(second).worker != queue.get(first).worker
        assert two_workers.delete(f"/v1/jobs/{second}").status_code == 202
        events = receive_until_done(ws, second)
    assert events[-1]["type"] == "cancelled"
    assert two_workers.wait(second)["status"] == "cancelled"
    assert two_workers.wait(first)["status"] == "finished"
    after = two_workers.submit(client_id="cancel", **_job("alpha"))
    assert two_workers.wait(after)["status"] == "finished"


def test_scale_out_settings_are_checked_when_read() -> None:
    from kd_server.config import ConfigError, ReplicaRange, load_settings, replica_range

    assert replica_range("1:4") == ReplicaRange(1, 4)
    assert replica_range("2") == ReplicaRange(2, 2)
    for bad in ("0:2", "3:1", "a:b", "1:2:3", ""):
        with pytest.raises(ConfigError, match="ray_replicas"):
            replica_range(bad)
    settings = load_settings(
        {"device": ["cpu", "cpu"], "ray_replicas": "1:3"}, Path("/nonexistent")
    )
    assert settings.device == "cpu,cpu" and settings.ray_replicas == "1:3"
    with pytest.raises(ConfigError, match="ray_replicas"):
        load_settings({"ray_replicas": "4:2"}, Path("/nonexistent"))
