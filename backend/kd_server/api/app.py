"""The FastAPI application: routers, error handlers, limits, auth, docs, lifespan.

`create_app(settings)` builds the real engine and model library; tests and the CLI
may pass their own. The app owns one `Services` (queue, event hub) whose worker
threads start with the app and stop, cancelling jobs, when it shuts down. Several
devices in `settings.device` make one worker (and engine) per device; the first
engine also checks requests. With `settings.ray_address` the jobs run on a Ray Serve
deployment (`kd_server.executors.ray_serve`) and a CPU engine here only checks them.
An executor or workers passed in (`kd_server.executors`) run the jobs instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel

from kd_server import __version__
from kd_server.api import a1111
from kd_server.api.a1111 import controlnet_routes
from kd_server.api.a1111.state import SdapiState
from kd_server.api.auth import require_token
from kd_server.api.errors import install_error_handlers
from kd_server.api.limits import BodySizeLimit
from kd_server.api.services import EngineLike, Services
from kd_server.api.v1 import control, events, jobs, system
from kd_server.api.v1.schemas import EVENT_MODELS, ErrorResponse
from kd_server.config import ConfigError, Settings
from kd_server.executors import Executor, FixedWorkers
from kd_server.jobqueue import Worker

DESCRIPTION = """\
Stable Diffusion for Krita. Submit a job with `POST /v1/jobs`, follow it on
`WS /v1/events?client_id=...` (JSON events, one per frame; their schemas are the
`*Event` models below), and fetch results from `GET /v1/jobs/{id}` and its image URLs.
Every error is `{"error": {"code", "message"}}`. When the server has a token, every
request (WebSocket included) needs `Authorization: Bearer <token>`.
See docs/protocol.md for a walk-through.
"""


def create_app(
    settings: Settings,
    engine: EngineLike | None = None,
    library: Any | None = None,
    workers: Sequence[Worker] | None = None,
    executor: Executor | None = None,
) -> FastAPI:
    """Build the app. Without `engine`, the real engines are made from `settings`
    (one per device, or a Ray deployment); `workers` or an `executor`, when given,
    run the jobs and `engine` checks them."""
    if library is None:
        from kd_server.library import ModelLibrary

        library = ModelLibrary(settings.model_dirs, default_model=settings.default_model)
    if engine is None:
        engine, made = _engines(settings, library)
        executor = executor or made
    if executor is None and workers:
        executor = FixedWorkers(tuple(workers))
    jobs_run_on = list(executor.workers()) if executor is not None else None
    services = Services.build(settings, engine, library, jobs_run_on)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if executor is not None:
            executor.start(services.queue.wake)
        services.start()
        try:
            yield
        finally:
            await services.shutdown()
            if executor is not None:
                executor.close()

    app = FastAPI(
        title="Krita Diffusers server",
        version=__version__,
        description=DESCRIPTION,
        openapi_url=None,  # served below, behind the token like everything else
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.services = services
    app.state.executor = executor  # None: the checking engine runs the jobs itself
    app.state.sdapi = SdapiState()  # what A1111 kept globally, for /sdapi/v1 calls only
    install_error_handlers(app)

    secured = [Depends(require_token)]
    app.include_router(system.router, prefix="/v1", dependencies=secured)
    app.include_router(jobs.router, prefix="/v1", dependencies=secured)
    app.include_router(control.router, prefix="/v1", dependencies=secured)
    app.include_router(events.router, prefix="/v1")  # checks the token itself
    app.include_router(a1111.router)  # /sdapi/v1 (A1111): token as Bearer or Basic password
    app.include_router(controlnet_routes.router)  # /controlnet (the A1111 extension's)
    app.include_router(_docs_router(app), dependencies=secured)

    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app


def _engines(settings: Settings, library: Any) -> tuple[EngineLike, Executor | None]:
    """The checking engine, and the executor when jobs run elsewhere than on it: one
    worker per device when there are several, or the Ray deployment."""
    from kd_server.engine import Engine
    from kd_server.executors.local import device_list, worker_names
    from kd_server.executors.processes import ProcessWorker
    from kd_server.executors.stream import ReplicaConfig
    from kd_server.memory_modes import UnknownMemoryMode
    from kd_server.speed import SpeedOptions

    if settings.ray_address:
        return _ray(settings, library)
    try:
        devices = device_list(settings.device)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if len(devices) == 1:
        try:
            engine = Engine(
                library,
                device=devices[0],
                cache_size=settings.cache_size,
                speed=SpeedOptions.from_names(settings.speedups),
                memory_mode=settings.memory_mode,
                t5_tokenizer=settings.t5_tokenizer,
            )
        except UnknownMemoryMode as exc:  # a mode this device cannot run
            raise ConfigError(str(exc)) from exc
        return engine, None
    # Several devices: one worker process each (threads would share the GIL); the
    # engine here only checks requests and preprocesses, on the CPU.
    checker = Engine(library, device="cpu", cache_size=1)
    workers = tuple(
        ProcessWorker(name, ReplicaConfig.from_settings(settings, device), checker.check_model)
        for name, device in zip(worker_names(devices), devices, strict=True)
    )
    return checker, FixedWorkers(workers)


def _ray(settings: Settings, library: Any) -> tuple[EngineLike, Executor]:
    """A CPU engine that checks requests (it never loads a checkpoint, except for
    preprocessing) and the Ray deployment that runs them."""
    from kd_server.engine import Engine

    try:
        from kd_server.executors.ray_serve import RayExecutor
    except ImportError as exc:
        raise ConfigError(
            "ray_address is set but Ray is not installed: pip install 'krita-diffusers[ray]'."
        ) from exc
    checker = Engine(library, device="cpu", cache_size=1)
    return checker, RayExecutor(settings, checker.check_model)


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with the WebSocket event models and the error model."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        models: tuple[type[BaseModel], ...] = (*EVENT_MODELS, ErrorResponse)
        for model in models:
            definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(definition.pop("$defs", {}))
            components[model.__name__] = definition
        app.openapi_schema = schema
    return app.openapi_schema


def _docs_router(app: FastAPI) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/openapi.json")
    def openapi() -> JSONResponse:
        return JSONResponse(build_openapi(app))

    @router.get("/docs")
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=app.title)

    return router
