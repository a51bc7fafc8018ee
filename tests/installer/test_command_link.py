"""`krita-diffusers-server` on PATH: a link in ~/.local/bin to the venv's script, made
and removed with real files (the full install checks the command runs by name)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from installer import command_link
from installer.manifest import CommandLink
from installer.platforms import System, locations
from installer.report import Action


def _script(folder: Path) -> Path:
    script = folder / "venv" / "bin" / "krita-diffusers-server"
    script.parent.mkdir(parents=True)
    script.write_text('#!/bin/sh\necho kd-server "$@"\n')
    script.chmod(0o755)
    return script


def test_the_link_runs_the_script_by_its_bare_name(tmp_path: Path) -> None:
    script, folder = _script(tmp_path), tmp_path / "home" / ".local" / "bin"
    result = command_link.make_link(script, folder, None)
    assert result.action is Action.CREATED and result.link == folder / script.name
    path = f"{folder}{os.pathsep}{os.environ['PATH']}"
    done = subprocess.run(["krita-diffusers-server", "models"], env={**os.environ, "PATH": path},
                          capture_output=True, text=True)  # fmt: skip
    assert done.stdout == "kd-server models\n"
    assert command_link.make_link(script, folder, None).action is Action.KEPT
    assert command_link.remove_link(CommandLink(str(result.link), str(script)))
    assert not result.link.exists() and script.is_file()


def test_someone_elses_file_is_never_replaced(tmp_path: Path) -> None:
    script, folder = _script(tmp_path), tmp_path / "bin"
    folder.mkdir()
    theirs = folder / script.name
    theirs.write_text("their own program")
    assert command_link.make_link(script, folder, None).action is Action.SKIPPED
    assert theirs.read_text() == "their own program"
    assert not command_link.remove_link(CommandLink(str(theirs), str(script)))
    assert theirs.read_text() == "their own program"


def test_our_old_link_follows_a_moved_venv(tmp_path: Path) -> None:
    old, folder = _script(tmp_path / "old"), tmp_path / "bin"
    first = command_link.make_link(old, folder, None)
    new = _script(tmp_path / "new")
    moved = command_link.make_link(new, folder, CommandLink(str(first.link), str(old)))
    assert moved.action is Action.UPDATED and first.link.resolve() == new


def test_on_path_and_the_line_to_add(tmp_path: Path) -> None:
    folder = tmp_path / ".local" / "bin"
    assert command_link.on_path(folder, f"/usr/bin{os.pathsep}{folder}/")
    assert not command_link.on_path(folder, "/usr/bin")
    assert command_link.path_hint(folder, tmp_path) == 'export PATH="$HOME/.local/bin:$PATH"'
    assert command_link.bin_dir(locations(System.WINDOWS, {}, tmp_path)) is None
    assert command_link.bin_dir(locations(System.LINUX, {}, tmp_path)) == folder
