"""`/sdapi/v1/...`: AUTOMATIC1111's API, served by our engine and our job queue.

The routes only translate: payloads become `Plan`s (translate.py), plans run as
queue jobs (calls.py), and answers take A1111's shapes (schemas.py). Auth is the
server's token, as Bearer or as HTTP Basic password (auth.py). docs/a1111.md lists
what is supported, what is accepted and ignored, and what is refused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from functools import partial
from pathlib import PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request

from kd_server.api.a1111 import catalogue, extras, infotext, metadata
from kd_server.api.a1111.auth import require_sdapi_auth
from kd_server.api.a1111.calls import (
    cancel_job,
    encode_images,
    finish_images,
    info_json,
    run_call,
)
from kd_server.api.a1111.images import decode_image
from kd_server.api.a1111.options import CHECKPOINT_OPTION, all_options, check_option
from kd_server.api.a1111.schemas import (
    ImageResponse,
    Img2ImgRequest,
    LoraItem,
    PngInfoRequest,
    PngInfoResponse,
    ProgressResponse,
    ProgressState,
    SamplerItem,
    SchedulerItem,
    ScriptsList,
    SDModelItem,
    Txt2ImgRequest,
    _A1111Request,
)
from kd_server.api.a1111.state import SdapiState
from kd_server.api.a1111.translate import (
    SAMPLER_ALIASES,
    Plan,
    find_checkpoint,
    model_name_of,
    plan_img2img,
    plan_txt2img,
)
from kd_server.api.errors import ApiError
from kd_server.api.imaging import ImageInputError
from kd_server.api.services import Services, ServicesDep
from kd_server.generation import EngineError
from kd_server.hashes import CHECKPOINT_SHORT
from kd_server.samplers import (
    NEEDS_MODEL_SIGMAS,
    SAMPLERS,
    SCHEDULE_ALIASES,
    SCHEDULE_RHO,
    Schedule,
)

log = logging.getLogger(__name__)

router = APIRouter(prefix="/sdapi/v1", tags=["a1111"], dependencies=[Depends(require_sdapi_auth)])
router.include_router(catalogue.router)  # before the catch-all 404 at the end
router.include_router(extras.router)


def get_state(request: Request) -> SdapiState:
    """The app's one SdapiState (made by `create_app`, beside the services)."""
    return request.app.state.sdapi  # type: ignore[no-any-return]


StateDep = Annotated[SdapiState, Depends(get_state)]


def current_model(services: Services, state: SdapiState) -> str:
    """The checkpoint A1111 calls `sd_model_checkpoint`: the one set through options,
    or the library's default (also when the chosen one has gone after a refresh)."""
    if state.current_model is not None:
        try:
            return services.library.get_checkpoint(state.current_model).name
        except EngineError:
            state.current_model = None
    return services.library.default_checkpoint().name


# ------------------------------------------------------------------- generation


def _prepare(
    services: Services,
    state: SdapiState,
    planner: Callable[..., Plan],
    body: Any,
) -> Plan:
    """Translate and check the request (decoding images is CPU work: worker thread)."""
    plan = planner(body, services.settings, services.library, current_model(services, state))
    services.check(plan.request)
    return plan


async def _generate(
    services: Services, state: SdapiState, planner: Any, body: Any, endpoint: str
) -> ImageResponse:
    services.check_open()
    check_extra_fields(body, endpoint)
    plan = await asyncio.to_thread(_prepare, services, state, planner, body)
    timestamp = time.strftime("%Y%m%d%H%M%S")
    results = await run_call(services, state, plan)
    images = await asyncio.to_thread(finish_images, plan, results)
    facts = metadata.gather(plan, body, services.library)
    images = await asyncio.to_thread(metadata.apply, images, facts)
    if plan.persist_model is not None:
        state.current_model = plan.persist_model
    assert plan.request.model is not None
    info = info_json(plan, images, plan.request.model, timestamp)
    return ImageResponse(
        images=encode_images(plan, images),
        parameters=plan.echo,
        info=metadata.complete_info(info, facts),
    )


#: Field sets already logged at their level; repeats go to debug, so a script sending
#: the same body a thousand times does not flood the log.
_LOGGED_EXTRAS: set[tuple[str, tuple[str, ...]]] = set()


