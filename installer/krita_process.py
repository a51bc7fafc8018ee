"""Is this user's Krita running on the kritarc we are about to edit?

Krita rewrites its kritarc when it quits, which would undo our edit. Only a Krita of
the same user reading the same kritarc matters: another user's Krita, or one started
with another profile (another HOME or XDG_CONFIG_HOME, as tests and sandboxes do),
never touches that file, so warning about it would only confuse.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


def _krita_pids(proc: Path, uid: int) -> Iterator[Path]:
    """/proc entries of processes named `krita` that belong to `uid`."""
    for comm in proc.glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "krita" and comm.parent.stat().st_uid == uid:
                yield comm.parent
        except OSError:  # it ended meanwhile
            continue


def _environment(entry: Path) -> dict[str, str] | None:
    try:
        raw = (entry / "environ").read_bytes()
    except OSError:
        return None
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {os.fsdecode(key): os.fsdecode(value) for key, _, value in pairs}


def kritarc_of(env: dict[str, str]) -> Path | None:
    """The kritarc a Krita started with `env` reads on Linux (XDG rules, as KConfig)."""
    if config := env.get("XDG_CONFIG_HOME"):
        return Path(config) / "kritarc"
    if home := env.get("HOME"):
        return Path(home) / ".config" / "kritarc"
    return None


def _same_file(a: Path, b: Path) -> bool:
    return os.path.normpath(a.absolute()) == os.path.normpath(b.absolute())


def krita_running(kritarc: Path, proc: Path = Path("/proc"), uid: int | None = None) -> bool:
    """True when a Krita of user `uid` (default: this one) runs with `kritarc`.

    Best effort on Linux (reads /proc); False where that cannot be known. A Krita of
    ours whose environment cannot be read counts as running (the safe guess).
    """
    if not proc.is_dir():
        return False
    uid = os.getuid() if uid is None else uid
    for entry in _krita_pids(proc, uid):
        env = _environment(entry)
        if env is None:
            return True
        theirs = kritarc_of(env)
        if theirs is None or _same_file(theirs, kritarc):
            return True
    return False
