"""Preconditions checked before anything is written: Python version, free disk, write access.

Failing early with a sentence beats a pip install that dies half-way through a
1.5 GB download because the disk filled up.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from installer.errors import InstallError

MIN_PYTHON = (3, 10)
GB = 1024**3

FreeSpace = Callable[[Path], int]


def check_installer_python(version: tuple[int, int] = sys.version_info[:2]) -> None:
    """The installer itself uses 3.10 syntax and stdlib."""
    if tuple(version) < MIN_PYTHON:
        raise InstallError(
            f"This Python is {version[0]}.{version[1]}; "
            "Krita Diffusers needs Python 3.10 or newer.",
            "Install Python 3.10+ (python.org, or your package manager), then run "
            "`python3.11 -m installer` (or `py -3.11 -m installer` on Windows).",
        )


def probe_python(python: str) -> tuple[int, int]:
    """The (major, minor) of another interpreter, for `--python`."""
    code = "import sys; print('%d %d' % sys.version_info[:2])"
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InstallError(
            f"Cannot run the Python interpreter {python!r} ({exc}).",
            "Pass --python with the path of a working Python 3.10+ interpreter.",
        ) from exc
    if out.returncode != 0:
        raise InstallError(
            f"The Python interpreter {python!r} failed to start: {out.stderr.strip()[:300]}",
            "Pass --python with the path of a working Python 3.10+ interpreter.",
        )
    major, minor = (int(part) for part in out.stdout.split())
    if (major, minor) < MIN_PYTHON:
        raise InstallError(
            f"{python} is Python {major}.{minor}; the server needs Python 3.10 or newer.",
            "Install Python 3.10+ and pass it with --python /path/to/python3.11.",
        )
    return major, minor


def existing_ancestor(path: Path) -> Path:
    """The closest folder that exists, where free space can be measured."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def disk_free(path: Path) -> int:
    return shutil.disk_usage(existing_ancestor(path)).free


def require_space(path: Path, needed: int, purpose: str, free_space: FreeSpace = disk_free) -> None:
    free = free_space(path)
    if free < needed:
        raise InstallError(
            f"Not enough disk space for {purpose}: {needed / GB:.1f} GB needed at "
            f"{existing_ancestor(path)}, {free / GB:.1f} GB free.",
            "Free some space, or choose another place (--venv for the server, "
            "--models-dir for downloads).",
        )


def require_writable(folder: Path, what: str, flag: str) -> None:
    """Creates `folder` if needed and proves a file can be written there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".kd-write-test-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise InstallError(
            f"{what} {folder} is not writable ({exc.strerror or exc}).",
            f"Fix its permissions (it should belong to you), or pass {flag} with a folder you own.",
        ) from exc