def check_extra_fields(body: _A1111Request, endpoint: str) -> None:
    """422 for fields whose loss would change the picture unseen; log the ignored ones."""
    extra = body.extra_fields
    if extra.refused:
        name, why = extra.refused[0]
        raise ApiError(
            422,
            "unsupported_field",
            f"{name}: {why}; ignoring it would change the picture without telling, so "
            "leave it out (docs/a1111.md lists what is ignored and what is refused).",
        )
    _log_ignored(endpoint, "belong to the other endpoint", extra.other_endpoint, logging.INFO)
    _log_ignored(endpoint, "are unknown", extra.unknown, logging.WARNING)


def _log_ignored(endpoint: str, why: str, names: tuple[str, ...], level: int) -> None:
    if not names:
        return
    key = (endpoint, names)
    if key in _LOGGED_EXTRAS:
        level = logging.DEBUG
    elif len(_LOGGED_EXTRAS) < 1024:
        _LOGGED_EXTRAS.add(key)
    log.log(level, "/sdapi/v1/%s: ignored fields that %s: %s", endpoint, why, ", ".join(names))


@router.post("/txt2img", response_model=ImageResponse, summary="Text to image (waits for it)")
async def txt2img(body: Txt2ImgRequest, services: ServicesDep, state: StateDep) -> ImageResponse:
    planner = plan_txt2img
    if body.enable_hr:  # hires fix: hr_upscaler names one of these
        planner = partial(plan_txt2img, upscalers=services.upscalers())
    return await _generate(services, state, planner, body, "txt2img")


@router.post(
    "/img2img", response_model=ImageResponse, summary="Image to image, inpainting with `mask`"
)
async def img2img(body: Img2ImgRequest, services: ServicesDep, state: StateDep) -> ImageResponse:
    return await _generate(services, state, plan_img2img, body, "img2img")


# ------------------------------------------------------------- progress, control


@router.get("/progress", response_model=ProgressResponse, summary="The running A1111 request")
def progress(
    services: ServicesDep,
    state: StateDep,
    skip_current_image: Annotated[bool, Query()] = False,
) -> ProgressResponse:
    snapshot = state.snapshot()
    call = snapshot.call
    if call is None:
        return ProgressResponse(progress=0.0, eta_relative=0.0, state=ProgressState())
    within = call.step / call.total if call.total else 0.0
    fraction = min(1.0, (call.job_no + within) / max(1, call.job_count))
    elapsed = time.monotonic() - call.started
    eta = elapsed / fraction - elapsed if fraction > 0 else 0.0
    textinfo = None
    if not call.running:
        textinfo = "Waiting for the GPU: other jobs are ahead in the queue."
    return ProgressResponse(
        progress=fraction,
        eta_relative=eta,
        state=ProgressState(
            skipped=call.skipped,
            interrupted=call.interrupted,
            job=call.kind,
            job_count=call.job_count,
            job_timestamp=call.timestamp,
            job_no=call.job_no,
            sampling_step=call.step,
            sampling_steps=call.total,
        ),
        current_image=None if skip_current_image else state.preview_png(call.id),
        textinfo=textinfo,
    )


def _flag(services: Services, state: SdapiState, flag: str) -> dict[str, Any]:
    flagged = state.flag_current(flag)
    if flagged is not None and flagged[1] is not None:
        cancel_job(services, flagged[1])
    return {}


@router.post("/interrupt", summary="Stop the current A1111 request; it returns what is done")
def interrupt(services: ServicesDep, state: StateDep) -> dict[str, Any]:
    return _flag(services, state, "interrupted")


@router.post("/skip", summary="Drop the current iteration; the request goes on with the next")
def skip(services: ServicesDep, state: StateDep) -> dict[str, Any]:
    return _flag(services, state, "skipped")


# ------------------------------------------------------------------ lists, options


@router.get("/sd-models", response_model=list[SDModelItem], summary="Usable checkpoints")
def sd_models(services: ServicesDep) -> list[SDModelItem]:
    """`hash` (10 digits) and `sha256` are null until the file is hashed (in the
    background after a scan) and for models that are no single file."""
    items = []
    for entry in services.library.checkpoints():
        if not entry.usable:
            continue
        sha256 = services.library.hashes.entry_hash(entry).sha256
        items.append(
            SDModelItem(
                title=entry.name,
                model_name=model_name_of(entry.name),
                hash=sha256[:CHECKPOINT_SHORT] if sha256 else None,
                sha256=sha256,
                filename=str(entry.path) if entry.path is not None else entry.name,
            )
        )
    return items


