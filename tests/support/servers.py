"""The real server for tests, started two ways, and the one free-port helper.

- In this process: `tests.api.live.start_server` wraps the product's own
  `kd_server.api.server.serve_in_thread` (fast; the test can reach the app's state).
- As a process: `ProcessServer` runs `python -m kd_server.cli serve` with a settings
  file, in its own process group, logging to a file, so a test can stop it with
  SIGTERM, kill it, restart it on the same port, measure its memory alone or read
  its log.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[2]
STARTUP_S = 180.0
#: The Python that runs the server: the one with the server's packages (torch,
#: diffusers). The plugin's second test run (PyQt6, tests/run.sh) runs in another
#: environment and names the main one here through KD_SERVER_PYTHON.
SERVER_PYTHON = os.environ.get("KD_SERVER_PYTHON") or sys.executable


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ProcessServer:
    """`python -m kd_server.cli serve` on a free loopback port, in its own process
    group, logging to a file (the log is evidence for the token test). `settings`
    become the TOML settings file; it can be stopped, killed and started again on the
    same port. It keeps nothing on disk unless `state_dir` is among the settings."""

    def __init__(self, work: Path, token: str = "", **settings: Any) -> None:
        self.work = work
        self.token = token
        self.settings = {"state_dir": "", **settings}
        self.port = free_port()
        self.log = work / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        config = self.work / "server.toml"
        config.write_text(
            "".join(f"{key} = {json.dumps(value)}\n" for key, value in self.settings.items()),
            encoding="utf-8",
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("KD_")}
        env.update(KD_CONFIG=str(config), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        if self.token:
            env["KD_TOKEN"] = self.token
        command = [SERVER_PYTHON, "-m", "kd_server.cli", "serve", "--port", str(self.port)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log_text()[-3000:]}")
            with contextlib.suppress(requests.RequestException):
                reply = requests.get(f"{self.url}/v1/health", headers=self.headers, timeout=2)
                if reply.status_code == 200:
                    return
            time.sleep(0.3)
        raise RuntimeError(f"the server did not answer: {self.log_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: the crash a clean shutdown never sees."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def _signal(self, sig: signal.Signals) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(encoding="utf-8", errors="replace")
        return ""
