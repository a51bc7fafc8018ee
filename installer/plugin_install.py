"""Puts the staged plugin into Krita's pykrita folder, replacing an old copy safely.

The new copy is written beside the old one and swapped in by renames, so an
interrupted install leaves either the old plugin or the new one, never a mix.
An installed copy identical to the staged one is left alone (quick re-runs).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from installer.checks import require_writable
from installer.plugin_build import PLUGIN, tree_digest
from installer.report import Action


def installed_paths(pykrita: Path) -> tuple[Path, Path]:
    return pykrita / f"{PLUGIN}.desktop", pykrita / PLUGIN


def is_current(staged: Path, pykrita: Path) -> bool:
    desktop, package = installed_paths(pykrita)
    if not desktop.is_file() or not package.is_dir():
        return False
    if desktop.read_bytes() != (staged / desktop.name).read_bytes():
        return False
    return tree_digest(package) == tree_digest(staged / PLUGIN)


def install(staged: Path, pykrita: Path) -> Action:
    require_writable(pykrita, "Krita's Python plugin folder", "--krita-dir")
    desktop, package = installed_paths(pykrita)
    existed = desktop.exists() or package.exists()
    if is_current(staged, pykrita):
        return Action.KEPT
    fresh = pykrita / f".{PLUGIN}.new"
    stale = pykrita / f".{PLUGIN}.old"
    for leftover in (fresh, stale):
        shutil.rmtree(leftover, ignore_errors=True)
    shutil.copytree(staged / PLUGIN, fresh)
    if package.exists():
        package.rename(stale)
    fresh.rename(package)
    shutil.rmtree(stale, ignore_errors=True)
    temp = pykrita / f".{desktop.name}.new"
    shutil.copy2(staged / desktop.name, temp)
    temp.replace(desktop)
    return Action.UPDATED if existed else Action.CREATED


def remove(pykrita: Path) -> list[Path]:
    removed = []
    desktop, package = installed_paths(pykrita)
    if package.is_dir():
        shutil.rmtree(package)
        removed.append(package)
    if desktop.is_file():
        desktop.unlink()
        removed.append(desktop)
    return removed