@router.get("/samplers", response_model=list[SamplerItem], summary="Samplers")
def samplers() -> list[SamplerItem]:
    return [
        SamplerItem(name=spec.name, aliases=list(SAMPLER_ALIASES.get(spec.name, ())), options={})
        for spec in SAMPLERS
    ]


@router.get("/schedulers", response_model=list[SchedulerItem], summary="Schedule types")
def schedulers() -> list[SchedulerItem]:
    """A1111 1.10's twelve schedule types; docs/a1111.md says how each one runs."""
    return [
        SchedulerItem(
            name=schedule.key,
            label=schedule.value,
            aliases=list(SCHEDULE_ALIASES.get(schedule, ())) or None,
            default_rho=SCHEDULE_RHO.get(schedule, -1),
            need_inner_model=schedule in NEEDS_MODEL_SIGMAS,
        )
        for schedule in Schedule
    ]


@router.get("/loras", response_model=list[LoraItem], summary="Usable LoRAs")
def loras(services: ServicesDep) -> list[LoraItem]:
    return [
        LoraItem(
            name=entry.name,
            alias=PurePosixPath(entry.name).name,
            path=str(entry.path) if entry.path is not None else entry.name,
        )
        for entry in services.library.loras()
        if entry.usable
    ]


@router.get("/scripts", response_model=ScriptsList, summary="Scripts (none here)")
def scripts() -> ScriptsList:
    return ScriptsList()


@router.get("/options", summary="Settings: the current checkpoint and fixed values")
def get_options(services: ServicesDep, state: StateDep) -> dict[str, Any]:
    model = services.library.get_checkpoint(current_model(services, state))
    return all_options(model.name, services.library.hashes.entry_hash(model).sha256)


@router.post("/options", summary="Set `sd_model_checkpoint` (other options: only as they are)")
def set_options(
    services: ServicesDep, state: StateDep, body: Annotated[dict[str, Any], Body()]
) -> None:
    """All options are checked before any is applied, so a refused one changes nothing."""
    for key, value in body.items():
        check_option("options", key, value)
    if CHECKPOINT_OPTION in body:
        state.current_model = find_checkpoint(services.library, body[CHECKPOINT_OPTION])


@router.post("/refresh-checkpoints", summary="Rescan the model folders")
def refresh_checkpoints(services: ServicesDep) -> None:
    services.library.refresh()


@router.post("/refresh-loras", summary="Rescan the model folders")
def refresh_loras(services: ServicesDep) -> None:
    services.library.refresh()


@router.post("/png-info", response_model=PngInfoResponse, summary="Read an image's parameters")
def png_info(body: PngInfoRequest, services: ServicesDep) -> PngInfoResponse:
    extra = body.extra_fields  # nothing but `image` means anything here
    names = extra.other_endpoint + extra.unknown + tuple(name for name, _ in extra.refused)
    _log_ignored("png-info", "are unknown", tuple(sorted(names)), logging.WARNING)
    try:
        image = decode_image(body.image, "image", services.settings.max_pixels)
    except ImageInputError as exc:
        raise ApiError(422, "invalid_request", f"{exc}.") from exc
    text = image.info.get("parameters")
    text = text if isinstance(text, str) else ""
    items = {
        key: value
        for key, value in image.info.items()
        if isinstance(key, str) and isinstance(value, str) and key != "parameters"
    }
    return PngInfoResponse(info=text, items=items, parameters=infotext.parse(text))


@router.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "DELETE"], include_in_schema=False)
def not_supported(rest: str, request: Request) -> None:
    """404 for endpoints A1111 has and we do not; 405 for a known one with another method."""
    path = f"/sdapi/v1/{rest}"
    methods = sorted(
        method
        for route in router.routes
        if getattr(route, "path", None) == path
        for method in getattr(route, "methods", ())
    )
    if methods:
        raise ApiError(
            405,
            "method_not_allowed",
            f"{request.method} is not allowed on {path}; use {' or '.join(methods)}.",
            headers={"Allow": ", ".join(methods)},
        )
    raise ApiError(
        404,
        "not_supported",
        f"{request.method} {path} is not part of this server's A1111-compatible "
        "API; docs/a1111.md lists what is.",
    )
