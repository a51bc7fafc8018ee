"""Installer test fixtures: throw-away homes, a shared vendor cache, a fake plugin repo.

Most tests run the installer in-process with `--skip-server`-style options (seconds);
the one full install with a real venv and torch lives in test_full_install.py and runs
once per session.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from installer import plugin_build
from installer.platforms import Locations, System, locations
from installer.report import Report

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_SETTINGS = ROOT / "krita_plugin" / "krita_diffusers" / "settings.py"


def sandbox_env(home: Path) -> dict[str, str]:
    """An environment whose HOME and XDG folders all live in `home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "KD_"))}
    env.pop("VIRTUAL_ENV", None)
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        XDG_CACHE_HOME=str(home / ".cache"),
    )
    return env


@pytest.fixture
def home(tmp_path: Path) -> Path:
    folder = tmp_path / "home"
    folder.mkdir()
    return folder


@pytest.fixture
def where(home: Path) -> Locations:
    return locations(System.LINUX, sandbox_env(home), home)


@pytest.fixture
def report() -> Report:
    return Report(quiet=True)


@pytest.fixture(scope="session")
def vendor_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """requests + websockets fetched once per session (pip, local index or PyPI)."""
    cache = tmp_path_factory.mktemp("vendor-cache")
    plugin_build.vendor_libraries(cache, plugin_build.default_python_candidates(None))
    return cache


@pytest.fixture
def seeded(where: Locations, vendor_cache: Path) -> Locations:
    """`where`, with the session's vendored libraries already in its cache."""
    shutil.copytree(vendor_cache, where.data_dir / "cache", dirs_exist_ok=True)
    return where


def make_fake_repo(root: Path) -> Path:
    """A checkout with a minimal plugin, for tests that must not depend on the real one
    (only its settings module is the real one)."""
    plugin = root / "krita_plugin"
    (plugin / "krita_diffusers").mkdir(parents=True)
    (plugin / "krita_diffusers.desktop").write_text(
        "[Desktop Entry]\nType=Service\nServiceTypes=Krita/PythonPlugin\n"
        "X-KDE-Library=krita_diffusers\nX-Python-2-Compatible=false\nName=Krita Diffusers\n",
        encoding="utf-8",
    )
    (plugin / "krita_diffusers" / "__init__.py").write_text("VALUE = 1\n", encoding="utf-8")
    (plugin / "krita_diffusers" / "panel.py").write_text("X = 2\n", encoding="utf-8")
    # The installer reads the plugin's defaults and rules from the real settings module.
    shutil.copy2(PLUGIN_SETTINGS, plugin / "krita_diffusers" / "settings.py")
    return root


@pytest.fixture
def fake_repo(tmp_path: Path) -> Path:
    return make_fake_repo(tmp_path / "repo")
