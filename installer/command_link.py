"""Puts `krita-diffusers-server` on the user's PATH, the way pipx and pip --user do.

The server lives in its own venv, whose bin/ folder is on nobody's PATH, so the
README's `krita-diffusers-server models ...` would say "command not found". A
symlink in `~/.local/bin` (the per-user command folder of the XDG layout, which most
Linux distributions and macOS shells set up put on PATH) makes the bare name work.
When that folder is not on PATH the user is told the exact line to add. A file of the
same name that is not our link is never replaced.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from installer.manifest import CommandLink
from installer.platforms import Locations, System
from installer.report import Action


@dataclass(frozen=True)
class LinkResult:
    action: Action  # CREATED, UPDATED, KEPT, or SKIPPED (a file of someone else's is there)
    link: Path
    on_path: bool  # whether the bare command name finds it


def bin_dir(where: Locations) -> Path | None:
    """`~/.local/bin` on Linux and macOS; None on Windows (no such convention there)."""
    if where.system is System.WINDOWS:
        return None
    return where.home / ".local" / "bin"


def on_path(folder: Path, path_env: str | None = None) -> bool:
    """Whether `folder` is one of the folders in PATH (`path_env`, default: ours)."""
    path_env = os.environ.get("PATH", "") if path_env is None else path_env
    wanted = os.path.normpath(folder.absolute())
    for entry in path_env.split(os.pathsep):
        if entry and os.path.normpath(Path(os.path.expanduser(entry)).absolute()) == wanted:
            return True
    return False


def _points_at(link: Path, target: Path) -> bool:
    return link.is_symlink() and os.readlink(link) == str(target)


def make_link(script: Path, folder: Path, ours: CommandLink | None) -> LinkResult:
    """Link `folder/<script name>` to `script`. An existing link is replaced only when
    it is ours (`ours`, from the install record), e.g. after `--venv` moved."""
    link = folder / script.name
    visible = on_path(folder)
    if _points_at(link, script):
        return LinkResult(Action.KEPT, link, visible)
    mine = ours is not None and ours.path == str(link) and _points_at(link, Path(ours.target))
    if (link.exists() or link.is_symlink()) and not mine:
        return LinkResult(Action.SKIPPED, link, visible)
    folder.mkdir(parents=True, exist_ok=True)
    temp = folder / f".{script.name}.kd-new"
    temp.unlink(missing_ok=True)
    temp.symlink_to(script)
    os.replace(temp, link)
    return LinkResult(Action.UPDATED if mine else Action.CREATED, link, visible)


def remove_link(record: CommandLink) -> bool:
    """Remove our link if it still points where we pointed it. True if removed."""
    link = Path(record.path)
    if not _points_at(link, Path(record.target)):
        return False
    link.unlink()
    return True


def path_hint(folder: Path, home: Path) -> str:
    """The line a user adds to their shell's startup file to get `folder` on PATH."""
    try:
        shown = "$HOME/" + folder.relative_to(home).as_posix()
    except ValueError:
        shown = str(folder)
    return f'export PATH="{shown}:$PATH"'
