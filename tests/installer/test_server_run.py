"""`start` / `stop` of the installed server (server_run) with the project's real server
script from this checkout's .venv."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from installer import server_run

from .conftest import ROOT

SCRIPT = ROOT / ".venv" / "bin" / "krita-diffusers-server"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_stop_leaves_alone_a_process_that_reuses_a_stale_pid(tmp_path: Path) -> None:
    """The pid file outlived our server (a reboot, a crash); its number now belongs
    to someone else's process, which `stop` (and so `uninstall`) must not kill."""
    files = server_run.ServerFiles(tmp_path)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        files.pid.write_text(f"{other.pid}\n")
        assert server_run.running_pid(files) is None
        assert server_run.stop(files, wait_s=2) is False
        assert other.poll() is None
        assert not files.pid.exists()
    finally:
        other.kill()
        other.wait()


@pytest.mark.skipif(not SCRIPT.exists(), reason="needs the server installed in .venv")
def test_start_and_stop_a_server_that_requires_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python3 -m installer start` knows no token; a server with one (as the installer
    writes for --host 0.0.0.0) answers 401, which still means it is up."""
    port = _free_port()
    config = tmp_path / "server.toml"
    config.write_text(f'port = {port}\ntoken = "s3cret"\n', encoding="utf-8")
    monkeypatch.setenv("KD_CONFIG", str(config))
    monkeypatch.delenv("KD_TOKEN", raising=False)
    files = server_run.ServerFiles(tmp_path / "data")
    try:
        pid = server_run.start(SCRIPT, files, port, token=None, wait_s=120)
        assert server_run.running_pid(files) == pid
    finally:
        stopped = server_run.stop(files)
    assert stopped and server_run.running_pid(files) is None
