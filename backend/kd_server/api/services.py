"""What the routes share: settings, engine, library, queue and event hub.

One `Services` object lives on `app.state.services`; routes of both front doors get
it through the `get_services` dependency and use its methods, never the queue or the
engine behind it, so a test or the CLI can build an app around any engine.
`EngineRunner` is the only place where the queue meets the engine.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Protocol

from fastapi import Depends
from PIL import Image
from starlette.requests import HTTPConnection

from kd_server import fast_modes
from kd_server.api import policy
from kd_server.api.errors import ApiError
from kd_server.api.imaging import preview_jpeg
from kd_server.config import Settings
from kd_server.events import EventHub
from kd_server.generation import (
    ControlMode,
    EngineError,
    EngineErrorCode,
    GeneratedImage,
    GenerationRequest,
    Preview,
    Progress,
)
from kd_server.jobqueue import (
    Durability,
    Hooks,
    JobQueue,
    JobView,
    QueueClosed,
    QueueFull,
    QueueLimits,
    QueueStorageError,
    Worker,
)

if TYPE_CHECKING:
    from kd_server.library import ModelLibrary
    from kd_server.upscale.files import UpscalerFile

log = logging.getLogger(__name__)


class EngineLike(Protocol):
    """The part of `kd_server.engine.Engine` the API uses (see docs/architecture.md)."""

    @property
    def device_name(self) -> str: ...
    @property
    def dtype_name(self) -> str: ...

    def samplers(self) -> list[str]: ...
    def check(self, request: GenerationRequest) -> Any: ...
    def preprocess(
        self,
        image: Image.Image,
        mode: ControlMode,
        low_threshold: int,
        high_threshold: int,
        resolution: int | None,
    ) -> Image.Image: ...
    def generate(
        self,
        request: GenerationRequest,
        on_progress: Any,
        should_cancel: Any,
        on_loading: Any,
        on_preview: Any,
        on_warning: Any = None,
    ) -> list[GeneratedImage]: ...
    def upscale_image(
        self, image: Image.Image, upscaler: str | None, width: int, height: int
    ) -> Image.Image: ...


@dataclass
class PngResult:
    """A generated image whose PNG is encoded later, on the queue's encoder thread."""

    index: int
    seed: int
    image: Image.Image
    parameters: str

    def encode(self) -> bytes:
        from kd_server.pngmeta import encode_png

        return encode_png(self.image, self.parameters)


class EngineRunner:
    """Runs one queued GenerationRequest on the engine, reporting through the hooks.

    Progress is reported from the worker thread; previews arrive on the engine's
    preview thread, where their JPEG is made too, off the denoising thread's path."""

    def __init__(self, engine: EngineLike, preview_max_size: int) -> None:
        self.engine = engine
        self.preview_max_size = preview_max_size

    def __call__(self, request: GenerationRequest, hooks: Hooks) -> list[PngResult]:
        def on_progress(progress: Progress) -> None:
            hooks.progress(progress.step, progress.total)

        def on_preview(preview: Preview) -> None:
            hooks.preview(preview.step, preview_jpeg(preview.image, self.preview_max_size))

        images = self.engine.generate(
            request,
            on_progress=on_progress,
            should_cancel=hooks.should_cancel,
            on_loading=hooks.loading,
            on_preview=on_preview,
            on_warning=hooks.warning,
        )
        return [PngResult(i.index, i.seed, i.image, i.parameters) for i in images]


def _durability(settings: Settings) -> Durability | None:
    """The journal of a server with a state folder (settings.state_dir)."""
    if settings.state_dir is None:
        return None
    from kd_server.config import ConfigError
    from kd_server.journal import Journal, JournalError
    from kd_server.request_codec import decode_request, encode_request

    try:
        journal = Journal(settings.state_dir, settings.outputs_dir)
    except JournalError as exc:
        raise ConfigError(str(exc)) from exc
    return Durability(journal, encode_request, decode_request)


