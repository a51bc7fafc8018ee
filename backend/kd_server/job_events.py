"""What a job's life announces, as typed events.

The queue publishes these; it knows nothing about HTTP. The v1 API turns them into
wire messages (`api/v1/wire.py`, which also builds the image URLs) and the A1111
layer reads them directly. `kind` is the wire protocol's `type` value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

#: Why a job was cancelled when no client asked: a newer live job replaced it.
SUPERSEDED: Literal["superseded"] = "superseded"


@dataclass(frozen=True)
class JobError:
    """Why a job failed: a stable code and a sentence the artist can act on."""

    code: str
    message: str


@dataclass(frozen=True)
class ResultRef:
    """One finished image of a job: its place in the batch and its seed."""

    index: int
    seed: int


@dataclass(frozen=True)
class JobEvent:
    kind: ClassVar[str]
    #: whether a slow reader may miss it (the job's state can be read again later)
    droppable: ClassVar[bool] = False
    job_id: str


@dataclass(frozen=True)
class JobQueued(JobEvent):
    kind = "queued"
    position: int  # jobs ahead of this one


@dataclass(frozen=True)
class JobStarted(JobEvent):
    kind = "started"
    loading_model: str | None  # set in a second `started` while a checkpoint loads


@dataclass(frozen=True)
class JobProgress(JobEvent):
    kind = "progress"
    droppable = True
    step: int
    total: int


@dataclass(frozen=True)
class JobPreview(JobEvent):
    kind = "preview"
    droppable = True
    step: int
    image: str  # base64 JPEG


@dataclass(frozen=True)
class JobResult(JobEvent):
    kind = "result"
    result: ResultRef


@dataclass(frozen=True)
class JobWarning(JobEvent):
    """Something went wrong beside the job that its client should know; the job
    itself carries on (e.g. a result that could not be saved to disk)."""

    kind = "warning"
    code: str
    message: str


@dataclass(frozen=True)
class JobFinished(JobEvent):
    kind = "finished"
    results: tuple[ResultRef, ...]


@dataclass(frozen=True)
class JobFailed(JobEvent):
    kind = "failed"
    error: JobError


@dataclass(frozen=True)
class JobCancelled(JobEvent):
    kind = "cancelled"
    #: SUPERSEDED: a newer live job of the same client replaced it; None otherwise
    reason: Literal["superseded"] | None = None


#: The events after which a job sends nothing more.
FINAL_EVENTS: tuple[type[JobEvent], ...] = (JobFinished, JobFailed, JobCancelled)
#: Every event type, for the schema check of the wire protocol.
ALL_EVENTS: tuple[type[JobEvent], ...] = (
    JobQueued,
    JobStarted,
    JobProgress,
    JobPreview,
    JobResult,
    JobWarning,
    JobFinished,
    JobFailed,
    JobCancelled,
)
