"""Figures the hardening tests record for docs/reliability.md (cases tried, faults
survived, load held), merged into tests-artifacts/hardening/figures.json."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

FIGURES = Path(__file__).resolve().parents[2] / "tests-artifacts" / "hardening" / "figures.json"
_lock = threading.Lock()


def record(key: str, value: Any) -> None:
    """Store one figure under `key` (the last run's value wins)."""
    with _lock:
        FIGURES.parent.mkdir(parents=True, exist_ok=True)
        try:
            figures = json.loads(FIGURES.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            figures = {}
        figures[key] = value
        FIGURES.write_text(json.dumps(figures, indent=2, sort_keys=True), encoding="utf-8")
