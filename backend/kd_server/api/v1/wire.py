"""Typed job events and views -> the v1 wire messages, and the URLs of results.

The queue speaks `kd_server.job_events`; this module is the only place that knows
how protocol v1 spells them (docs/protocol.md) and where results are served. Each
message is built through its published pydantic model, so what is sent is what
`/openapi.json` describes.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from kd_server.api.v1 import schemas
from kd_server.job_events import (
    JobCancelled,
    JobError,
    JobEvent,
    JobFailed,
    JobFinished,
    JobPreview,
    JobProgress,
    JobQueued,
    JobResult,
    JobStarted,
    JobWarning,
    ResultRef,
)
from kd_server.jobqueue import JobView


def image_url(job_id: str, index: int) -> str:
    return f"/v1/jobs/{job_id}/images/{index}"


def image_info(job_id: str, result: ResultRef) -> schemas.ImageInfo:
    return schemas.ImageInfo(
        index=result.index, seed=result.seed, url=image_url(job_id, result.index)
    )


def error_info(error: JobError) -> schemas.ErrorInfo:
    return schemas.ErrorInfo(code=error.code, message=error.message)


def event_model(event: JobEvent) -> BaseModel:
    """The published model of one event."""
    job_id = event.job_id
    if isinstance(event, JobQueued):
        return schemas.QueuedEvent(job_id=job_id, position=event.position)
    if isinstance(event, JobStarted):
        return schemas.StartedEvent(job_id=job_id, loading_model=event.loading_model)
    if isinstance(event, JobProgress):
        return schemas.ProgressEvent(job_id=job_id, step=event.step, total=event.total)
    if isinstance(event, JobPreview):
        return schemas.PreviewEvent(job_id=job_id, step=event.step, image=event.image)
    if isinstance(event, JobResult):
        result = event.result
        return schemas.ResultEvent(
            job_id=job_id,
            index=result.index,
            seed=result.seed,
            url=image_url(job_id, result.index),
        )
    if isinstance(event, JobWarning):
        return schemas.WarningEvent(job_id=job_id, code=event.code, message=event.message)
    if isinstance(event, JobFinished):
        images = [image_info(job_id, result) for result in event.results]
        return schemas.FinishedEvent(job_id=job_id, images=images)
    if isinstance(event, JobFailed):
        return schemas.FailedEvent(job_id=job_id, error=error_info(event.error))
    if isinstance(event, JobCancelled):
        return schemas.CancelledEvent(job_id=job_id, reason=event.reason)
    raise TypeError(f"no wire form for {type(event).__name__}")


def event_message(event: JobEvent) -> dict[str, Any]:
    """The JSON object sent on `WS /v1/events` for one event."""
    return event_model(event).model_dump(mode="json")


def state_message(view: JobView) -> dict[str, Any]:
    """The `state` event a resuming connection receives for one of its jobs."""
    fields = job_state(view).model_dump()
    return schemas.StateEvent(**fields).model_dump(mode="json")


def job_state(view: JobView) -> schemas.JobState:
    return schemas.JobState(
        job_id=view.job_id,
        status=view.status.value,
        position=view.position,
        step=view.step,
        total=view.total,
        images=[image_info(view.job_id, result) for result in view.images],
        error=error_info(view.error) if view.error is not None else None,
        loading_model=view.loading_model,
    )
