"""Live mode in the docker: polls the region, sends live frames, shows the newest.

`live.LiveSession` decides when a frame goes; this QObject reads the canvas (through
the canvas adapter, on the GUI thread as Krita requires), sends frames through the
`client_api.JobClient`, follows the current frame's events and keeps its result.

The live result is shown in the docker only, never put on the canvas: in Krita 5.1
every layer a script adds or removes is an undo step and marks the document modified,
so a live layer updated a few times a second would flood the undo history and make a
document the artist never touched ask "save changes?". *Apply* copies the current
result into one permanent layer (one undo step); turning live off writes nothing.
"""

from __future__ import annotations

import base64
import binascii
import random
import time
import zlib
from typing import Any

from . import images
from .background import Runner
from .canvas import CanvasAdapter, CanvasError, LayerImage
from .client_api import JobClient
from .geometry import Rect
from .history import layer_name
from .jobs import PendingEvents
from .live import LiveSession, checksum, live_region
from .planning import fill_for, has_transparency
from .protocol import UPSCALE_PROTOCOL, Event, EventType, JobRequest, Lora, ModelList, Task
from .qt import QImage, QObject, pyqtSignal

NOT_FAST = (
    "This model is not fast enough for live use (no fast LoRA or checkpoint): frames will be slow."
)
NO_PROMPT = "Write a prompt first: say what live mode should make of your painting."
MAX_SEED = 2**32 - 1


class LiveSettings:
    """What the docker's controls say for live frames (the seed is locked by live mode
    when the artist left it open, so frames differ only by what was painted)."""

    def __init__(
        self,
        prompt: str,
        negative_prompt: str = "",
        strength_percent: int = 60,
        model: str | None = None,
        loras: list[Lora] | None = None,
        seed: int | None = None,
        sampling: tuple[str, int, float] | None = None,
        extras: dict[str, Any] | None = None,
    ) -> None:
        self.prompt = prompt
        self.negative_prompt = negative_prompt
        self.strength = max(1, min(100, strength_percent)) / 100.0
        self.model = model
        self.loras = list(loras or [])
        self.seed = seed
        #: None: a fast model, the server picks sampler, steps and CFG ("auto");
        #: else the artist's (sampler, steps, CFG) for a model with no fast settings.
        self.sampling = sampling
        #: the family's and protocol's optional job fields (clip_skip, vae, guidance,
        #: memory_mode: family_settings.job_fields), set on each frame's request
        self.extras = dict(extras or {})


