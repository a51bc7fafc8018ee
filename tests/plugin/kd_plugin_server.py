"""The real server for the plugin's tests: the project's own `kd_server.cli serve`
with its embedded tiny model, on a free loopback port, in its own process group so a
test can stop and restart it. (A module of its own, not conftest, so test modules can
import it by a name no other test folder uses.)"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

PYTHON = ROOT / ".venv" / "bin" / "python"
STARTUP_S = 180.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """Start, stop and restart the real server on one port."""

    def __init__(self, work: Path, token: str = "") -> None:
        self.token = token
        self.port = free_port()
        self.work = work
        self.log = work / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        config = self.work / "server.toml"
        config.write_text("", encoding="utf-8")
        env = dict(os.environ, KD_CONFIG=str(config), HF_HUB_OFFLINE="1")
        env.pop("KD_TOKEN", None)
        if self.token:
            env["KD_TOKEN"] = self.token
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(PYTHON),
                    "-m",
                    "kd_server.cli",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.tail()}")
            with (
                contextlib.suppress(OSError, ValueError),
                urllib.request.urlopen(self._health_request(), timeout=2) as reply,
            ):
                if reply.status == 200:
                    return
            time.sleep(0.3)
        raise RuntimeError(f"the server did not answer /v1/health: {self.tail()}")

    def _health_request(self) -> urllib.request.Request:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return urllib.request.Request(f"{self.url}/v1/health", headers=headers)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(encoding="utf-8", errors="replace")[-3000:]
        return ""
