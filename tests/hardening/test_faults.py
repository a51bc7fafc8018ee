"""Faults: what goes wrong around a job, and what the server does about it.

- A client that goes away mid-job (WebSocket closed, an upload cut off): the job
  completes and its result stays retrievable.
- Out of GPU memory during a job (the test wraps the engine so that the denoising
  loop raises a real `torch.OutOfMemoryError`): the job fails with a clear message,
  the memory is given back, the next job succeeds.
- A listed model file deleted or corrupted: the job fails with `model_unusable` and
  a message naming the model; the server carries on.
- A full disk: results live in memory on the server, so "writing results" means the
  CLI's output file (`generate -o`); it fails with a clear error, no traceback.
- A stuck WebSocket consumer that never reads: the worker never waits for it.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import requests
import torch

from api.live import LiveServer, job, receive_until_done, recv_event
from hardening.figures import record
from hardening.support import HANG_GUARD_S, ROOT, assert_error, wait_job
from support.faults import OutOfMemoryAtStep

_survived: list[str] = []


def _png_of(live: LiveServer, state: dict[str, Any]) -> bytes:
    reply = live.get(state["images"][0]["url"])
    assert reply.status_code == 200 and reply.content.startswith(b"\x89PNG"), reply.text[:200]
    return reply.content


# --------------------------------------------------------------- clients going away


def test_job_completes_after_its_client_disconnects(token_server: LiveServer):
    client = "goes-away"
    with token_server.events(client) as ws:
        job_id = token_server.submit(client_id=client, steps=6)
        while recv_event(ws, HANG_GUARD_S)["type"] != "progress":
            pass
    # the connection is closed mid-job; nothing cancels the job
    state = wait_job(token_server.url, token_server.headers, job_id)
    assert state["status"] == "finished", state
    _png_of(token_server, state)
    _survived.append("client disconnected mid-job")


def test_upload_cut_off_mid_body_leaves_the_server_serving(token_server: LiveServer):
    """A client that declares a body and hangs up halfway (Wi-Fi dropped)."""
    port = int(token_server.url.rsplit(":", 1)[1])
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD_S) as sock:
            head = (
                "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {token_server.settings.token}\r\n"
                "Content-Length: 100000\r\n\r\n"
            )
            sock.sendall(head.encode() + b'{"task": "txt2img", "prompt": "')
    assert token_server.get("/v1/health").status_code == 200
    state = wait_job(token_server.url, token_server.headers, token_server.submit(steps=1))
    assert state["status"] == "finished"
    _survived.append("upload cut off mid-body")


# ---------------------------------------------------------------------- out of memory


def _live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance() on torch's deprecated aliases warns
        warnings.simplefilter("ignore")
        return sum(1 for obj in gc.get_objects() if isinstance(obj, torch.Tensor))


def test_out_of_memory_fails_the_job_frees_memory_and_the_next_job_runs(server_factory, engine):
    live = server_factory(engine=OutOfMemoryAtStep(engine, step=2))
    warm = wait_job(live.url, live.headers, live.submit(steps=1))  # under the fault step
    assert warm["status"] == "finished", warm
    baseline = _live_tensors()
    client = "oom-client"
    for _ in range(3):
        with live.events(client) as ws:
            job_id = live.submit(steps=4, client_id=client)
            events = receive_until_done(ws, job_id)
        failed = events[-1]
        assert failed["type"] == "failed", events
        assert failed["error"]["code"] == "out_of_memory"
        assert "memory" in failed["error"]["message"] and "smaller" in failed["error"]["message"]
        state = live.get(f"/v1/jobs/{job_id}").json()
        assert state["status"] == "failed" and state["error"]["code"] == "out_of_memory"
    # the failed jobs' latents, traceback frames and pipeline state were all let go
    assert _live_tensors() <= baseline + 16
    after = wait_job(live.url, live.headers, live.submit(steps=1))
    assert after["status"] == "finished", after
    _png_of(live, after)
    _survived.append("out of GPU memory x3, then a good job")


# ------------------------------------------------------- model files that go bad


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    """A real single-file SD1.5 checkpoint (tiny) in an A1111-style folder."""
    from modelkit import ldm_layout

    root = tmp_path / "models" / "Stable-diffusion"
    root.mkdir(parents=True)
    pipe = ldm_layout.build_tiny_components("sd15", seed=5)
    path = root / "fragile.safetensors"
    ldm_layout.write_ldm_checkpoint(pipe, path)
    ldm_layout.save_config_folder(pipe, path.with_suffix(".config"))
    return tmp_path


def _fragile_server(factory: Any, folder: Path) -> tuple[LiveServer, str]:
    from kd_server.engine import Engine
    from kd_server.library import ModelLibrary

    library = ModelLibrary([folder])
    engine = Engine(library, device="cpu", cache_size=1)
    live = factory(engine=engine, library=library)
    names = [c["name"] for c in live.get("/v1/models").json()["checkpoints"]]
    fragile = next(name for name in names if "fragile" in name)
    return live, fragile


@pytest.mark.parametrize("damage", ["deleted", "truncated", "overwritten with zeros"])
def test_model_file_damaged_while_listed_fails_the_job_clearly(
    server_factory, model_folder, damage
):
    live, name = _fragile_server(server_factory, model_folder)
    path = next(model_folder.rglob("fragile.safetensors"))
    if damage == "deleted":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:4096])
    else:
        path.write_bytes(b"\x00" * path.stat().st_size)
    reply = live.post("/v1/jobs", json=job(model=name))
    if reply.status_code != 202:  # refusing at submit is as good as failing the job
        message = assert_error(reply, 422)
    else:
        state = wait_job(live.url, live.headers, reply.json()["job_id"])
        assert state["status"] == "failed", state
        assert state["error"]["code"] == "model_unusable", state
        message = state["error"]["message"]
    assert name in message and "Traceback" not in message, message
    assert live.get("/v1/models").status_code == 200
    other = wait_job(live.url, live.headers, live.submit(model="tiny-sd15-embedded", steps=1))
    assert other["status"] == "finished", other
    _survived.append(f"model file {damage} while listed")


# ------------------------------------------------------------------------ full disk


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KD_")}
    env.update(KD_CONFIG=os.devnull, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    command = [sys.executable, "-m", "kd_server.cli", "generate", "a test", *args]
    options = ["--steps", "1", "--width", "64", "--height", "64", "--device", "cpu"]
    return subprocess.run(
        command + options, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_cli_reports_a_full_disk_clearly(tmp_path: Path, full: bool):
    full = _cli("-o", "/dev/full")  # every write fails with ENOSPC
    assert full.returncode == 1, full.stderr[-2000:]
    assert "Traceback" not in full.stderr, full.stderr[-2000:]
    assert "/dev/full" in full.stderr and "No space left" in full.stderr, full.stderr[-2000:]
    if full:  # one CLI start is enough for the quick mode
        folder = _cli("-o", str(tmp_path))  # a folder where the file should go
        assert folder.returncode == 1 and "Traceback" not in folder.stderr, folder.stderr[-2000:]
        assert str(tmp_path) in folder.stderr
    _survived.append("full disk / unwritable output (CLI)")


# --------------------------------------------------------------- stuck consumers


def _stuck_consumer(live: LiveServer, client_id: str) -> socket.socket:
    """A WebSocket client that completes the handshake, then never reads a byte; its
    receive buffer is as small as the kernel allows, so the server's sends back up."""
    port = int(live.url.rsplit(":", 1)[1])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /v1/events?client_id={client_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {live.settings.token}\r\n\r\n"
        ).encode()
    )
    return sock