class LiveMode(QObject):
    frame_ready = pyqtSignal(object)  # QImage: the newest live preview or result
    message = pyqtSignal(str)  # a problem in plain words; "" clears it
    active_changed = pyqtSignal(bool)

    def __init__(
        self,
        client: JobClient,
        canvas: CanvasAdapter,
        background: Runner,
        context_margin: int = 32,
    ) -> None:
        super().__init__()
        self.client = client
        self.canvas = canvas
        self.context_margin = context_margin
        self._background = background
        self.session: LiveSession | None = None
        self.settings: LiveSettings | None = None
        self.pending = PendingEvents(limit=100)
        self.result: tuple[bytes, Rect, str, str] | None = None  # png, region, document, name
        self.frames_sent = 0
        self.longest_poll_s = 0.0  # the GUI thread's longest poll (read, fingerprint)
        self._regions: dict[str, tuple[Rect, str]] = {}  # job id -> region, document
        self._sending: tuple[Rect, str] | None = None
        self._shown = 0  # the newest frame number shown (frames never go backwards)
        self._numbered = 0
        client.event_received.connect(self._on_event)
        client.reconnected.connect(self._on_reconnected)

    @property
    def active(self) -> bool:
        return self.session is not None

    @staticmethod
    def fast_enough(models: ModelList, model: str | None, loras: list[Lora]) -> bool:
        return models.is_fast(model, [lora.name for lora in loras])

    def start(self, settings: LiveSettings) -> bool:
        """Turn live on; False, with a message, when it cannot run."""
        if not settings.prompt.strip():
            self.message.emit(NO_PROMPT)
            return False
        self.session = LiveSession()
        self.update(settings)
        self.active_changed.emit(True)
        return True

    def update(self, settings: LiveSettings) -> None:
        """New prompt, strength or model: the next settled poll sends a new frame."""
        if settings.seed is None:
            kept = self.settings.seed if self.settings is not None else None
            settings.seed = kept if kept is not None else random.randint(0, MAX_SEED)
        self.settings = settings
        if self.session is not None:
            self.session.invalidate()

    def stop(self) -> None:
        """Turn live off. Nothing was ever written to the document, so nothing is
        undone; the frame still running on the server ends on its own (its events
        are dropped from now on)."""
        if self.session is None:
            return
        self.session = None
        self.result = None
        self._regions.clear()
        self.active_changed.emit(False)

    def poll(self) -> None:
        """One look at the region (the docker's timer): read it, fingerprint it and
        send a frame when the session says so."""
        session, settings = self.session, self.settings
        if session is None or settings is None:
            return
        began = time.perf_counter()
        self._poll(session, settings)
        self.longest_poll_s = max(self.longest_poll_s, time.perf_counter() - began)

    def _poll(self, session: LiveSession, settings: LiveSettings) -> None:
        region = live_region(
            self.canvas.canvas_size(), self.canvas.selection_bounds(), self.context_margin
        )
        if region is None:
            return
        try:
            pixels = self.canvas.read_pixels(region)
        except CanvasError as exc:
            self.message.emit(str(exc))
            return
        where = f"{self.canvas.document_id()}:{region}".encode()
        if session.poll(zlib.adler32(where, checksum(pixels))):
            self._send(session, settings, region, pixels)

    def _send(
        self, session: LiveSession, settings: LiveSettings, region: Rect, pixels: bytes
    ) -> None:
        order = self.canvas.pixel_order
        fills = self.client.protocol >= UPSCALE_PROTOCOL

        def prepare() -> JobRequest:
            # Runs in a worker: PNG encoding of a big region takes a moment. Transparent
            # pixels go as they are; a protocol 5 server blurs the picture into them.
            request = JobRequest(
                task=Task.IMG2IMG,
                prompt=settings.prompt,
                negative_prompt=settings.negative_prompt,
                model=settings.model,
                loras=list(settings.loras),
                seed=settings.seed,
                strength=settings.strength,
                image=images.encode_png(pixels, region.width, region.height, order),
                preview_every=1,
                live=True,
                sampling="auto" if settings.sampling is None else None,
                fill=fill_for(Task.IMG2IMG, has_transparency(pixels)) if fills else None,
            )
            if settings.sampling is not None:
                request.sampler, request.steps, request.cfg_scale = settings.sampling
            for name, value in settings.extras.items():
                setattr(request, name, value)
            return request

        session.sent()
        self.frames_sent += 1
        self._sending = (region, self.canvas.document_id())
        self.client.submit(
            prepare, lambda data: self._accepted(session, data), lambda m: self._refused(session, m)
        )

    def _accepted(self, session: LiveSession, data: object) -> None:
        if session is not self.session or not isinstance(data, dict) or "job_id" not in data:
            return
        job_id = str(data["job_id"])
        session.accepted(job_id)
        if self._sending is not None:
            self._regions = {job_id: self._sending}
        self._sending = None
        for event in self.pending.take(job_id):
            self._on_event(event)

    def _refused(self, session: LiveSession, message: str) -> None:
        if session is self.session:
            session.refused()
            self._sending = None
            self.message.emit(message)

    def _on_reconnected(self) -> None:
        """Live jobs do not survive a server restart: send the current state again."""
        if self.session is not None:
            self.session.invalidate()

    def _on_event(self, event: Event) -> None:
        session = self.session
        if session is None:
            return
        if not session.is_current(event.job_id):
            if session.sending:
                self.pending.add(event)  # maybe the frame whose POST is on its way
            return
        if event.type is EventType.PREVIEW and event.preview:
            self._show_preview(event.preview)
        elif event.type is EventType.RESULT and event.url:
            self._fetch(event.job_id, event.url, event.seed)
        elif event.type is EventType.FAILED:
            self.message.emit(event.error or "The live frame failed on the server.")
        elif event.type is EventType.CANCELLED and not session.is_quiet_cancel(event.reason):
            self.message.emit("The live frame was cancelled on the server.")

    def _number(self) -> int:
        self._numbered += 1
        return self._numbered

    def _show(self, number: int, image: QImage) -> None:
        if self.session is not None and number > self._shown:
            self._shown = number
            self.frame_ready.emit(image)

    def _show_preview(self, preview: str) -> None:
        try:
            jpeg = base64.b64decode(preview.split(",", 1)[-1])
        except (binascii.Error, ValueError):
            return
        number = self._number()
        self._background(
            lambda: images.preview_image(jpeg), lambda image: self._show(number, image), None
        )

    def _fetch(self, job_id: str, url: str, seed: int | None) -> None:
        region, document = self._regions.get(job_id, (None, ""))
        settings = self.settings
        if region is None or settings is None:
            return
        number = self._number()
        name = "Live: " + layer_name(settings.prompt, seed if seed is not None else -1)

        def fetched(png: object) -> None:
            if not isinstance(png, bytes) or self.session is None:
                return
            if not self.session.is_current(job_id):
                return  # a newer frame was accepted while this one downloaded
            self.result = (png, region, document, name)
            self._background(
                lambda: images.result_views(png, region.width, region.height).view,
                lambda image: self._show(number, image),
                self.message.emit,
            )

        self.client.fetch(url, fetched, self.message.emit)

    def apply(self) -> bool:
        """Copy the current live result into one new layer at its region (the same
        insertion as Apply in the history); False, with a message, when there is none."""
        if self.result is None:
            self.message.emit("No live result yet: paint, pause, and wait for a frame.")
            return False
        png, region, document, name = self.result
        if document != self.canvas.document_id():
            self.message.emit("This live result was made for another document.")
            return False
        order = self.canvas.pixel_order

        def decode() -> LayerImage:
            return LayerImage(
                name, region, images.png_to_pixels(png, region.width, region.height, order)
            )

        self._background(decode, lambda layer: self._insert(layer, document), self.message.emit)
        return True

    def _insert(self, layer: LayerImage, document: str) -> None:
        if self.canvas.document_id() != document:
            self.message.emit("The document changed before the live result was applied.")
            return
        try:
            self.canvas.insert_layers([layer], None)
        except CanvasError as exc:
            self.message.emit(str(exc))
