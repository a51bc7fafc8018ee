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
from installer.server_env import SERVER_SCRIPT


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


def answering(port: int, token: str | None = None, timeout: float = 2.0) -> bool:
    """True when a server answers /v1/health on `port`: with its health, or by refusing
    a missing or wrong token (a server with a token is up all the same)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/health")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        return exc.code in (401, 403)
    except (OSError, ValueError):
        return False
    return True


def _alive(pid: int) -> bool:
    if sys.platform == "win32":
        return _alive_on_windows(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


if sys.platform == "win32":  # defined there only, so type checkers elsewhere skip it

    def _alive_on_windows(pid: int) -> bool:
        """Windows has no signal 0: `os.kill(pid, 0)` there would terminate the process."""
        import ctypes
        from ctypes import wintypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        kernel32.OpenProcess.restype = wintypes.HANDLE
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return ctypes.get_last_error() == 5  # ERROR_ACCESS_DENIED: it exists
        try:
            code = wintypes.DWORD()
            ok = kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
            return bool(ok) and code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)


def _is_our_server(pid: int, proc: Path = Path("/proc")) -> bool:
    """Whether `pid` runs the server script. A pid file can outlive its process (a
    reboot, a crash) and the number be reused by anyone's program, which must not be
    stopped. Checked where /proc tells (Linux); elsewhere the pid is trusted."""
    if not proc.is_dir():
        return True
    try:
        words = (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(Path(os.fsdecode(word)).name == SERVER_SCRIPT for word in words if word)


def running_pid(files: ServerFiles) -> int | None:
    """The pid of the server we started, if that process still runs it."""
    try:
        pid = int(files.pid.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) and _is_our_server(pid) else None


def start(
    script: Path, files: ServerFiles, port: int, token: str | None, wait_s: float = 180
) -> int:
    """Start `script serve` in the background and wait until /v1/health answers."""
    if answering(port, token):
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
        if answering(port, token):
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
    with contextlib.suppress(OSError):  # it may have exited just now
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
        # reap it if it is our own child (tests start and stop in one process)
        with contextlib.suppress(ChildProcessError, OSError, AttributeError):
            os.waitpid(pid, os.WNOHANG)
    if _alive(pid) and hasattr(signal, "SIGKILL"):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    files.pid.unlink(missing_ok=True)
    return True
