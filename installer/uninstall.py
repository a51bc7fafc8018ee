"""`uninstall`: removes what the manifest says install added, and nothing else.

Never touched: models (ours or anyone's), a settings file the user edited, a kritarc
value the user changed after install, a venv that install did not create.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from installer import kritarc, manifest, server_env, server_run, settings_file
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


def _restore_kritarc(entry: manifest.KritarcKey, report: Report) -> None:
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
        _restore_kritarc(entry, report)
    if record.settings:
        _remove_settings(record.settings, report)
    if record.venv:
        _remove_venv(Path(record.venv), report)
    for leftover in (where.data_dir / "cache", files.log, files.pid):
        _remove_path(leftover, report)
    where.manifest.unlink(missing_ok=True)
    if record.models_dir:
        report.add(Action.KEPT, f"models in {record.models_dir} (never removed)")
    with contextlib.suppress(OSError):
        where.data_dir.rmdir()  # only if nothing else (such as models) is left in it
    report.say("Uninstalled.")
    return report
