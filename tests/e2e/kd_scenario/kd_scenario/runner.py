"""Drives scenarios inside Krita without ever blocking its GUI thread.

A scenario is a generator. Each time it needs to wait (for the docker to finish, for a
layer to appear, for a moment to pass) it yields a `Wait`; the runner polls the wait's
condition from a QTimer and resumes the generator when it holds, or throws
`StepTimeout` into it when it does not hold in time. Krita keeps processing events
between polls, exactly as it would with an artist at the keyboard.

Only the standard library and PyQt5 are used here (this runs in Krita's Python).
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PyQt5.QtCore import QObject, Qt, QTimer

POLL_MS = 25


class StepTimeout(Exception):
    """A wait's condition did not hold in time; the message says what was awaited."""


@dataclass
class Wait:
    """What a scenario yields: resume once `condition()` is true, or fail after `timeout_s`."""

    condition: Callable[[], bool]
    timeout_s: float
    what: str


def until(condition: Callable[[], bool], timeout_s: float = 30.0, what: str = "") -> Wait:
    """Waits for a condition; `what` is the sentence the log shows if it never holds."""
    return Wait(condition, timeout_s, what or getattr(condition, "__name__", "a condition"))


def pause(seconds: float) -> Wait:
    """Lets Krita run for a while (events, painting, network replies) before going on."""
    end = time.monotonic() + seconds
    return Wait(lambda: time.monotonic() >= end, seconds + 10.0, f"a pause of {seconds}s")


Scenario = Generator[Wait, None, None]


class Heartbeat(QObject):
    """Measures how long Krita's event loop goes without running a short repeating timer.

    The longest gap between two ticks, minus the nominal interval, is the longest time
    the GUI thread could not react to the artist: the figure the project reports.
    """

    def __init__(self, interval_ms: int = 10) -> None:
        super().__init__()
        self.interval_ms = interval_ms
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)
        self._last = 0.0
        self._started = 0.0
        self.gaps_ms: list[float] = []
        self.ends_s: list[float] = []
        self.skipped = 0

    def start(self) -> None:
        self.gaps_ms = []
        self.ends_s = []
        self.skipped = 0
        self._started = self._last = time.monotonic()
        self._timer.start()

    def stop(self) -> dict[str, float]:
        """Stops measuring and returns the summary the log records."""
        self._timer.stop()
        self._tick()
        return self.summary()

    def summary(self) -> dict[str, float]:
        gaps = sorted(self.gaps_ms)
        longest = gaps[-1] if gaps else 0.0
        worst = self.gaps_ms.index(longest) if gaps else 0
        # When the longest gap ended, in seconds after start(): lines up with the
        # scenario's docker timeline to say what the GUI thread was doing.
        longest_at = round(self.ends_s[worst] - self._started, 2) if gaps else 0.0
        p99 = gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))] if gaps else 0.0
        return {
            "interval_ms": float(self.interval_ms),
            "ticks": float(len(gaps)),
            "duration_s": round(self._last - self._started, 3),
            "longest_gap_ms": round(longest, 1),
            "longest_stall_ms": round(max(0.0, longest - self.interval_ms), 1),
            "p99_gap_ms": round(p99, 1),
            "own_work_excluded": float(self.skipped),
            "longest_gap_ended_at_s": longest_at,
        }

    def skip(self) -> None:
        """Forgets the time since the last tick: called right after the harness's own
        GUI-thread work (a screenshot), which is not the plugin's stall to report."""
        self._last = time.monotonic()
        self.skipped += 1

    def _tick(self) -> None:
        now = time.monotonic()
        self.gaps_ms.append((now - self._last) * 1000.0)
        self.ends_s.append(now)
        self._last = now


@dataclass
class Section:
    """One scenario's part of the log: its outcome plus the facts it recorded."""

    name: str
    status: str = "running"
    error: str | None = None
    traceback: str | None = None
    started: float = field(default_factory=time.time)
    duration_s: float = 0.0
    steps: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "error": self.error,
            "traceback": self.traceback,
            "duration_s": round(self.duration_s, 3),
            "steps": self.steps,
            "data": self.data,
        }


