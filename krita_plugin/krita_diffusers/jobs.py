"""The life of one job as the plugin sees it, driven by protocol events.

Events can arrive out of step with the REST answers (a `queued` event before the
`POST` returns) or not at all (the event stream dropped); the state machine accepts
either source: `apply_event` for the stream, `apply_status` for `GET /v1/jobs/{id}`.
Terminal states never go back, so a late or repeated frame cannot revive a job.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from .geometry import Rect
from .protocol import Event, EventType, Task, error_text
from .recipes import Recipe
from .upscaling import Destination


class JobStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELLED})


@dataclass(frozen=True)
class ResultRef:
    index: int
    seed: int
    url: str


@dataclass(frozen=True)
class JobContext:
    """What the plugin needs to place a job's results: where they go and how to name
    them. Kept with the job because the canvas may change while it runs."""

    task: Task
    prompt: str
    region: Rect
    document_id: str = ""
    name: str | None = None  # the result's layer name, when not the prompt's
    destination: Destination | None = None  # an upscale's: a new document or a layer
    recipe: Recipe | None = None  # what the artist chose (its seed set per result)


@dataclass
class Job:
    job_id: str
    context: JobContext
    status: JobStatus = JobStatus.QUEUED
    position: int = 0
    step: int = 0
    total: int = 0
    results: dict[int, ResultRef] = field(default_factory=dict)
    error: str | None = None
    previews: int = 0
    loading_model: str | None = None
    fetched: set[int] = field(default_factory=set)  # indexes of results in the history
    download_error: str | None = None  # why the last download of a result failed

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def missing(self) -> list[ResultRef]:
        """Results announced by the server but not (yet) in the history."""
        return [ref for index, ref in sorted(self.results.items()) if index not in self.fetched]

    def result_fetched(self, index: int) -> None:
        self.fetched.add(index)
        if not self.missing:
            self.download_error = None

    def apply_event(self, event: Event) -> bool:
        """Update from one stream event; True when anything changed."""
        if event.job_id != self.job_id:
            return False
        if event.type is EventType.RESULT:
            return self._add_result(event.index, event.seed, event.url)
        if self.done:
            return False
        if event.type is EventType.QUEUED:
            self.position = event.position or 0
        elif event.type is EventType.STARTED:
            self.status = JobStatus.RUNNING
            self.loading_model = event.loading_model
        elif event.type is EventType.PROGRESS:
            self.status = JobStatus.RUNNING
            self.loading_model = None
            self.step = event.step if event.step is not None else self.step
            self.total = event.total if event.total is not None else self.total
        elif event.type is EventType.PREVIEW:
            self.status = JobStatus.RUNNING
            self.previews += 1
            if event.step is not None:
                self.step = max(self.step, event.step)
        elif event.type is EventType.FINISHED:
            for index, seed, url in event.images:
                self._add_result(index, seed, url)
            self.status = JobStatus.FINISHED
        elif event.type is EventType.FAILED:
            self.status = JobStatus.FAILED
            self.error = event.error or "The job failed on the server."
        elif event.type is EventType.CANCELLED:
            self.status = JobStatus.CANCELLED
        return True

    def apply_status(self, data: dict[str, Any]) -> bool:
        """Update from the job's record: `GET /v1/jobs/{id}`, or the `state` a resuming
        connection sends. The record is the server's word at that moment, so it wins
        over what the plugin last heard: a job the server restarted is queued again
        (or at its first steps) even if the plugin saw it at step 37. True when
        anything changed."""
        before = self._snapshot()
        for item in data.get("images") or []:
            if isinstance(item, dict):
                self._add_result(item.get("index"), item.get("seed"), item.get("url"))
        try:
            status = JobStatus(data.get("status"))
        except ValueError:
            status = self.status
        if not self.done:
            self.status = status
            self.position = _count(data.get("position"), 0)
            self.step = _count(data.get("step"), self.step)
            self.total = _count(data.get("total"), self.total)
            loading = data.get("loading_model")
            self.loading_model = loading if isinstance(loading, str) else None
            if status is JobStatus.FAILED:
                self.error = error_text(data.get("error")) or "The job failed on the server."
        return before != self._snapshot()

    def _snapshot(self) -> tuple[object, ...]:
        return (
            self.status,
            self.position,
            self.step,
            self.total,
            len(self.results),
            self.error,
            self.loading_model,
        )

    def _add_result(self, index: object, seed: object, url: object) -> bool:
        if not isinstance(index, int) or not isinstance(url, str) or index in self.results:
            return False
        self.results[index] = ResultRef(index, seed if isinstance(seed, int) else -1, url)
        return True

    def describe(self) -> str:
        """A short line for the progress bar."""
        if self.status is JobStatus.QUEUED:
            return f"Queued (position {self.position})" if self.position else "Queued"
        if self.status is JobStatus.RUNNING and self.loading_model:
            return f"Loading {self.loading_model}"
        if self.status is JobStatus.RUNNING:
            return f"Step {self.step}/{self.total}" if self.total else "Starting"
        if self.status is JobStatus.FINISHED:
            # Done only once the pixels are here: a result the server made but the
            # plugin could not download is not a result the artist has.
            if self.download_error:
                return "Download failed: press Retry"
            if self.missing:
                return "Downloading results…"
            count = len(self.fetched)
            return f"Done: {count} result{'s' if count != 1 else ''}"
        if self.status is JobStatus.CANCELLED:
            return "Cancelled"
        return "Failed"


def _count(value: object, default: int) -> int:
    """A whole number from a record (a step, a position), else `default`."""
    if isinstance(value, bool) or not isinstance(value, int):
        return default
    return value


class PendingEvents:
    """Events for jobs whose `POST` has not answered yet, replayed once it does.

    The server may announce `queued` (even `finished` for a fast job) before the
    plugin learns the job's id. Bounded, so a stream full of other clients' ids
    cannot grow it forever.
    """

    def __init__(self, limit: int = 500) -> None:
        self.limit = limit
        self._events: list[Event] = []

    def add(self, event: Event) -> None:
        self._events.append(event)
        if len(self._events) > self.limit:
            del self._events[: len(self._events) - self.limit]

    def take(self, job_id: str) -> list[Event]:
        mine = [event for event in self._events if event.job_id == job_id]
        self._events = [event for event in self._events if event.job_id != job_id]
        return mine
