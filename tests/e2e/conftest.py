"""One real Krita launch for the whole end-to-end suite, shared by every test.

Krita costs seconds to start, so a single launch runs every scenario in order (each
writes its own section of the log) and the tests only read that log and the PNGs it
points to. The first scenario runs with no server; it asks the harness to start one.

Without Krita (or Xvfb) the tests skip with the reason, except in CI (CI=true), where
a missing Krita is a broken CI image and fails.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from e2e import harness
from e2e.krita_e2e import GENERATION, SCENARIOS, require_krita, write_stall_summary


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "krita: end-to-end test in real Krita under Xvfb")


@pytest.fixture(scope="session")
def krita_run() -> Iterator[harness.KritaRun]:
    """Launches Krita once (lazily: only when a test asks) and hands every test the log."""
    require_krita()
    run = harness.run_krita(
        SCENARIOS, server="late", generation=GENERATION, timeout_s=900, control_models=True
    )
    write_stall_summary(run)
    yield run
    shutil.rmtree(run.work, ignore_errors=True)
