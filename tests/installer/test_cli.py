"""The installer's command line as a user meets it: help and bad flags, through the
real `python3 -m installer` (standard library only, so each run takes well under a second)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import ROOT, sandbox_env


def _run(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "installer", *args], cwd=ROOT, env=sandbox_env(home),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_top_level_help_shows_the_common_flags_and_the_commands(home: Path) -> None:
    done = _run("--help", home=home)
    assert done.returncode == 0
    for flag in ("--start", "--yes", "--port", "--skip-server", "--verbose", "--quiet"):
        assert flag in done.stdout, flag
    for command in ("install", "uninstall", "build-zip", "download", "start", "stop"):
        assert command in done.stdout, command
    assert "install --help" in done.stdout  # where the rest of the options are


def test_common_flags_work_before_and_after_the_install_command(home: Path) -> None:
    for args in (("--port", "0"), ("install", "--port", "0")):
        done = _run(*args, "--skip-server", "--yes", home=home)
        assert done.returncode == 1
        assert "--port 0 is not a port" in done.stderr and "Traceback" not in done.stderr
    assert list(home.iterdir()) == []  # refused before anything was written


def test_quiet_and_verbose_together_are_refused(home: Path) -> None:
    done = _run("--quiet", "--verbose", "--skip-server", home=home)
    assert done.returncode == 1 and "Give only one of them" in done.stderr
