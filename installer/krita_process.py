"""Is Krita running? It rewrites kritarc when it quits, which would undo our edit."""

from __future__ import annotations

from pathlib import Path


def krita_running(proc: Path = Path("/proc")) -> bool:
    """Best effort on Linux (reads /proc); False where that cannot be known."""
    if not proc.is_dir():
        return False
    for comm in proc.glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "krita":
                return True
        except OSError:
            continue
    return False
