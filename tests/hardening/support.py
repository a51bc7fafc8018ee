"""Shared helpers of the hardening suite: the uniform error check, the quick/full
switch, memory readings, and the real server as a separate process (for tests that
kill it, measure its memory alone, or read its log output)."""

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

import psutil
import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent.parent
STARTUP_S = 180.0
#: The token of the suite's servers (long and unique, so a grep of a log is proof).
TOKEN = "hardening-s3cret-token-7b1f"
#: No request of the suite may take longer than this: it guards against a hang only.
HANG_GUARD_S = 30.0
TERMINAL = ("finished", "failed", "cancelled")
#: The 4xx statuses docs/protocol.md documents; anything else is a contract break.
DOCUMENTED_4XX = {401, 404, 405, 409, 413, 422, 429}


def full_mode(config: pytest.Config) -> bool:
    """Full mode: `--hardening-full` or KD_HARDENING_FULL=1 (thousands of cases)."""
    flag = bool(config.getoption("--hardening-full", default=False))
    return flag or os.environ.get("KD_HARDENING_FULL", "") not in ("", "0")


def error_problem(response: requests.Response) -> str | None:
    """Why `response` (a 4xx/5xx) breaks the error contract, or None when it keeps it."""
    return error_text_problem(response.text)


def error_text_problem(text: str) -> str | None:
    """Why an error response body breaks the error contract, or None when it keeps it.

    The contract (docs/protocol.md): JSON `{"error": {"code", "message"}}`, nothing
    else, a code in snake_case and a message a person can act on: a sentence, with no
    traceback or Python internals in it.
    """
    try:
        body = json.loads(text)
    except ValueError:
        return f"not JSON: {text[:200]!r}"
    if not isinstance(body, dict) or set(body) != {"error"}:
        return f"not {{'error': ...}}: {body!r}"
    error = body["error"]
    if not isinstance(error, dict) or set(error) != {"code", "message"}:
        return f"error is not {{code, message}}: {error!r}"
    code, message = error["code"], error["message"]
    if not isinstance(code, str) or not code or not code.replace("_", "").isalnum():
        return f"bad code {code!r}"
    if not isinstance(message, str) or len(message) < 12 or " " not in message:
        return f"message is not a sentence: {message!r}"
    for leak in ("Traceback", 'File "', "site-packages", "pydantic", "Error(", "0x7f"):
        if leak in message:
            return f"message leaks internals ({leak}): {message!r}"
    return None


def assert_error(response: requests.Response, status: int, code: str | None = None) -> str:
    """Assert an error response of `status` (and `code`); returns its message."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    problem = error_problem(response)
    assert problem is None, problem
    error = response.json()["error"]
    if code is not None:
        assert error["code"] == code, error
    return str(error["message"])


def rss_of(pid: int) -> int:
    """Resident memory of one process, bytes."""
    return int(psutil.Process(pid).memory_info().rss)


def wait_job(base: str, headers: dict[str, str], job_id: str, timeout: float = 180) -> dict:
    """Poll until the job ends; the timeout guards against a hang only."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = requests.get(f"{base}/v1/jobs/{job_id}", headers=headers, timeout=HANG_GUARD_S)
        state = reply.json()
        if reply.status_code == 200 and state["status"] in TERMINAL:
            return dict(state)
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not end")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ProcessServer:
    """`python -m kd_server.cli serve` on a free loopback port, in its own process
    group, logging to a file (the log is evidence for the token test). `settings`
    become the TOML settings file; it can be stopped, killed and started again on the
    same port."""

    def __init__(self, work: Path, token: str = "", **settings: Any) -> None:
        self.work = work
        self.token = token
        self.settings = settings
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
        command = [sys.executable, "-m", "kd_server.cli", "serve", "--port", str(self.port)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
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