@dataclass
class Services:
    settings: Settings
    engine: EngineLike
    library: ModelLibrary
    queue: JobQueue
    hub: EventHub
    closing: bool = False
    _stopped: bool = False
    _stop_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def build(
        cls,
        settings: Settings,
        engine: EngineLike,
        library: ModelLibrary,
        workers: Sequence[Worker] | None = None,
    ) -> Services:
        """`engine` checks requests (and runs them without `workers`); `workers`: where
        jobs run when there are several (`kd_server.executors`)."""
        hub = EventHub()
        runner = workers or EngineRunner(engine, settings.preview_max_size)
        limits = QueueLimits.from_settings(settings)
        queue = JobQueue(runner, hub.publish, limits, durability=_durability(settings))
        return cls(settings, engine, library, queue, hub)

    # -- jobs ------------------------------------------------------------------------

    def check_open(self) -> None:
        """503 while shutting down: asked first, before any work on a request."""
        if self.closing:
            raise policy.shutting_down()

    def check(self, request: GenerationRequest) -> None:
        """What the engine can refuse without running: model, LoRAs, sampler, inputs,
        and a memory mode of no known name (kd_server.memory_modes; whether the device
        can run it is the running engine's to say)."""
        from kd_server.memory_modes import UnknownMemoryMode, parse

        try:
            parse(request.memory_mode)
        except UnknownMemoryMode as exc:
            raise EngineError(EngineErrorCode.INVALID_INPUT, f"memory_mode: {exc}") from exc
        self.engine.check(request)

    def auto_sampling(self, request: GenerationRequest, given: Iterable[str]) -> GenerationRequest:
        """The job's fast-model sampling, except for the fields the client set itself
        (`given`); see `kd_server.fast_modes.auto_sampling`."""
        return fast_modes.auto_sampling(request, self.library, given)

    def submit(
        self,
        request: GenerationRequest,
        client_id: str | None,
        durable: bool = True,
        live: bool = False,
    ) -> JobView:
        """Check and queue a job, or refuse it the way both APIs answer: 503 while
        shutting down, 429 with Retry-After when the queue is full. `durable=False`
        for a job whose caller cannot collect it after a restart (see JobQueue);
        `live=True` for a live-painting frame that supersedes the client's last one."""
        self.check_open()
        self.check(request)
        try:
            return self.queue.submit(request, client_id, durable, live)
        except QueueFull as exc:
            raise ApiError(
                429,
                "queue_full",
                f"The queue is full ({exc.limit} jobs waiting); try again in about "
                f"{exc.retry_after} s.",
                headers={"Retry-After": str(exc.retry_after)},
            ) from exc
        except QueueClosed as exc:
            raise policy.shutting_down() from exc
        except QueueStorageError as exc:
            raise ApiError(503, "storage_unavailable", f"The job was not accepted: {exc}") from exc

    def preprocess(
        self,
        image: Image.Image,
        mode: ControlMode,
        low_threshold: int = 100,
        high_threshold: int = 200,
        resolution: int | None = None,
    ) -> Image.Image:
        """A picture -> a control image (the engine refuses a missing depth estimator)."""
        self.check_open()
        return self.engine.preprocess(image, mode, low_threshold, high_threshold, resolution)

    def upscalers(self) -> list[UpscalerFile]:
        """The upscaler files found, usable or not: each has `name`, `usable`, `reason`,
        `scale`, `architecture` and `found_in` (kd_server.upscale.files)."""
        return self.library.upscalers()

    def upscale_image(
        self, image: Image.Image, upscaler: str | None, width: int, height: int
    ) -> Image.Image:
        """`image` enlarged to `width` x `height` with the named upscaler (None:
        Lanczos), without diffusion (A1111's extras). Raises EngineError
        (`upscaler_not_found`, `upscaler_unusable`) for a name it cannot use; waits
        for the running job, as the engine does one thing at a time."""
        self.check_open()
        policy.check_upscale_size("width, height", width, height)
        return self.engine.upscale_image(image, upscaler, width, height)

    def job(self, job_id: str) -> JobView:
        """A job's state; raises `JobNotFound`."""
        return self.queue.get(job_id)

    def cancel(self, job_id: str) -> JobView:
        """Cancel a queued or running job; raises `JobNotFound` or `JobNotActive`."""
        return self.queue.cancel(job_id)

    def image(self, job_id: str, index: int) -> bytes | None:
        """One result's PNG, or None when the job has no such image (yet)."""
        return self.queue.image(job_id, index)

    def queue_length(self) -> int:
        return self.queue.queue_length()

    def busy(self) -> bool:
        return self.queue.running_job() is not None

    def jobs_of(self, client_id: str) -> list[JobView]:
        """A client's jobs as the queue knows them (for a client that resumes)."""
        return self.queue.jobs_of(client_id)

    def start(self) -> None:
        """Resume what the journal holds (a durable server), then start working."""
        self.queue.recover()
        self.queue.start()

    # -- the server ------------------------------------------------------------------

    def loaded_models(self) -> list[str]:
        loaded = getattr(self.engine, "loaded_models", None)
        return list(loaded()) if callable(loaded) else []

    def stop_jobs(self) -> None:
        """Refuse new jobs, cancel queued and running ones (their clients hear it)."""
        with self._stop_lock:
            self.closing = True
            if self._stopped:
                return
            self._stopped = True
        self.queue.stop()

    async def shutdown(self, grace_s: float = 5.0) -> None:
        """Stop the jobs, let every connection send what it holds, then close them.

        Runs before uvicorn closes connections itself, so clients get their
        `cancelled` events and a clean close (1001) rather than a dropped socket.
        """
        await asyncio.to_thread(self.stop_jobs)
        self.hub.close_all("The server is shutting down.")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while self.hub.connection_count() and loop.time() < deadline:
            await asyncio.sleep(0.02)


def get_services(connection: HTTPConnection) -> Services:
    """FastAPI dependency: the app's shared services (HTTP routes and WebSockets)."""
    return connection.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(get_services)]
