"""The "Krita is running" warning concerns only this user's Krita on the same kritarc.

A real process named `krita` (a copy of `sleep`) is started with a chosen profile; the
installer's check reads it from /proc like any Krita.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from installer.krita_process import krita_running

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc (Linux)")


@pytest.fixture
def fake_krita(tmp_path: Path) -> Iterator[Path]:
    """A process whose name is `krita`, running with XDG_CONFIG_HOME=<tmp>/conf;
    yields the kritarc it would read."""
    sleep = shutil.which("sleep")
    assert sleep is not None
    binary = tmp_path / "bin" / "krita"
    binary.parent.mkdir()
    shutil.copy2(sleep, binary)
    env = {**os.environ, "HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "conf")}
    process = subprocess.Popen([str(binary), "60"], env=env)
    comm = Path(f"/proc/{process.pid}/comm")
    deadline = time.monotonic() + 10
    while comm.read_text().strip() != "krita" and time.monotonic() < deadline:
        time.sleep(0.01)  # between fork and exec it still has our name
    try:
        yield tmp_path / "conf" / "kritarc"
    finally:
        process.kill()
        process.wait()


def test_a_krita_on_the_same_kritarc_counts(fake_krita: Path) -> None:
    assert krita_running(fake_krita)


def test_a_krita_with_another_profile_does_not(fake_krita: Path, tmp_path: Path) -> None:
    assert not krita_running(tmp_path / "other" / "kritarc")


def test_another_users_krita_does_not(fake_krita: Path) -> None:
    assert not krita_running(fake_krita, uid=os.getuid() + 1)


def test_no_krita_no_warning(tmp_path: Path) -> None:
    assert not krita_running(tmp_path / "conf" / "kritarc")
    assert not krita_running(tmp_path / "conf" / "kritarc", proc=tmp_path / "no-proc")
