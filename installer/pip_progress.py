"""Runs pip with a compact progress display of our own; pip's full output goes to a log.

pip prints about 200 lines for the server (every requirement, every download), which
buries the few lines of the installer that matter. By default pip's output is written
to a log file and the terminal shows one line that says what is being installed, how
far it got (packages found, the file being downloaded, how many are being installed)
and for how long. Without a terminal (CI, a log file) it prints one line per stage and
a heartbeat while a long download is silent. `verbose` passes pip's output through as
it is; `quiet` shows nothing but failures.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TextIO

PIP_LOG = "pip.log"  # in the installer's data folder: pip's output of the last install
HEARTBEAT_S = 60.0  # without a terminal: a line at least this often while pip is busy
TICK_S = 1.0  # on a terminal: the clock in the line moves this often


class PipOutput(Enum):
    COMPACT = "compact"
    QUIET = "quiet"
    VERBOSE = "verbose"


class Stage(Enum):
    """pip's stages in order; without a terminal each is announced once."""

    STARTING = 0
    COLLECTING = 1
    BUILDING = 2
    INSTALLING = 3
    DONE = 4


_RULES: tuple[tuple[re.Pattern[str], Stage, str], ...] = tuple(
    (re.compile(pattern), stage, kind)
    for pattern, stage, kind in (
        (r"^\s*Collecting (\S+)", Stage.COLLECTING, "found"),
        (r"^\s*Requirement already satisfied: (\S+)", Stage.COLLECTING, "found"),
        (r"^\s*Processing (\S+)", Stage.COLLECTING, "file"),
        (r"^\s*Downloading (\S+)(?: \((.+)\))?", Stage.COLLECTING, "download"),
        (r"^\s*Using cached (\S+)(?: \((.+)\))?", Stage.COLLECTING, "file"),
        (r"^\s*Building wheels? for (\S+)", Stage.BUILDING, "file"),
        (r"^\s*Installing collected packages: (.*)", Stage.INSTALLING, "install"),
        (r"^\s*Successfully installed (.*)", Stage.DONE, "install"),
    )
)


def _short(name: str) -> str:
    """A file's name from a URL or path, without the URL's #sha256=... fragment."""
    return name.split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def _count(number: int) -> str:
    return f"{number} package{'' if number == 1 else 's'}"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


@dataclass
class PipState:
    """What pip is doing, read from its output one line at a time."""

    what: str  # what the user is told is being installed ("torch==2.13.0 (cpu)")
    stage: Stage = Stage.STARTING
    found: int = 0  # requirements collected so far
    packages: int = 0  # packages being (or that were) installed
    current: str = ""  # the file being downloaded or processed
    started: float = field(default_factory=time.monotonic)

    def feed(self, line: str) -> bool:
        """Take one line of pip's output; True when it moved pip to a later stage."""
        for pattern, stage, kind in _RULES:
            match = pattern.match(line)
            if match is None:
                continue
            if kind == "found":
                self.found += 1
                self.current = ""
            elif kind in ("file", "download"):
                size = match.group(2) if match.lastindex == 2 else None
                verb = "downloading" if kind == "download" else "reading"
                self.current = f"{verb} {_short(match.group(1))}" + (f" ({size})" if size else "")
            elif kind == "install":
                self.packages = len([p for p in match.group(1).split(" ") if p.strip(", ")])
                self.current = ""
            advanced = stage.value > self.stage.value
            self.stage = max(self.stage, stage, key=lambda s: s.value)
            return advanced
        return False

    def describe(self) -> str:
        """One line: how long, what, where pip is."""
        head = f"[{_clock(time.monotonic() - self.started)}] {self.what}:"
        if self.stage is Stage.STARTING:
            return f"{head} starting pip"
        if self.stage is Stage.COLLECTING:
            parts = [f"{_count(self.found)} found"] if self.found else []
            parts += [self.current] if self.current else []
            return f"{head} {', '.join(parts) or 'finding packages'}"
        if self.stage is Stage.BUILDING:
            return f"{head} building packages"
        packages = _count(self.packages)
        if self.stage is Stage.INSTALLING:
            return f"{head} installing {packages}"
        return f"{head} done, {packages} installed"


class _Display:
    """Shows a PipState: one rewritten line on a terminal, else a line per stage."""

    def __init__(self, state: PipState, stream: TextIO, interactive: bool) -> None:
        self.state = state
        self.stream = stream
        self.interactive = interactive
        self.lock = threading.Lock()
        self.last_print = time.monotonic()
        self.width = 0

    def _line(self, text: str) -> None:
        self.stream.write(f"  {text}\n")
        self.stream.flush()
        self.last_print = time.monotonic()

    def _redraw(self) -> None:
        columns = _terminal_columns(self.stream)
        text = ("  " + self.state.describe())[: columns - 1]
        self.stream.write("\r" + text.ljust(self.width)[: columns - 1])
        self.stream.flush()
        self.width = len(text)

    def update(self, advanced: bool) -> None:
        with self.lock:
            if self.interactive:
                self._redraw()
            elif advanced:
                self._line(self.state.describe())

    def tick(self) -> None:
        """The clock moved: redraw, or (no terminal) a heartbeat after a long silence."""
        with self.lock:
            if self.interactive:
                self._redraw()
            elif time.monotonic() - self.last_print >= HEARTBEAT_S:
                self._line(self.state.describe() + " (still working)")

    def finish(self) -> None:
        with self.lock:
            if self.interactive:
                self._redraw()
                self.stream.write("\n")
                self.stream.flush()
            elif self.state.stage is not Stage.DONE:
                self._line(self.state.describe())


def _terminal_columns(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 100


def _ticker(display: _Display, stop: threading.Event) -> None:
    while not stop.wait(TICK_S):
        display.tick()


def _run_logged(cmd: list[str], log: Path, display: _Display | None) -> int:
    """pip's output line by line into `log` (and the display); pip's exit status."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("a", encoding="utf-8", errors="replace") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        process = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, errors="replace", env=env,
        )  # fmt: skip
        assert process.stdout is not None
        for line in process.stdout:
            out.write(line)
            if display is not None:
                display.update(display.state.feed(line))
        return process.wait()


def run_pip(
    cmd: list[str],
    what: str,
    log: Path,
    mode: PipOutput = PipOutput.COMPACT,
    stream: TextIO | None = None,
    interactive: bool | None = None,
) -> int:
    """Run a pip command, showing progress on `stream` the way `mode` says; pip's whole
    output is appended to `log` (except in verbose mode, where it is shown as it is)."""
    stream = sys.stdout if stream is None else stream
    if mode is PipOutput.VERBOSE:
        return subprocess.run(cmd).returncode
    log.parent.mkdir(parents=True, exist_ok=True)
    if mode is PipOutput.QUIET:
        return _run_logged(cmd, log, None)
    if interactive is None:
        interactive = stream.isatty()
    display = _Display(PipState(what), stream, interactive)
    stop = threading.Event()
    ticker = threading.Thread(target=_ticker, args=(display, stop), daemon=True)
    ticker.start()
    try:
        code = _run_logged(cmd, log, display)
    finally:
        stop.set()
        ticker.join()
    display.finish()
    return code


def log_tail(log: Path, lines: int = 15) -> str:
    """The end of the log, for an error message."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])