def _subscription(live: LiveServer, client_id: str) -> Any:
    hub = live.running.server.kd_app.state.services.hub
    deadline = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < deadline:
        with hub._lock:
            subs = list(hub._subscriptions.get(client_id, ()))
        if subs:
            return subs[0]
        time.sleep(0.02)
    raise AssertionError("the stuck consumer never subscribed")


def test_stuck_websocket_consumer_never_holds_up_the_worker(server_factory):
    """Jobs for a client that never reads pile events up; once the kernel's socket
    buffers are full too, the server sheds previews and progress (bounded buffer),
    and the worker goes on: the jobs after that point, and another client's, finish."""
    live = server_factory()
    stuck = _stuck_consumer(live, "stuck")
    try:
        subscription = _subscription(live, "stuck")
        jobs = 0
        while subscription.dropped == 0 and not subscription.closed:
            assert jobs < 40, "the kernel buffers never filled"
            body = {"client_id": "stuck", "steps": 60, "preview_every": 1, "width": 192}
            body.update(height=192)
            state = wait_job(live.url, live.headers, live.submit(**body))
            assert state["status"] == "finished", state
            jobs += 1
        # the consumer is now hopelessly behind; the worker is not
        after = [live.submit(client_id="stuck", steps=50, preview_every=1) for _ in range(2)]
        with live.events("watcher") as ws:  # another artist, reading normally
            mine = live.submit(client_id="watcher", steps=2)
            events = receive_until_done(ws, mine)
        assert events[-1]["type"] == "finished"
        for job_id in after:
            assert wait_job(live.url, live.headers, job_id)["status"] == "finished"
        assert subscription.pending() <= subscription.capacity
        record("stuck_consumer_events_dropped", subscription.dropped)
        record("stuck_consumer_jobs", jobs + 2)
    finally:
        with contextlib.suppress(OSError):
            stuck.close()
    assert live.get("/v1/health").status_code == 200
    _survived.append("stuck WebSocket consumer (events shed, worker unaffected)")


def test_slow_reader_with_requests_timeout_is_not_a_hang(token_server: LiveServer):
    """A client that reads an image one byte at a time still gets all of it."""
    state = wait_job(token_server.url, token_server.headers, token_server.submit(steps=1))
    url = token_server.url + state["images"][0]["url"]
    with requests.get(url, headers=token_server.headers, stream=True, timeout=HANG_GUARD_S) as r:
        data = b"".join(r.iter_content(chunk_size=1))
    assert data.startswith(b"\x89PNG")


def test_zz_record_figures():
    record("faults_survived", sorted(_survived))