class Runner(QObject):
    """Runs the plan's scenarios one after another, writing the log after each.

    `make_scenario(name, section)` returns the scenario's generator; `on_done` runs once
    every scenario has ended (the caller quits Krita there).
    """

    def __init__(
        self,
        names: list[str],
        make_scenario: Callable[[str, Section], Scenario],
        cleanup: Callable[[Section], Scenario],
        log_path: Path,
        on_done: Callable[[], None],
    ) -> None:
        super().__init__()
        self._names = list(names)
        self._make = make_scenario
        self._cleanup = cleanup
        self._log_path = log_path
        self._on_done = on_done
        self._sections: list[Section] = []
        self._gen: Scenario | None = None
        self._section: Section | None = None
        self._cleaning = False
        self._wait: Wait | None = None
        self._wait_deadline = 0.0
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)
        self.meta: dict[str, Any] = {"pid": os.getpid(), "finished": False}

    def start(self) -> None:
        self._write_log()
        QTimer.singleShot(0, self._next_scenario)

    # -- sequencing ---------------------------------------------------------------

    def _next_scenario(self) -> None:
        if not self._names:
            self.meta["finished"] = True
            self._write_log()
            self._on_done()
            return
        name = self._names.pop(0)
        self._section = Section(name)
        self._sections.append(self._section)
        self._cleaning = False
        self._write_log()
        try:
            self._gen = self._make(name, self._section)
        except Exception as exc:
            self._fail(exc)
            self._begin_cleanup()
            return
        self._resume(None)

    def _begin_cleanup(self) -> None:
        """After a scenario (passed or not) its documents are closed and the docker idled."""
        assert self._section is not None
        self._cleaning = True
        try:
            self._gen = self._cleanup(self._section)
        except Exception as exc:
            self._section.data.setdefault("cleanup_error", repr(exc))
            self._end_scenario()
            return
        self._resume(None)

    def _end_scenario(self) -> None:
        assert self._section is not None
        section = self._section
        section.duration_s = time.time() - section.started
        if section.status == "running":
            section.status = "passed"
        self._gen = None
        self._write_log()
        QTimer.singleShot(0, self._next_scenario)

    # -- driving one generator ------------------------------------------------------

    def _resume(self, error: BaseException | None) -> None:
        assert self._gen is not None and self._section is not None
        try:
            wait = self._gen.send(None) if error is None else self._gen.throw(error)
        except StopIteration:
            self._generator_ended()
            return
        except Exception as exc:
            if self._cleaning:
                self._section.data.setdefault("cleanup_error", f"{exc!r}")
                self._end_scenario()
            else:
                self._fail(exc)
                self._begin_cleanup()
            return
        self._wait = wait
        self._section.steps.append(f"{time.time() - self._section.started:7.2f}s wait: {wait.what}")
        self._wait_deadline = time.monotonic() + wait.timeout_s
        self._timer.start()

    def _generator_ended(self) -> None:
        if self._cleaning:
            self._end_scenario()
        else:
            self._begin_cleanup()

    def _poll(self) -> None:
        wait = self._wait
        if wait is None:
            self._timer.stop()
            return
        try:
            done = bool(wait.condition())
        except Exception as exc:
            self._timer.stop()
            self._wait = None
            self._resume(exc)
            return
        if done:
            self._timer.stop()
            self._wait = None
            self._resume(None)
        elif time.monotonic() > self._wait_deadline:
            self._timer.stop()
            self._wait = None
            self._resume(StepTimeout(f"gave up after {wait.timeout_s:g}s waiting for {wait.what}"))

    def _fail(self, exc: BaseException) -> None:
        assert self._section is not None
        self._section.status = "failed"
        self._section.error = f"{type(exc).__name__}: {exc}"
        self._section.traceback = "".join(traceback.format_exception(exc))

    # -- the log ----------------------------------------------------------------------

    def _write_log(self) -> None:
        """Rewrites the whole log atomically, so the harness never reads half a file."""
        payload = dict(self.meta)
        payload["scenarios"] = [section.as_json() for section in self._sections]
        tmp = self._log_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=1, default=str), encoding="utf-8")
        os.replace(tmp, self._log_path)
