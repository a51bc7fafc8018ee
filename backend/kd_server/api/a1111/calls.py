"""Serving one A1111 txt2img/img2img call on the shared job queue.

A1111 answers these requests synchronously. Here each of the call's `n_iter`
iterations is one job on the same queue as v1 jobs (so artists and scripts take
turns), and the route awaits its events without blocking the event loop: it
subscribes to the queue's event hub under a client id that no v1 client can use,
follows progress and previews into `SdapiState` (for `progress`), and reads the PNGs
once the job has finished. `skip` cancels the running iteration and the call goes on
with the next; `interrupt` cancels it and ends the call with what is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from dataclasses import dataclass
from typing import Any

from PIL import Image

from kd_server import __version__
from kd_server.api import policy
from kd_server.api.a1111 import infotext
from kd_server.api.a1111.images import paste_back, to_png_base64
from kd_server.api.a1111.state import Call, SdapiState
from kd_server.api.a1111.translate import Hires, Plan
from kd_server.api.a1111.upscaling import centre_box
from kd_server.api.errors import ENGINE_STATUS, ApiError
from kd_server.api.services import Services
from kd_server.events import Subscription
from kd_server.generation import EngineErrorCode, GenerationRequest
from kd_server.job_events import FINAL_EVENTS, JobPreview, JobProgress, JobStarted
from kd_server.jobqueue import (
    JobNotActive,
    JobNotFound,
    JobStatus,
    JobView,
)
from kd_server.pngmeta import encode_png, read_parameters, replace_parameters

log = logging.getLogger(__name__)

#: The queue's client id of every /sdapi job. It does not match v1's client_id pattern,
#: so no v1 client can subscribe to these events, and all A1111 callers together take
#: one turn in the fair queue next to each artist.
SDAPI_CLIENT = "sdapi/v1"


@dataclass(frozen=True)
class Result:
    seed: int
    png: bytes


async def run_call(services: Services, state: SdapiState, plan: Plan) -> list[Result]:
    """Run every iteration of `plan`; returns the finished images in order."""
    call = state.open(plan.kind, plan.n_iter)
    results: list[Result] = []
    try:
        with services.hub.subscribe(SDAPI_CLIENT) as subscription:
            for iteration in range(plan.n_iter):
                if call.interrupted:
                    break
                state.update(call, job_no=iteration, step=0, total=0, skipped=False)
                view = await _run_job(
                    services, state, call, subscription, plan.request_for(iteration)
                )
                if view.status is JobStatus.FINISHED:
                    results.extend(_collect(services, view))
                elif view.status is JobStatus.FAILED:
                    raise _job_failed(view)
                elif services.closing:
                    raise policy.shutting_down()
                elif not call.skipped:  # cancelled, and not by `skip`: stop here
                    break
    finally:
        state.close(call)
    return results


async def _run_job(
    services: Services,
    state: SdapiState,
    call: Call,
    subscription: Subscription,
    request: GenerationRequest,
) -> JobView:
    job_id = _submit(services, request)
    state.update(call, job_id=job_id)
    if call.interrupted or call.skipped:  # flagged while it was being submitted
        cancel_job(services, job_id)
    try:
        return await _follow(services, state, call, subscription, job_id)
    finally:
        state.update(call, job_id=None, running=False)


def _submit(services: Services, request: GenerationRequest) -> str:
    # The caller waits on its HTTP request and cannot collect the job after a restart,
    # so it is not journaled: a restarted server does not run it for nobody.
    return services.submit(request, SDAPI_CLIENT, durable=False).job_id


def cancel_job(services: Services, job_id: str) -> None:
    """Cancel a queued or running job; one that already ended is left alone."""
    with contextlib.suppress(JobNotFound, JobNotActive):
        services.cancel(job_id)


async def _follow(
    services: Services,
    state: SdapiState,
    call: Call,
    subscription: Subscription,
    job_id: str,
) -> JobView:
    """Mirror the job's events into the call's state until it ends."""
    while True:
        event = await subscription.get()
        if event is None:  # the hub closed (shutdown): the queue still knows the job
            return await _poll(services, job_id)
        if event.job_id != job_id:
            continue
        if isinstance(event, JobStarted):
            state.update(call, running=True)
        elif isinstance(event, JobProgress):
            state.update(call, running=True, step=event.step, total=event.total)
        elif isinstance(event, JobPreview):
            state.update(call, preview=event.image)
        elif isinstance(event, FINAL_EVENTS):
            return _view(services, job_id)


async def _poll(services: Services, job_id: str) -> JobView:
    while True:
        view = _view(services, job_id)
        if view.status.final:
            return view
        await asyncio.sleep(0.05)


def _view(services: Services, job_id: str) -> JobView:
    try:
        return services.job(job_id)
    except JobNotFound:
        raise ApiError(
            500, "internal_error", "The job's results were dropped before they could be sent."
        ) from None


def _collect(services: Services, view: JobView) -> list[Result]:
    results = []
    for image in view.images:
        png = services.image(view.job_id, image.index)
        if png is not None:
            results.append(Result(image.seed, png))
    return results


def _job_failed(view: JobView) -> ApiError:
    if view.error is None:
        return ApiError(500, "internal_error", "The job failed; the server's log has the details.")
    code, message = view.error.code, view.error.message
    try:
        status = ENGINE_STATUS.get(EngineErrorCode(code), 500)
    except ValueError:
        status = 500
    return ApiError(status, code, message)


# ------------------------------------------------------------------- the answer


def finish_images(plan: Plan, results: list[Result]) -> list[tuple[bytes, str]]:
    """(PNG, infotext) per image: inpainted regions are pasted back into the picture.

    CPU work (decoding and encoding PNGs): call it from a worker thread.
    """
    finished = []
    for result in results:
        text = read_parameters(result.png) or ""
        if plan.hires is not None:
            finished.append(_finish_hires(plan, plan.hires, result.png, text))
            continue
        if plan.paste is None:
            png = result.png
            if plan.extra_params:  # e.g. the ControlNet units
                text = infotext.amend(text, None, plan.extra_params)
                png = replace_parameters(png, text)
            finished.append((png, text))
            continue
        with Image.open(io.BytesIO(result.png)) as patch:
            picture = paste_back(plan.paste.base, plan.paste.box, patch)
        text = infotext.amend(text, picture.size, plan.extra_params)
        finished.append((encode_png(picture, text), text))
    return finished


def _finish_hires(plan: Plan, hires: Hires, png: bytes, text: str) -> tuple[bytes, str]:
    """A hires result as A1111 gives it: cut to hr_resize_x x hr_resize_y when both were
    asked at another aspect; the infotext's Size is the first pass's, as in A1111."""
    text = _hires_infotext(text, hires.first_pass, plan.extra_params)
    if hires.size.final == hires.size.upscale_to:
        return replace_parameters(png, text), text
    with Image.open(io.BytesIO(png)) as image:
        box = centre_box(image.size, hires.size.final)
        return encode_png(image.crop(box), text), text


def _hires_infotext(
    text: str, first_pass: tuple[int, int], extra: tuple[tuple[str, str], ...]
) -> str:
    """The engine's recipe in A1111's words: A1111 writes the first pass's Size, either
    "Hires upscale" (by hr_scale) or "Hires resize", and hr_upscaler as sent; the
    engine records what ran (the target, "Lanczos" for a latent mode)."""
    info = infotext.Infotext.parse(text)
    for key in ENGINE_HIRES_KEYS:
        info.drop(key)
    info.set("Size", f"{first_pass[0]}x{first_pass[1]}")
    for key, value in extra:
        info.set(key, value)
    return info.render()


#: What the engine writes about its hi-res pass; the A1111 layer writes its own.
ENGINE_HIRES_KEYS = ("Hires upscale", "Hires resize", "Hires upscaler", "Hires steps")


def info_json(plan: Plan, images: list[tuple[bytes, str]], model: str, timestamp: str) -> str:
    """A1111's `info`: the JSON text of its Processed object, with the fields we know."""
    request = plan.request
    seeds = plan.all_seeds
    count = len(seeds)
    info: dict[str, Any] = {
        "prompt": plan.prompt,
        "all_prompts": [plan.prompt] * count,
        "negative_prompt": plan.negative_prompt,
        "all_negative_prompts": [plan.negative_prompt] * count,
        "seed": plan.first_seed,
        "all_seeds": seeds,
        "subseed": -1,
        "all_subseeds": [-1] * count,
        "subseed_strength": 0,
        "width": plan.width,
        "height": plan.height,
        "sampler_name": plan.sampler,
        "scheduler": plan.scheduler,
        "cfg_scale": request.sampling.cfg_scale,
        "steps": request.sampling.steps,
        "batch_size": request.sampling.batch_size,
        "n_iter": plan.n_iter,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": model,
        "sd_model_hash": None,
        "sd_vae_name": request.vae,  # a chosen VAE file (override_settings.sd_vae)
        "sd_vae_hash": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": _denoising_strength(plan),
        "extra_generation_params": {key: value for key, value in plan.extra_params},
        "index_of_first_image": 0,
        "infotexts": [text for _, text in images],
        "styles": [],
        "job_timestamp": timestamp,
        "clip_skip": 1,
        "is_using_inpainting_conditioning": False,
        "version": f"krita-diffusers {__version__}",
    }
    return json.dumps(info)


def _denoising_strength(plan: Plan) -> float | None:
    """A1111 reports it for img2img, and for txt2img with hires fix (its second pass)."""
    if plan.hires is not None:
        return plan.hires.strength
    return None if plan.kind == "txt2img" else plan.request.inputs.strength


def encode_images(plan: Plan, images: list[tuple[bytes, str]]) -> list[str]:
    return [to_png_base64(png) for png, _ in images] if plan.send_images else []
