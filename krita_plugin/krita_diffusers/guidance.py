"""What the docker tells someone who has just installed it: how to get a server when
none answers, and what to do next the first time one does.

Plain Python. The data folder rule mirrors the installer's (`installer/platforms.py`),
which writes `first-image.png` there; a test checks the two agree on every platform.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

APP = "krita-diffusers"
FIRST_IMAGE = "first-image.png"
#: Remembered once the docker has connected a first time (the welcome is shown once);
#: beside the settings, in the plugin's own group of Krita's settings file.
WELCOMED_KEY = "krita_diffusers/welcomed"

WHAT_NEXT = (
    "Connected. Next: type a prompt and press Generate. Select part of your painting "
    "first to repaint just that part; results wait in the history until you Apply them."
)

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def data_dir(platform: str, env: Mapping[str, str], home: Path) -> Path:
    """Where the installer keeps its files (and the first image) for this user.

    `platform` is `sys.platform` ("linux", "win32", "darwin").
    """
    if platform.startswith("win"):
        local = env.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(local) / APP
    if platform == "darwin":
        return home / "Library" / "Application Support" / APP
    data = env.get("XDG_DATA_HOME") or str(home / ".local" / "share")
    return Path(data) / APP


def first_image_path(
    platform: str | None = None, env: Mapping[str, str] | None = None, home: Path | None = None
) -> Path:
    """The first image the installer generated (it may not exist)."""
    env = os.environ if env is None else env
    home = home or Path(env.get("HOME") or env.get("USERPROFILE") or Path.home())
    return data_dir(platform or sys.platform, env, home) / FIRST_IMAGE


def is_local(url: str) -> bool:
    """True when the server URL points at this machine, where Krita can start it."""
    return (urlsplit(url.strip()).hostname or "") in LOCAL_HOSTS


def unreachable_hint(url: str, command: str) -> str:
    """One line for the connection label when no server answers: what to do now."""
    where = url.strip().rstrip("/")
    if is_local(url):
        return f"Cannot reach the server at {where}. Press Start server, or run: {command.strip()}"
    return f"Cannot reach the server at {where}. Check that it runs, and the URL (⚙)."


def welcomed(value: str | None) -> bool:
    """Reads the stored "welcomed" flag."""
    return (value or "").strip().lower() in ("1", "true", "yes")
