"""Jobs: submit, inspect, cancel, and download results."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from fastapi.responses import JSONResponse

from kd_server.api import policy
from kd_server.api.errors import ApiError
from kd_server.api.services import ServicesDep
from kd_server.api.v1.convert import to_generation_request
from kd_server.api.v1.schemas import ErrorResponse, JobAccepted, JobRequest, JobState
from kd_server.api.v1.wire import job_state
from kd_server.fast_modes import SAMPLING_FIELDS
from kd_server.jobqueue import JobNotActive, JobNotFound, JobStatus

router = APIRouter(prefix="/jobs", tags=["jobs"])

JobId = Annotated[str, Path(description="The `job_id` returned by `POST /v1/jobs`.", max_length=64)]
ImageIndex = Annotated[int, Path(ge=0, le=63, description="The image's `index` in the batch.")]


def _errors(*statuses: int) -> dict[int | str, dict[str, object]]:
    return {status: {"model": ErrorResponse} for status in statuses}


def _not_found(job_id: str) -> ApiError:
    return ApiError(
        404,
        "job_not_found",
        f"There is no job {job_id}: it never existed or its results expired.",
    )


@router.post(
    "",
    status_code=202,
    response_model=JobAccepted,
    summary="Submit a job",
    responses=_errors(401, 404, 413, 422, 429, 503),
)
def submit_job(body: JobRequest, services: ServicesDep) -> JobAccepted:
    """Checks everything that can be checked without running (inputs, model, LoRAs,
    sampler) and queues the job. Runs in a worker thread: decoding images is CPU work."""
    services.check_open()
    if body.live and body.client_id is None:
        raise policy.invalid(
            "live", "needs a client_id: a live job replaces the same client's last one."
        )
    request = to_generation_request(body, services.settings)
    if body.sampling == "auto":
        given = body.model_fields_set & set(SAMPLING_FIELDS)
        request = services.auto_sampling(request, given)
    view = services.submit(request, body.client_id, live=body.live)
    return JobAccepted(job_id=view.job_id, position=view.position or 0)


@router.get(
    "/{job_id}",
    response_model=JobState,
    summary="A job's state and results",
    responses=_errors(401, 404),
)
def get_job(job_id: JobId, services: ServicesDep) -> JobState:
    try:
        return job_state(services.job(job_id))
    except JobNotFound:
        raise _not_found(job_id) from None


@router.delete(
    "/{job_id}",
    response_model=JobState,
    summary="Cancel a queued or running job",
    responses={
        200: {"description": "The job was queued and is now cancelled."},
        202: {
            "description": "The job is running and stops at its next step; a `cancelled` "
            "event follows.",
            "model": JobState,
        },
        **_errors(401, 404, 409),
    },
)
def cancel_job(job_id: JobId, services: ServicesDep) -> JSONResponse:
    try:
        view = services.cancel(job_id)
    except JobNotFound:
        raise _not_found(job_id) from None
    except JobNotActive as exc:
        raise ApiError(
            409,
            "job_not_active",
            f"Job {job_id} has already ended ({exc.status.value}); only queued or running "
            "jobs can be cancelled.",
        ) from None
    status = 200 if view.status is JobStatus.CANCELLED else 202
    return JSONResponse(job_state(view).model_dump(mode="json"), status_code=status)


@router.get(
    "/{job_id}/images/{index}",
    response_class=Response,
    summary="One result as PNG (with A1111 'parameters' metadata)",
    responses={200: {"content": {"image/png": {}}}, **_errors(401, 404)},
)
def get_image(
    job_id: JobId,
    index: ImageIndex,
    services: ServicesDep,
) -> Response:
    try:
        png = services.image(job_id, index)
    except JobNotFound:
        raise _not_found(job_id) from None
    if png is None:
        raise ApiError(404, "image_not_found", f"Job {job_id} has no image {index} (yet).")
    return Response(
        png,
        media_type="image/png",
        headers={"Content-Disposition": f'inline; filename="{job_id}-{index}.png"'},
    )
