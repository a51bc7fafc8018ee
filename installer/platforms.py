"""Where things live on Linux, Windows and macOS.

Krita looks for user Python plugins in its resource folder's `pykrita/` and reads which
ones are enabled from `kritarc`; both move per platform (and with XDG variables on
Linux). Everything here is computed from an explicit platform name, environment and
home folder so tests can ask for Windows or macOS paths on Linux.
"""

from __future__ import annotations

import os
import platform
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

APP = "krita-diffusers"


class System(Enum):
    LINUX = "Linux"
    WINDOWS = "Windows"
    MACOS = "Darwin"

    @classmethod
    def current(cls) -> System:
        name = platform.system()
        for member in cls:
            if member.value == name:
                return member
        return cls.LINUX  # BSDs and others follow the XDG layout Krita uses there


@dataclass(frozen=True)
class Locations:
    """Every path the installer reads or writes, for one user on one platform."""

    system: System
    home: Path
    krita_resources: Path  # Krita's per-user resource folder (holds pykrita/)
    kritarc: Path
    data_dir: Path  # our own state: manifest, server log, pid, caches, models
    config_file: Path  # the server's settings TOML (same rule as kd_server.config)

    @property
    def pykrita(self) -> Path:
        return self.krita_resources / "pykrita"

    @property
    def default_venv(self) -> Path:
        return self.data_dir / "venv"

    @property
    def default_models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def manifest(self) -> Path:
        return self.data_dir / "install-manifest.json"


def _env_path(env: Mapping[str, str], key: str, fallback: Path) -> Path:
    value = env.get(key)
    return Path(value) if value else fallback


def server_config_path(env: Mapping[str, str], home: Path) -> Path:
    """Mirrors `kd_server.config.default_config_path` so server and installer agree."""
    if explicit := env.get("KD_CONFIG"):
        return Path(explicit)
    return _env_path(env, "XDG_CONFIG_HOME", home / ".config") / APP / "server.toml"


def locations(
    system: System | None = None,
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> Locations:
    """Paths for `system` (default: this machine), from `env` (default: os.environ)."""
    system = system or System.current()
    env = os.environ if env is None else env
    home = home or Path(env.get("HOME") or env.get("USERPROFILE") or Path.home())
    config_file = server_config_path(env, home)
    if system is System.WINDOWS:
        roaming = _env_path(env, "APPDATA", home / "AppData" / "Roaming")
        local = _env_path(env, "LOCALAPPDATA", home / "AppData" / "Local")
        return Locations(
            system, home, roaming / "krita", local / "kritarc", local / APP, config_file
        )
    if system is System.MACOS:
        support = home / "Library" / "Application Support"
        kritarc = home / "Library" / "Preferences" / "kritarc"
        return Locations(system, home, support / "krita", kritarc, support / APP, config_file)
    data = _env_path(env, "XDG_DATA_HOME", home / ".local" / "share")
    config = _env_path(env, "XDG_CONFIG_HOME", home / ".config")
    return Locations(system, home, data / "krita", config / "kritarc", data / APP, config_file)


def venv_python(venv: Path, system: System) -> Path:
    if system is System.WINDOWS:
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def venv_script(venv: Path, name: str, system: System) -> Path:
    if system is System.WINDOWS:
        return venv / "Scripts" / f"{name}.exe"
    return venv / "bin" / name


def server_command(script: Path) -> str:
    """The command the plugin's *Start server* runs (its `server_command` setting):
    the venv's script by full path, since Krita's PATH may not have `~/.local/bin` (and
    Windows has no such link). Forward slashes on every platform (Windows accepts them),
    quoted as the plugin splits it (`krita_diffusers.settings.split_command`), so a home
    folder with a space stays one word."""
    return f"{shlex.quote(script.as_posix())} serve"
