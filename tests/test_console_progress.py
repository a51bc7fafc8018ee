"""What `krita-diffusers-server generate` prints while it works, through the real
command: one line per step into a pipe, a bar redrawn in place on a terminal (a real
pseudo-terminal), and no torchvision notes from transformers in either."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from kd_server.console_progress import StepProgress, bar

GENERATE = [sys.executable, "-m", "kd_server.cli", "generate", "a lighthouse at dusk",
            "--steps", "3", "--seed", "4", "--model", "tiny-sd15-embedded"]  # fmt: skip


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KD_CONFIG": str(tmp_path / "none.toml")}
    env.pop("KD_MODEL_DIRS", None)
    return env


def test_without_a_terminal_each_step_is_a_line_and_no_torchvision_note(tmp_path: Path) -> None:
    out = tmp_path / "a.png"
    done = subprocess.run(
        [*GENERATE, "-o", str(out)], cwd=tmp_path, env=_env(tmp_path),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "step 1/3\nstep 2/3\nstep 3/3\n" in done.stderr
    assert "\r" not in done.stderr
    assert "torchvision" not in done.stderr and "transformers" not in done.stderr
    assert out.is_file()


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the other end closed (EIO on Linux)
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_on_a_terminal_the_steps_are_one_bar(tmp_path: Path) -> None:
    out = tmp_path / "b.png"
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [*GENERATE, "-o", str(out)], cwd=tmp_path, env=_env(tmp_path),
            stdout=subprocess.DEVNULL, stderr=terminal, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(terminal)
        text = _read_all(controller).decode("utf-8", "replace")
        assert process.wait(timeout=300) == 0, text
    finally:
        os.close(controller)
    assert f"\r{bar(1, 3)}\r{bar(2, 3)}\r{bar(3, 3)}" in text.replace("\r\n", "\n")
    assert "step 1/3\n" not in text.replace("\r\n", "\n")
    assert "torchvision" not in text


def test_the_bar_and_the_line_that_follows_it() -> None:
    assert bar(7, 20, width=10) == "step  7/20 [####------]  35%"
    assert bar(20, 20, width=4) == "step 20/20 [####] 100%"
    stream = io.StringIO()
    progress = StepProgress(stream, interactive=True)
    progress(SimpleNamespace(step=1, total=2))
    progress(SimpleNamespace(step=2, total=2))
    progress.finish()
    progress.finish()  # a second finish adds nothing
    assert stream.getvalue() == f"\r{bar(1, 2)}\r{bar(2, 2)}\n"
