"""What A1111's global `shared.state` was, for the requests of this API only.

A1111 serves one user and keeps one global state: the current job, its step, the
latest preview, and the skip/interrupt flags. Our server is shared, so the same
questions are answered about the `/sdapi/v1` requests being served: `progress`,
`interrupt` and `skip` see and touch those, never a Krita artist's v1 job.

One `SdapiState` lives on the app (created on first use). Its methods are called
from the event loop and from worker threads, so everything goes through one lock.
"""

from __future__ import annotations

import base64
import io
import itertools
import threading
import time
from dataclasses import dataclass, field

from PIL import Image


@dataclass
class Call:
    """One txt2img/img2img request while it is served (all of its n_iter jobs)."""

    id: int
    kind: str
    job_count: int
    timestamp: str
    started: float  # monotonic
    job_no: int = 0
    job_id: str | None = None
    running: bool = False
    step: int = 0
    total: int = 0
    preview: str | None = None  # base64 JPEG from the queue's preview events
    preview_png: str | None = None  # the same, converted on demand
    skipped: bool = False
    interrupted: bool = False


@dataclass(frozen=True)
class Snapshot:
    """A consistent copy of the current call, for `progress`."""

    call: Call | None
    pending: int  # calls waiting or running


@dataclass
class SdapiState:
    current_model: str | None = None  # None: the library's default checkpoint
    _calls: list[Call] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def open(self, kind: str, job_count: int) -> Call:
        with self._lock:
            call = Call(
                id=next(self._ids),
                kind=kind,
                job_count=job_count,
                timestamp=time.strftime("%Y%m%d%H%M%S"),
                started=time.monotonic(),
            )
            self._calls.append(call)
            return call

    def close(self, call: Call) -> None:
        with self._lock:
            if call in self._calls:
                self._calls.remove(call)

    def update(self, call: Call, **changes: object) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(call, name, value)
            if "preview" in changes:
                call.preview_png = None

    def _current(self) -> Call | None:
        """The running call, else the one that has waited longest (lock held)."""
        running = [c for c in self._calls if c.running]
        if running:
            return running[0]
        return self._calls[0] if self._calls else None

    def snapshot(self) -> Snapshot:
        with self._lock:
            current = self._current()
            copy = None if current is None else Call(**vars(current))
            return Snapshot(copy, len(self._calls))

    def flag_current(self, flag: str) -> tuple[Call, str | None] | None:
        """Set `skipped` or `interrupted` on the current call; returns it with the job
        to cancel (None between two iterations)."""
        with self._lock:
            current = self._current()
            if current is None:
                return None
            setattr(current, flag, True)
            return current, current.job_id

    def preview_png(self, call_id: int) -> str | None:
        """The current call's latest preview as base64 PNG (A1111's format), cached."""
        with self._lock:
            call = next((c for c in self._calls if c.id == call_id), None)
            if call is None or call.preview is None:
                return None
            if call.preview_png is None:
                call.preview_png = _jpeg_to_png(call.preview)
            return call.preview_png


def _jpeg_to_png(data: str) -> str:
    with Image.open(io.BytesIO(base64.b64decode(data))) as image:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
