"""SIGTERM on a real `serve()` process: the running job is cancelled, the client is
told (a `cancelled` event, then a 1001 close), and the process exits cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import requests
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

SERVE = (
    "import sys\n"
    "from kd_server.api.server import serve\n"
    "from kd_server.config import Settings\n"
    "sys.exit(serve(Settings(port=int(sys.argv[1]), device='cpu')))\n"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120  # guards against a hang, not a speed check
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            requests.get(url + "/v1/health", timeout=2)
            return
        except requests.ConnectionError:
            time.sleep(0.2)
    raise AssertionError("server did not come up")


def test_sigterm_cancels_running_job_and_tells_clients() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "KD_CONFIG": os.devnull}
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until_up(url, process)
        with connect(f"ws://127.0.0.1:{port}/v1/events?client_id=term", open_timeout=10) as ws:
            body = {"task": "txt2img", "prompt": "x", "steps": 150, "width": 256, "height": 256}
            running = requests.post(url + "/v1/jobs", json={**body, "client_id": "term"}).json()
            waiting = requests.post(url + "/v1/jobs", json={**body, "client_id": "term"}).json()
            events = []
            while not any(e["type"] == "progress" for e in events):
                events.append(json.loads(ws.recv(timeout=120)))
            process.send_signal(signal.SIGTERM)
            try:
                while True:
                    events.append(json.loads(ws.recv(timeout=60)))
            except ConnectionClosed as closed:
                assert closed.rcvd is not None and closed.rcvd.code == 1001
        cancelled = {e["job_id"] for e in events if e["type"] == "cancelled"}
        assert cancelled == {running["job_id"], waiting["job_id"]}
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = process.stdout.read() if process.stdout else ""
    assert "Traceback" not in output, output
