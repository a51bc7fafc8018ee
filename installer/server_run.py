"""Starting, finding and stopping the installed server (`--start`, `stop`).

The server runs detached from the installer's terminal, logs to a file in our data
folder and leaves its pid there, so `stop` and `uninstall` can end exactly that
process and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from installer.errors import InstallError


@dataclass(frozen=True)
class ServerFiles:
    data_dir: Path

    @property
    def pid(self) -> Path:
        return self.data_dir / "server.pid"

    @property
    def log(self) -> Path:
        return self.data_dir / "server.log"


def read_port(config_file: Path, default: int) -> int:
    """The port the server will use, from its settings file (a user may have edited it)."""
    try:
        text = config_file.read_text(encoding="utf-8")
    except OSError:
        return default
    match = re.search(r"(?m)^\s*port\s*=\s*(\d+)\s*$", text)
    return int(match.group(1)) if match else default


def health(port: int, token: str | None = None, timeout: float = 2.0) -> dict | None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/health")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_pid(files: ServerFiles) -> int | None:
    try:
        pid = int(files.pid.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def start(
    script: Path, files: ServerFiles, port: int, token: str | None, wait_s: float = 180
) -> int:
    """Start `script serve` in the background and wait until /v1/health answers."""
    if health(port, token) is not None:
        raise InstallError(
            f"Something already answers on port {port}; not starting a second server.",
            "If it is an older Krita Diffusers server, stop it first "
            "(`python3 -m installer stop`), or change `port` in the settings file.",
        )
    files.data_dir.mkdir(parents=True, exist_ok=True)
    flags = (
        {"creationflags": 0x00000200} if sys.platform == "win32" else {"start_new_session": True}
    )
    with files.log.open("ab") as log:
        process = subprocess.Popen(
            [str(script), "serve"], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, **flags,
        )  # fmt: skip
    files.pid.write_text(f"{process.pid}\n")
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = files.log.read_text(encoding="utf-8", errors="replace")[-1500:]
            files.pid.unlink(missing_ok=True)
            raise InstallError(
                f"The server stopped right after starting (exit status {process.returncode}). "
                f"The end of its log ({files.log}):\n{tail}",
                "Fix what the log says, then start it again with the command printed above.",
            )
        if health(port, token) is not None:
            return process.pid
        time.sleep(0.5)
    raise InstallError(
        f"The server did not answer on port {port} within {wait_s:.0f} s; it is still "
        f"starting or stuck (log: {files.log}).",
        "Look at the log; `python3 -m installer stop` ends it.",
    )


def stop(files: ServerFiles, wait_s: float = 15) -> bool:
    """End the server we started (by its recorded pid). True if one was running."""
    pid = running_pid(files)
    if pid is None:
        files.pid.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
        # reap it if it is our own child (tests start and stop in one process)
        with contextlib.suppress(ChildProcessError, OSError, AttributeError):
            os.waitpid(pid, os.WNOHANG)
    if _alive(pid) and hasattr(signal, "SIGKILL"):
        os.kill(pid, signal.SIGKILL)
    files.pid.unlink(missing_ok=True)
    return True
