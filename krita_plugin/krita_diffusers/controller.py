"""The docker's logic: turns a click on Generate into a job, follows the job through
its events, fetches results into the history and puts chosen ones on the canvas.

Plain Qt (QObject signals), no widgets: the panel only wires its controls to these
methods and signals, and tests drive it with a real server and an in-memory canvas.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from dataclasses import dataclass, field

from PyQt5.QtCore import QObject, pyqtSignal

from . import images
from .canvas import CanvasAdapter, CanvasError, LayerImage
from .client import ServerClient
from .history import History, HistoryItem, layer_name
from .jobs import Job, JobContext, PendingEvents
from .planning import PlanError, make_plan
from .protocol import (
    Event,
    EventType,
    JobRequest,
    Lora,
    ModelList,
    Task,
    is_unreachable_message,
    working_resolution_for,
)
from .settings import Settings


@dataclass
class GenerateInput:
    """What the artist set in the docker for one click."""

    prompt: str
    negative_prompt: str = ""
    strength_percent: int = 100
    model: str | None = None
    loras: list[Lora] = field(default_factory=list)
    batch_size: int = 1
    seed: int | None = None  # None: a new random seed


class Controller(QObject):
    job_updated = pyqtSignal(object)  # Job
    preview_ready = pyqtSignal(bytes)  # JPEG of the image in progress
    history_changed = pyqtSignal()
    result_added = pyqtSignal(object)  # HistoryItem
    seed_used = pyqtSignal(object)  # int; object keeps seeds past 2**31
    message = pyqtSignal(str)  # a problem in plain words; "" clears it

    def __init__(self, client: ServerClient, canvas: CanvasAdapter, settings: Settings) -> None:
        super().__init__()
        self.client = client
        self.canvas = canvas
        self.settings = settings
        self.history = History(settings.history_size)
        self.models = ModelList([], [])
        self.jobs: dict[str, Job] = {}
        self.pending = PendingEvents()
        self.submitting = 0
        self.cancel_when_submitted = False
        self.previewed: int | None = None
        self._fetching: set[tuple[str, int]] = set()
        client.event_received.connect(self._on_event)
        client.reconnected.connect(self.recover)
        self._shown_message = ""
        self.message.connect(self._remember_message)
        client.models_changed.connect(self._on_models)

    # settings and server facts

    def update_settings(self, settings: Settings) -> None:
        self.settings = settings
        for item in self.history.set_limit(settings.history_size):
            self._forget(item)
        self.history_changed.emit()

    def _on_models(self, models: ModelList) -> None:
        self.models = models

    @property
    def active_job(self) -> Job | None:
        """The newest job still queued or running (what the progress bar shows)."""
        running = [job for job in self.jobs.values() if not job.done]
        return running[-1] if running else None

    @property
    def busy(self) -> bool:
        return self.submitting > 0 or self.active_job is not None

    # generating

    def generate(self, params: GenerateInput) -> bool:
        """Plan, read the canvas and submit; False (with a message) when it cannot."""
        if not params.prompt.strip():
            self.message.emit("Write a prompt first: say what should appear.")
            return False
        family = self.models.family_of(params.model)
        working = self.settings.working_resolution or working_resolution_for(family)
        try:
            plan = make_plan(
                self.canvas.canvas_size(),
                self.canvas.selection_bounds(),
                params.strength_percent,
                self.settings.context_margin,
                working,
            )
            pixels = None if plan.task is Task.TXT2IMG else self.canvas.read_pixels(plan.region)
            mask = self.canvas.read_mask(plan.region) if plan.task is Task.INPAINT else None
        except (PlanError, CanvasError) as exc:
            self.message.emit(str(exc))
            return False
        context = JobContext(plan.task, params.prompt, plan.region, self.canvas.document_id())
        settings = self.settings
        region = plan.region

        def prepare() -> JobRequest:
            # Runs in a worker: PNG encoding of a big region takes a moment.
            return JobRequest(
                task=plan.task,
                prompt=params.prompt,
                negative_prompt=params.negative_prompt,
                model=params.model,
                loras=list(params.loras),
                sampler=settings.sampler,
                steps=settings.steps,
                cfg_scale=settings.cfg_scale,
                seed=params.seed,
                batch_size=params.batch_size,
                width=plan.width,
                height=plan.height,
                strength=None if plan.task is Task.TXT2IMG else plan.strength,
                image=None
                if pixels is None
                else images.encode_rgba_png(pixels, region.width, region.height),
                mask=None
                if mask is None
                else images.encode_mask_png(mask, region.width, region.height),
                mask_grow=settings.mask_grow,
                mask_feather=settings.mask_feather,
                preview_every=settings.preview_every,
            )

        self.submitting += 1
        self.message.emit("")
        self.client.submit(
            prepare, lambda data: self._submitted(context, data), self._submit_failed
        )
        return True

    def _submitted(self, context: JobContext, data: object) -> None:
        self.submitting -= 1
        if not isinstance(data, dict) or "job_id" not in data:
            self._submission_ended()
            self.message.emit("The server accepted the job but did not say its id; try again.")
            return
        job = Job(str(data["job_id"]), context, position=int(data.get("position") or 0))
        self.jobs[job.job_id] = job
        for event in self.pending.take(job.job_id):
            self._apply(job, event)
        self.job_updated.emit(job)
        if self.cancel_when_submitted and not job.done:
            self.client.cancel(job.job_id, on_error=self.message.emit)
        self._submission_ended()

    def _submit_failed(self, message: str) -> None:
        self.submitting -= 1
        self._submission_ended()
        self.message.emit(message)
        self.job_updated.emit(None)

    def _submission_ended(self) -> None:
        """A Cancel pressed while jobs were being sent applies to those jobs only."""
        if self.submitting == 0:
            self.cancel_when_submitted = False

    def cancel(self) -> None:
        """Cancel every job of ours still queued or running (and one being sent)."""
        if self.submitting:
            self.cancel_when_submitted = True
        for job in list(self.jobs.values()):
            if not job.done:
                self.client.cancel(job.job_id, on_error=self.message.emit)

    # following jobs

    def _on_event(self, event: Event) -> None:
        job = self.jobs.get(event.job_id)
        if job is None:
            self.pending.add(event)  # the POST has not answered yet
            return
        self._apply(job, event)
        self.job_updated.emit(job)

    def _apply(self, job: Job, event: Event) -> None:
        job.apply_event(event)
        if event.type is EventType.PREVIEW and event.preview:
            data = event.preview.split(",", 1)[-1]  # a data: URL or bare base64
            with contextlib.suppress(binascii.Error, ValueError):
                self.preview_ready.emit(base64.b64decode(data))
        elif event.type is EventType.RESULT:
            self._fetch_results(job)
        elif event.type is EventType.FINISHED:
            # Results announced while the stream was down are only in the job's record.
            self.client.job_status(job.job_id, lambda data, j=job: self._on_status(j, data))
        elif event.type is EventType.FAILED:
            self.message.emit(job.error or "The job failed on the server.")

    def _remember_message(self, text: str) -> None:
        self._shown_message = text

    def recover(self) -> None:
        """After a (re)connection: read the record of every job that may have moved
        on while the stream was down, and take back a "cannot reach" message."""
        if is_unreachable_message(self._shown_message):
            self.message.emit("")
        for job in self.jobs.values():
            missing = [i for i in job.results if (job.job_id, i) not in self._fetching]
            if not job.done or missing:
                self.client.job_status(job.job_id, lambda data, j=job: self._on_status(j, data))

    def _on_status(self, job: Job, data: object) -> None:
        if not isinstance(data, dict):
            return
        was_done = job.done
        if job.apply_status(data):
            if job.done and not was_done and job.error:
                self.message.emit(job.error)
            self.job_updated.emit(job)
        self._fetch_results(job)

    def _fetch_results(self, job: Job) -> None:
        for ref in job.results.values():
            key = (job.job_id, ref.index)
            if key in self._fetching:
                continue
            self._fetching.add(key)
            self.client.fetch(
                ref.url,
                lambda png, j=job, r=ref: self._add_result(j, r.index, r.seed, png),
                lambda message, k=key: self._fetch_failed(k, message),
            )

    def _fetch_failed(self, key: tuple[str, int], message: str) -> None:
        self._fetching.discard(key)  # a later recovery tries again
        self.message.emit(f"Could not download a result: {message}")

    def _add_result(self, job: Job, index: int, seed: int, png: bytes) -> None:
        context = job.context
        item, dropped = self.history.add(
            job.job_id,
            index,
            seed,
            context.prompt,
            context.task,
            context.region,
            png,
            context.document_id,
        )
        for old in dropped:
            self._forget(old)
        self.seed_used.emit(seed)
        self.history_changed.emit()
        self.result_added.emit(item)

    # history and the canvas

    def _forget(self, item: HistoryItem) -> None:
        if self.previewed == item.item_id:
            self.clear_preview()

    def _layer_image(self, item: HistoryItem) -> LayerImage:
        region = item.region
        rgba = images.png_to_rgba(item.png, region.width, region.height)
        return LayerImage(item.layer_name, region, rgba)

    def _check_document(self, item: HistoryItem) -> bool:
        if item.document_id and item.document_id != self.canvas.document_id():
            self.message.emit(
                "This result was made for another document: switch to that document to use it."
            )
            return False
        return True

    def show_item(self, item_id: int) -> None:
        """Show a history item on the canvas as the temporary preview layer."""
        item = self.history.get(item_id)
        if item is None or not self._check_document(item):
            return
        try:
            self.canvas.show_preview(self._layer_image(item))
        except (CanvasError, images.ImageError) as exc:
            self.message.emit(str(exc))
            return
        self.previewed = item_id

    def clear_preview(self) -> None:
        self.previewed = None
        try:
            self.canvas.clear_preview()
        except CanvasError as exc:
            self.message.emit(str(exc))

    def apply_items(self, item_ids: list[int]) -> bool:
        """Make items permanent layers; several at once go into one group layer."""
        chosen = [item for i in item_ids if (item := self.history.get(i)) is not None]
        if not chosen:
            self.message.emit("Select a result in the history first.")
            return False
        if not all(self._check_document(item) for item in chosen):
            return False
        try:
            layers = [self._layer_image(item) for item in chosen]
            self.clear_preview()
            group = None
            if len(layers) > 1:
                group = (
                    layer_name(chosen[0].prompt, chosen[0].seed).rsplit(" (seed", 1)[0] + " (batch)"
                )
            self.canvas.insert_layers(layers, group)
        except (CanvasError, images.ImageError) as exc:
            self.message.emit(str(exc))
            return False
        for item in chosen:
            item.applied = True
        self.history_changed.emit()
        return True

    def discard_items(self, item_ids: list[int]) -> None:
        for item_id in item_ids:
            item = self.history.remove(item_id)
            if item is not None:
                self._forget(item)
        self.history_changed.emit()
