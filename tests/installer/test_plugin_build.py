"""The plugin build: bundled libraries, and a zip that Krita's own importer accepts."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from installer import plugin_build
from installer.plugin_build import PLUGIN, PluginSource

from .conftest import ROOT

KRITA_IMPORTER = Path("/usr/share/krita/pykrita/plugin_importer/plugin_importer.py")


def _source(fake_repo: Path) -> PluginSource:
    return PluginSource.in_repo(ROOT)


def test_vendored_libraries_are_pure_python(vendor_cache: Path) -> None:
    vendor = next(vendor_cache.glob("vendor-*"))
    assert (vendor / "requests" / "__init__.py").is_file()
    assert (vendor / "websockets" / "__init__.py").is_file()
    compiled = [p for p in vendor.rglob("*") if p.suffix in {".so", ".pyd", ".dylib"}]
    assert compiled == []


def test_stage_bundles_vendor_and_skips_caches(
    tmp_path: Path, fake_repo: Path, vendor_cache: Path
) -> None:
    pycache = fake_repo / "krita_plugin" / PLUGIN / "__pycache__"
    pycache.mkdir()
    (pycache / "x.pyc").write_bytes(b"junk")
    vendor = next(vendor_cache.glob("vendor-*"))
    staged = plugin_build.stage(PluginSource.in_repo(fake_repo), vendor, tmp_path / "out")
    assert (staged / f"{PLUGIN}.desktop").is_file()
    assert (staged / PLUGIN / "vendor" / "requests" / "__init__.py").is_file()
    assert not (staged / PLUGIN / "__pycache__").exists()
    imported = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import requests, "
         "websockets.sync.client; print(requests.__version__)", str(staged / PLUGIN / "vendor")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr


def _zip(tmp_path: Path, fake_repo: Path, vendor_cache: Path) -> Path:
    vendor = next(vendor_cache.glob("vendor-*"))
    staged = plugin_build.stage(_source(fake_repo), vendor, tmp_path / "staged")
    return plugin_build.build_zip(staged, tmp_path / "dist" / "krita_diffusers.zip")


def test_zip_layout_is_what_kritas_importer_expects(
    tmp_path: Path, fake_repo: Path, vendor_cache: Path
) -> None:
    archive = _zip(tmp_path, fake_repo, vendor_cache)
    names = zipfile.ZipFile(archive).namelist()
    assert names[0] == f"{PLUGIN}.desktop"  # at the root
    assert f"{PLUGIN}/" in names and f"{PLUGIN}/__init__.py" in names
    assert f"{PLUGIN}/vendor/requests/__init__.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    again = plugin_build.build_zip(tmp_path / "staged", tmp_path / "again.zip")
    assert again.read_bytes() == archive.read_bytes()  # reproducible


@pytest.mark.skipif(
    not KRITA_IMPORTER.is_file(), reason="Krita (its plugin importer) not installed"
)
def test_kritas_own_importer_imports_the_zip(
    tmp_path: Path, fake_repo: Path, vendor_cache: Path
) -> None:
    """Runs the importer module that ships with Krita, the way its menu entry does."""
    archive = _zip(tmp_path, fake_repo, vendor_cache)
    resources = tmp_path / "krita-resources"
    resources.mkdir()
    done = subprocess.run(
        ["/usr/bin/python3", str(KRITA_IMPORTER), str(archive), str(resources)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Imported plugin:" in done.stdout
    pykrita = resources / "pykrita"
    assert (pykrita / f"{PLUGIN}.desktop").is_file()
    assert (pykrita / PLUGIN / "__init__.py").is_file()
    assert (pykrita / PLUGIN / "vendor" / "websockets" / "__init__.py").is_file()


def test_missing_plugin_sources_are_a_clear_error(tmp_path: Path) -> None:
    from installer.errors import InstallError

    with pytest.raises(InstallError, match="plugin's files are missing"):
        PluginSource.in_repo(tmp_path)
