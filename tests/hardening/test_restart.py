"""Nothing acknowledged is lost: the real server process killed (SIGKILL) and started
again on the same state folder, disk faults on its outputs folder, a damaged database,
and a soak with cancels and disconnects (500 jobs in full mode)."""

from __future__ import annotations

import contextlib
import io
import json
import random
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image
from websockets.sync.client import ClientConnection, connect

from hardening.figures import record
from hardening.support import HANG_GUARD_S, TERMINAL, ProcessServer, full_mode, rss_of, wait_job


def body(client_id: str, **overrides: Any) -> dict[str, Any]:
    job: dict[str, Any] = {"task": "txt2img", "prompt": "restart", "steps": 2, "width": 64}
    job.update(height=64, client_id=client_id, sampler="Euler", seed=7)
    job.update(overrides)
    return job


def submit(server: ProcessServer, job: dict[str, Any]) -> str:
    reply = requests.post(f"{server.url}/v1/jobs", json=job, timeout=HANG_GUARD_S)
    assert reply.status_code == 202, reply.text
    return str(reply.json()["job_id"])


def resume(server: ProcessServer, client_id: str) -> ClientConnection:
    url = f"ws://127.0.0.1:{server.port}/v1/events?client_id={client_id}&resume=true"
    return connect(url, open_timeout=HANG_GUARD_S)


def follow(ws: ClientConnection, job_ids: set[str]) -> dict[str, list[dict[str, Any]]]:
    """What one client hears (states first, then events) until its jobs have ended."""
    heard: dict[str, list[dict[str, Any]]] = {job_id: [] for job_id in job_ids}
    ended: set[str] = set()
    deadline = time.monotonic() + 300  # a hang guard, not a speed check
    while ended != job_ids and time.monotonic() < deadline:
        event = json.loads(ws.recv(timeout=HANG_GUARD_S))
        heard[event["job_id"]].append(event)
        if event["type"] in TERMINAL or event.get("status") in TERMINAL:
            ended.add(event["job_id"])
    assert ended == job_ids, heard
    return heard


def png_of(server: ProcessServer, job_id: str, index: int = 0) -> Image.Image:
    reply = requests.get(f"{server.url}/v1/jobs/{job_id}/images/{index}", timeout=HANG_GUARD_S)
    assert reply.status_code == 200, reply.text
    image = Image.open(io.BytesIO(reply.content))
    image.load()
    return image


@pytest.fixture
def durable(tmp_path: Path) -> Iterator[ProcessServer]:
    server = ProcessServer(tmp_path, state_dir=str(tmp_path / "state"))
    server.start()
    yield server
    server.kill()


def test_killed_with_a_running_and_five_queued_jobs_all_six_complete(
    durable: ProcessServer,
) -> None:
    long = submit(durable, body("alice", steps=60, width=128, height=128))
    queued = {
        "alice": [submit(durable, body("alice", seed=i)) for i in range(2)],
        "bob": [submit(durable, body("bob", seed=10 + i)) for i in range(3)],
    }
    deadline = time.monotonic() + 120
    while requests.get(f"{durable.url}/v1/jobs/{long}", timeout=HANG_GUARD_S).json()["step"] < 1:
        assert time.monotonic() < deadline, "the long job never started"
        time.sleep(0.05)
    durable.kill()  # SIGKILL: no shutdown code runs
    durable.start()
    mine = {"alice": {long, *queued["alice"]}, "bob": set(queued["bob"])}
    with resume(durable, "alice") as alice, resume(durable, "bob") as bob:
        heard = {"alice": follow(alice, mine["alice"]), "bob": follow(bob, mine["bob"])}
    for client, jobs in mine.items():
        for job_id in jobs:
            state = wait_job(durable.url, {}, job_id)
            assert state["status"] == "finished", state
            assert [i["index"] for i in state["images"]] == [0], state  # no duplicates
            assert set(heard[client]) == jobs  # each client hears its own jobs only
            results = [e["index"] for e in heard[client][job_id] if e["type"] == "result"]
            assert len(results) == len(set(results)) <= 1
    # each client's jobs ran in the order it submitted them
    finished_order = _finished_order(durable)
    for order in ([long, *queued["alice"]], queued["bob"]):
        assert [job_id for job_id in finished_order if job_id in order] == order
    record("restart_after_sigkill", "1 running + 5 queued from 2 clients: 6 of 6 finished")


def _finished_order(server: ProcessServer) -> list[str]:
    """The jobs in the order they finished, from the server's own database."""
    db = sqlite3.connect(Path(server.settings["state_dir"]) / "jobs.sqlite3")
    try:
        rows = db.execute("SELECT id FROM jobs WHERE status = 'finished' ORDER BY ended_at")
        return [row[0] for row in rows]
    finally:
        db.close()


