"""What the docker tells a newcomer, and where it finds the installer's first image."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from krita_diffusers.guidance import first_image_path, is_local, unreachable_hint, welcomed

ROOT = Path(__file__).resolve().parents[2]


def _installer_platforms():
    """installer/platforms.py, loaded from its file (the plugin cannot import it)."""
    path = ROOT / "installer" / "platforms.py"
    spec = importlib.util.spec_from_file_location("_kd_platforms_for_plugin_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name, None)
    return module


@pytest.mark.parametrize(
    ("platform", "system", "env"),
    [
        ("linux", "LINUX", {}),
        ("linux", "LINUX", {"XDG_DATA_HOME": "/data/xdg"}),
        ("win32", "WINDOWS", {"LOCALAPPDATA": "C:/Users/a/AppData/Local"}),
        ("win32", "WINDOWS", {}),
        ("darwin", "MACOS", {}),
    ],
)
def test_the_first_image_is_where_the_installer_writes_it(platform, system, env):
    platforms = _installer_platforms()
    home = Path("/home/artist")
    where = platforms.locations(platforms.System[system], env, home)
    assert first_image_path(platform, env, home) == where.data_dir / "first-image.png"


def test_the_unreachable_line_says_what_to_do():
    command = "/opt/kd/bin/krita-diffusers-server serve --port 7861"
    local = unreachable_hint("http://127.0.0.1:7861/", command)
    assert local == (
        "Cannot reach the server at http://127.0.0.1:7861. Press Start server, or run: " + command
    )
    remote = unreachable_hint("https://gpu.example/kd", command)
    assert "Start server" not in remote and "https://gpu.example/kd" in remote
    assert is_local("http://localhost:1") and not is_local("http://10.0.0.2:7860")


def test_the_welcomed_flag_reads_what_was_stored():
    assert not welcomed(None) and not welcomed("") and welcomed("true")
