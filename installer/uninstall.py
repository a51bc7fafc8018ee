"""`uninstall`: removes what the manifest says install added, and nothing else.

Never touched: models (ours or anyone's), a settings file the user edited, a kritarc
value the user changed after install, a venv that install did not create, a file or
folder that existed before the install. Folders and settings files the install had
to create go too once they are empty again, so a fresh machine is left as it was.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from installer import command_link, kritarc, manifest, server_env, server_run, settings_file
from installer.pip_progress import PIP_LOG
from installer.platforms import Locations
from installer.report import Action, Report


def _remove_path(path: Path, report: Report) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    else:
        return
    report.add(Action.REMOVED, str(path))


def restore_kritarc_key(entry: manifest.KritarcKey, report: Report) -> None:
    """Put one kritarc key back as it was before the install, unless the user changed it."""
    path = Path(entry.path)
    name = f"[{entry.section}] {entry.key}"
    if kritarc.read_value(path, entry.section, entry.key) != entry.value:
        report.add(Action.KEPT, f"{path}: {name} was changed since; left alone")
        return
    if entry.previous == entry.value:
        return
    kritarc.set_value(path, entry.section, entry.key, entry.previous)
    what = "removed" if entry.previous is None else "set back to its earlier value"
    report.add(Action.UPDATED, f"{path}: {name} {what}")


def _remove_settings(entry: manifest.SettingsEntry, report: Report) -> None:
    path = Path(entry.path)
    if not path.is_file():
        return
    if settings_file.sha256(path.read_text(encoding="utf-8")) != entry.sha256:
        report.add(Action.KEPT, f"{path} (you edited it)")
        return
    _remove_path(path, report)


def _remove_created_files(record: manifest.Manifest, report: Report) -> None:
    """A settings file (kritarc) the install created, now empty again: nobody else wrote
    to it (a Krita that ran meanwhile fills it, and then it stays)."""
    for text in record.created_files:
        path = Path(text)
        if path.is_file() and not path.read_bytes().strip():
            _remove_path(path, report)


def _remove_created_dirs(record: manifest.Manifest, report: Report) -> None:
    """Folders the install created, deepest first, each only if it is empty now."""
    removed = []
    for text in sorted(record.created_dirs, key=lambda t: len(Path(t).parts), reverse=True):
        with contextlib.suppress(OSError):  # not empty (models, the user's files) or gone
            Path(text).rmdir()
            removed.append(text)
    if removed:
        report.add(Action.REMOVED, f"empty folders it had created: {', '.join(removed)}")


def _remove_venv(venv: Path, report: Report) -> None:
    if (venv / server_env.STAMP).is_file():
        _remove_path(venv, report)
    elif venv.exists():
        report.add(Action.KEPT, f"{venv} (not made by this installer)")


def run(where: Locations, report: Report) -> Report:
    record = manifest.load(where.manifest)
    if record is None:
        report.say(f"Nothing to uninstall: no install record at {where.manifest}.")
        return report
    report.say("Uninstalling Krita Diffusers")
    files = server_run.ServerFiles(where.data_dir)
    if server_run.stop(files):
        report.add(Action.REMOVED, "the running server (stopped)")
    for text in record.paths:
        _remove_path(Path(text), report)
    for entry in reversed(record.kritarc_keys):
        restore_kritarc_key(entry, report)
    _remove_created_files(record, report)
    if record.command_link and command_link.remove_link(record.command_link):
        report.add(Action.REMOVED, record.command_link.path)
    if record.settings:
        _remove_settings(record.settings, report)
    if record.venv:
        _remove_venv(Path(record.venv), report)
    for leftover in (where.data_dir / "cache", files.log, files.pid, where.data_dir / PIP_LOG):
        _remove_path(leftover, report)
    where.manifest.unlink(missing_ok=True)
    _remove_created_dirs(record, report)
    if record.models_dir and Path(record.models_dir).exists():
        report.add(Action.KEPT, f"models in {record.models_dir} (never removed)")
    with contextlib.suppress(OSError):
        where.data_dir.rmdir()  # only if nothing else (such as models) is left in it
    report.say("Uninstalled.")
    return report
