"""pip's output behind a compact progress display, with real pip runs on a tiny local
wheel (no network, about a second each). The full server install shows the same
display in test_full_install.py."""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

import pytest

from installer.pip_progress import PipOutput, PipState, Stage, log_tail, run_pip


def _wheel(folder: Path, name: str = "kd_tiny") -> Path:
    """A valid pure-Python wheel of one module, written by hand (nothing to build)."""
    dist = f"{name}-1.0.dist-info"
    files = {
        f"{name}.py": "VALUE = 1\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = "".join(f"{path},,\n" for path in files) + f"{dist}/RECORD,,\n"
    path = folder / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            archive.writestr(member, text)
        archive.writestr(f"{dist}/RECORD", record)
    return path


def _pip(target: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
            "--no-index", "--progress-bar=off", "--target", str(target), *args]  # fmt: skip


def test_without_a_terminal_pip_is_a_few_lines_and_its_output_is_logged(tmp_path: Path) -> None:
    out, log = io.StringIO(), tmp_path / "logs" / "pip.log"
    cmd = _pip(tmp_path / "target", str(_wheel(tmp_path)))
    code = run_pip(cmd, "kd_tiny", log, PipOutput.COMPACT, out, interactive=False)
    assert code == 0
    lines = out.getvalue().splitlines()
    assert 1 <= len(lines) <= 4, lines  # one per stage, not pip's own lines
    assert lines[-1].endswith("kd_tiny: done, 1 package installed"), lines
    assert not any("Successfully installed" in line or "\r" in line for line in lines)
    assert "Successfully installed kd-tiny-1.0" in log.read_text()
    assert (tmp_path / "target" / "kd_tiny.py").is_file()


def test_on_a_terminal_one_line_is_rewritten_in_place(tmp_path: Path) -> None:
    out = io.StringIO()
    cmd = _pip(tmp_path / "target", str(_wheel(tmp_path)))
    assert run_pip(cmd, "kd_tiny", tmp_path / "pip.log", stream=out, interactive=True) == 0
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")  # a single line, redrawn with \r
    assert "\r" in text and text.rstrip().endswith("done, 1 package installed")


def test_a_failing_pip_leaves_its_reason_in_the_log(tmp_path: Path) -> None:
    out, log = io.StringIO(), tmp_path / "pip.log"
    cmd = _pip(tmp_path / "target", "kd-package-that-does-not-exist")
    code = run_pip(cmd, "nothing", log, PipOutput.COMPACT, out, interactive=False)
    assert code != 0
    assert "kd-package-that-does-not-exist" in log_tail(log)
    assert "done" not in out.getvalue()


def test_quiet_shows_nothing(tmp_path: Path) -> None:
    out = io.StringIO()
    cmd = _pip(tmp_path / "target", str(_wheel(tmp_path)))
    assert run_pip(cmd, "kd_tiny", tmp_path / "pip.log", PipOutput.QUIET, out) == 0
    assert out.getvalue() == ""
    assert "Successfully installed" in (tmp_path / "pip.log").read_text()


@pytest.mark.parametrize(
    ("line", "stage", "shown"),
    [
        ("Collecting torch==2.13.0", Stage.COLLECTING, "torch: 1 package found"),
        (
            "  Downloading https://example.org/t/torch-2.13.0-cp312-linux_x86_64.whl#sha256=ab "
            "(180.2 MB)",
            Stage.COLLECTING,
            "torch: downloading torch-2.13.0-cp312-linux_x86_64.whl (180.2 MB)",
        ),
        ("Building wheel for kd (pyproject.toml): started", Stage.BUILDING, "building packages"),
        (
            "Installing collected packages: mpmath, sympy, torch",
            Stage.INSTALLING,
            "installing 3 packages",
        ),
    ],
)
def test_pip_lines_are_read_as_stages(line: str, stage: Stage, shown: str) -> None:
    """pip's line formats for what the local wheel cannot show (downloads, builds)."""
    state = PipState("torch")
    assert state.feed(line) is True
    assert state.stage is stage and state.describe().endswith(shown)
    assert state.feed("some other line pip prints") is False