def test_killed_between_finished_and_download_the_result_is_still_there(
    durable: ProcessServer,
) -> None:
    job_id = submit(durable, body("carol", seed=4242))
    assert wait_job(durable.url, {}, job_id)["status"] == "finished"
    durable.kill()
    durable.start()
    image = png_of(durable, job_id)
    assert image.size == (64, 64)
    assert "Seed: 4242" in image.info["parameters"]
    assert list((Path(durable.settings["state_dir"]) / "outputs").rglob(f"{job_id}-0.png"))


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    """A real file system of `size` (a full disk) or mounted read-only, as root can."""
    folder.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
    try:
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_a_full_or_read_only_outputs_folder_warns_and_keeps_the_result(
    tmp_path: Path, fault: str
) -> None:
    with small_tmpfs(tmp_path / "outputs", "8k", read_only=fault == "read-only") as outputs:
        server = ProcessServer(
            tmp_path, state_dir=str(tmp_path / "state"), outputs_dir=str(outputs)
        )
        server.start()
        try:
            url = f"ws://127.0.0.1:{server.port}/v1/events?client_id=dave"
            with connect(url, open_timeout=HANG_GUARD_S) as ws:
                job_id = submit(server, body("dave", width=256, height=256))
                heard = follow(ws, {job_id})[job_id]
            kinds = [e["type"] for e in heard]
            assert kinds[-1] == "finished" and "warning" in kinds, kinds
            warning = next(e for e in heard if e["type"] == "warning")
            assert warning["code"] == "result_not_saved"
            assert str(outputs) in warning["message"], warning
            assert png_of(server, job_id).size == (256, 256)  # served from memory
            after = submit(server, body("dave"))  # and the server goes on
            assert wait_job(server.url, {}, after)["status"] == "finished"
            assert "could not be saved" in server.log_text()
        finally:
            server.kill()


def test_a_damaged_database_is_set_aside_and_the_server_starts(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = ProcessServer(tmp_path, state_dir=str(state))
    first.start()
    for seed in range(3):
        submit(first, body("erin", seed=seed))
    first.kill()
    database = state / "jobs.sqlite3"
    db = sqlite3.connect(database)  # fold the write-ahead log into the main file
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    data = database.read_bytes()
    assert len(data) > 4096  # the first page holds the schema; the tables follow
    database.write_bytes(data[:4096] + b"\x13garbage" * ((len(data) - 4096) // 8))
    second = ProcessServer(tmp_path, state_dir=str(state))
    second.port = first.port
    second.start()
    try:
        assert "moved to" in second.log_text() and "empty queue" in second.log_text()
        assert list(state.glob("jobs.sqlite3.damaged-*"))
        job_id = submit(second, body("erin"))
        assert wait_job(second.url, {}, job_id)["status"] == "finished"
    finally:
        second.kill()


def test_soak_with_cancels_and_disconnects(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """N jobs from 4 clients; a fifth of them cancelled at random, and connections
    dropped and reopened. At the end no job is stuck, the database and the outputs
    folder agree, and the server's memory is back near its warm baseline."""
    jobs_total = 500 if full_mode(request.config) else 40
    server = ProcessServer(
        tmp_path,
        state_dir=str(tmp_path / "state"),
        max_queue=600,
        result_max_jobs=2 * jobs_total,  # every job stays readable until the end
    )
    server.start()
    chance = random.Random(20261129)
    try:
        submit(server, body("warm"))  # load the model, then measure
        time.sleep(0.5)
        baseline = rss_of(server.pid)
        ids: list[str] = []
        sockets: dict[str, ClientConnection] = {}
        with contextlib.ExitStack() as stack:
            for n in range(jobs_total):
                client = f"soak-{n % 4}"
                if client not in sockets or chance.random() < 0.05:  # drop and reopen
                    if client in sockets:
                        sockets.pop(client).close()
                    sockets[client] = stack.enter_context(resume(server, client))
                ids.append(submit(server, body(client, seed=n)))
                if chance.random() < 0.2:
                    requests.delete(f"{server.url}/v1/jobs/{chance.choice(ids)}", timeout=30)
            states = [wait_job(server.url, {}, job_id, timeout=600) for job_id in ids]
        assert all(s["status"] in ("finished", "cancelled") for s in states)
        time.sleep(0.5)
        grown = rss_of(server.pid) / baseline
    finally:
        server.kill()
    finished = {s["job_id"] for s in states if s["status"] == "finished"}
    db = sqlite3.connect(tmp_path / "state" / "jobs.sqlite3")
    rows = dict(db.execute("SELECT id, status FROM jobs").fetchall())
    stored = {row[0] for row in db.execute("SELECT path FROM results").fetchall()}
    db.close()
    files = {str(p) for p in (tmp_path / "state" / "outputs").rglob("*.png")}
    assert {job_id for job_id, status in rows.items() if status == "finished"} >= finished
    assert stored == files  # every recorded result has its file, and no file is orphaned
    assert not [s for s in rows.values() if s in ("queued", "running")]
    record(
        "soak",
        f"{jobs_total} jobs, 4 clients: {len(finished)} finished, "
        f"{jobs_total - len(finished)} cancelled, none stuck; RSS {grown:.3f}x warm baseline",
    )
    assert grown <= 1.10, grown
