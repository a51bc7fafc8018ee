"""What the end-to-end tests share: the scenario list, the tiny generation settings,
the CI rule for a missing Krita, and small helpers to read a scenario's log section.

A module with its own name (not conftest) so test files can import it under pytest's
importlib import mode, by package path (`e2e.krita_e2e`: pytest.ini puts tests/ on
the import path).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from e2e import harness

SCENARIOS = [
    "server_down",
    "txt2img",
    "inpaint_rect",
    "inpaint_edge",
    "inpaint_nonsquare",
    "inpaint_soft",
    "batch",
    "cancel",
    "undo",
    "layout",
    "control",
    "live",
    "expand",
    "expand_left",
    "upscale",
    "history_save",  # its .kra is reopened by a second Krita in test_krita_restart.py
    "two_windows",
]
# Kept tiny so the suite runs on two CPU cores: the server scales inpaint regions to
# the model's own size, and these make everything else cheap.
GENERATION = {
    "steps": 4,
    "preview_every": 1,
    "working_resolution": 128,
    "mask_grow": 8,
    "mask_feather": 8,
    "context_margin": 64,
}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_krita() -> None:
    """Skips (or, in CI, fails) when the programs the suite needs are not installed."""
    missing = harness.missing_tools()
    if not missing:
        return
    reason = (
        f"Krita end-to-end tests need {', '.join(missing)}, not installed here; "
        "run tests/e2e/install_deps.sh"
    )
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing Krita is a failure, not a skip)")
    pytest.skip(reason)


def write_stall_summary(run: harness.KritaRun) -> None:
    """tests-artifacts/e2e/stall.json: the GUI heartbeat of every scenario, in one place."""
    summary = {
        section["name"]: section["data"].get("heartbeat")
        for section in run.log.get("scenarios", [])
        if section["data"].get("heartbeat")
    }
    (run.artifacts / "stall.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")


def passed(run: harness.KritaRun, name: str) -> dict[str, Any]:
    """The scenario's section, after asserting it ran to the end without an error."""
    section = run.scenario(name)
    if section["status"] != "passed":
        pytest.fail(
            f"scenario {name} {section['status']}: {section['error']}\n"
            f"{section['traceback']}\nsteps:\n" + "\n".join(section["steps"]) + "\n"
            f"data: {json.dumps(section['data'], default=str)[:4000]}",
            pytrace=False,
        )
    return dict(section["data"])


def artifact(run: harness.KritaRun, name: str) -> Path:
    path = run.artifacts / name
    assert path.is_file(), f"{name} was not exported (artifacts: {run.artifacts})"
    return path
