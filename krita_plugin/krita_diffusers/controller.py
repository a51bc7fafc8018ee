"""The docker's logic: turns a click on Generate into a job, follows the job through
its events, downloads results into the history and applies chosen ones to the canvas.

Plain Qt (QObject signals), no widgets: the panel only wires its controls to these
methods and signals. It reaches the server through the small `client_api.JobClient`
interface, so its rules are unit-tested with a stand-in client as well as against the
real server.

Results are not put on the canvas until the artist applies them: the docker shows
them (over the pixels they were made from) and keeps them in the history. Krita's
scripting API records every layer it adds or removes in the document's undo history
and marks the document modified, so a temporary preview layer would come back on
Ctrl+Z and leak into the next job's input; keeping results off the canvas avoids
both. A result still unapplied when the next job starts simply stays in the history.

Everything slow (decoding, scaling, composing) runs in the background; the GUI
thread only reads the canvas when Generate is pressed and inserts applied layers.

After a lost connection or a server restart the jobs it waits for are reconciled with
what the server says about them (`resume.py`): they go on, deliver the results the
docker has not got yet, or end as the server says; only a job the server does not
know is reported as lost.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from . import images
from .background import Background, Runner
from .canvas import CanvasError, DocumentCanvas, LayerImage
from .client_api import JobClient
from .control import (
    ControlChoice,
    ControlError,
    ControlRow,
    ReferenceSetting,
    check_reference,
    check_rows,
    preprocess_layer_name,
)
from .expanding import ExpandError, Sides, plan_expansion
from .family_settings import JobChoices, job_fields, rules_for
from .geometry import Rect, canvas_rect
from .history import History, HistoryItem, layer_name
from .jobs import Job, JobContext, PendingEvents, ResultRef
from .model_defaults import sampling_of
from .planning import (
    PAST_THE_EDGE,
    Plan,
    PlanError,
    fill_for,
    has_transparency,
    make_plan,
    reaches_past,
)
from .protocol import (
    UPSCALE_PROTOCOL,
    Control,
    Enlarge,
    Event,
    EventType,
    FillMode,
    JobRequest,
    Lora,
    ModelList,
    Reference,
    Task,
    is_unreachable_message,
)
from .qt import QImage, QObject, QTimer, pyqtSignal
from .recipes import Recipe, with_seed
from .resume import STATE_GRACE_MS, Resumption
from .settings import Settings
from .styles import Sampling
from .upscaling import Destination, UpscaleChoice, UpscaleError, enlarge, result_name, target_size

#: Said when an upscale or expand is asked of a server before protocol 5.
OLD_SERVER = (
    "This server cannot upscale (it is older than this plugin). Update "
    "krita-diffusers-server, then try again."
)

#: Jobs that are over (results all in) remembered, newest kept.
KEPT_JOBS = 100

#: Runs a callback on the GUI thread after a delay in milliseconds (tests run it when
#: they choose).
Scheduler = Callable[[int, Callable[[], None]], None]


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
    controls: list[ControlRow] = field(default_factory=list)
    reference: ReferenceSetting | None = None  # None: no reference picture
    #: The sampling of the docker's style or the model's remembered one; None: the
    #: settings' own. `auto`: the server picks all three (a fast model, protocol 3).
    sampling: Sampling | None = None
    #: What the docker had, for the result's history entry (Reuse); None: not kept
    recipe: Recipe | None = None
    #: The style's memory mode (protocol 6); None: the server chooses
    memory_mode: str | None = None


@dataclass(frozen=True)
class ControlPixels:
    """A control row's choice with its layer's pixels of the job's region, read on
    the GUI thread (as Krita requires) and encoded later in the background."""

    row: ControlRow
    choice: ControlChoice
    pixels: bytes


@dataclass(frozen=True)
class ReferencePicture:
    """The reference as read on the GUI thread: a layer's pixels over the whole
    canvas, or an image file's path (read and encoded in the background)."""

    model: str
    weight: float
    pixels: bytes | None = None
    size: tuple[int, int] = (0, 0)
    path: str | None = None

    def encode(self, order: str) -> Reference:
        if self.path is not None:
            png = images.file_to_png(self.path)
        else:
            png = images.encode_png(self.pixels or b"", self.size[0], self.size[1], order)
        return Reference(self.model, png, self.weight)


class Controller(QObject):
    job_updated = pyqtSignal(object)  # Job, or None after a refused submission
    preview_ready = pyqtSignal(object)  # QImage: the image in progress
    history_changed = pyqtSignal()
    result_added = pyqtSignal(object)  # HistoryItem
    seed_used = pyqtSignal(object)  # int; object keeps seeds past 2**31
    message = pyqtSignal(str)  # a problem in plain words; "" clears it
    notice = pyqtSignal(str)  # the server's warning about a job that carries on
    retry_available = pyqtSignal(bool)  # some result could not be downloaded
    applied = pyqtSignal(list)  # item ids that became layers

    def __init__(
        self,
        client: JobClient,
        canvas: DocumentCanvas,
        settings: Settings,
        background: Runner | None = None,
        schedule: Scheduler | None = None,
    ) -> None:
        super().__init__()
        self.client = client
        self.canvas = canvas
        self.settings = settings
        self._background: Runner = background or Background(slots=2).run
        self._schedule: Scheduler = schedule or self._later
        self.resumption = Resumption()
        self.history = History(settings.history_size)
        self.views: dict[int, images.ResultViews] = {}  # by history item id
        self.models = ModelList([], [])
        self.jobs: dict[str, Job] = {}
        self.pending = PendingEvents()
        self.submitting = 0
        self.cancel_when_submitted = False
        self._fetching: set[tuple[str, int]] = set()
        self._backdrops: dict[str, QImage] = {}  # by job id: what results are drawn over
        self._previews_sent = 0
        self._previews_shown = 0
        self._shown_message = ""
        self.message.connect(self._remember_message)
        client.event_received.connect(self._on_event)
        client.reconnected.connect(self.recover)
        client.models_changed.connect(self._on_models)

    # settings and server facts

    def update_settings(self, settings: Settings) -> None:
        self.settings = settings
        for item in self.history.set_limit(settings.history_size):
            self._forget(item)
        self.history_changed.emit()

    def _on_models(self, models: ModelList) -> None:
        self.models = models

    def working_resolution(self, model: str | None) -> int:
        """The setting when set, else the model's own working size (from the server)."""
        return self.settings.working_resolution or self.models.working_size_of(model)

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
        try:
            size, selection = self.canvas.canvas_size(), self.canvas.selection_bounds()
            plan = make_plan(
                size,
                selection,
                params.strength_percent,
                self.settings.context_margin,
                self.working_resolution(params.model),
                hires=self.settings.hires_fix and self.speaks_upscale,
            )
            task = plan.task
            pixels = self.canvas.read_pixels(plan.region) if task.sends_image else None
            mask = self.canvas.read_mask(plan.region) if task.sends_mask else None
            controls = self._read_controls(params.controls, plan.region)
            reference = self._read_reference(params.reference)
        except (PlanError, CanvasError, ControlError) as exc:
            self.message.emit(str(exc))
            return False
        box = plan.region
        recipe = (
            None
            if params.recipe is None
            else replace(
                params.recipe, task=plan.task.value, region=(box.x, box.y, box.width, box.height)
            )
        )
        context = JobContext(
            plan.task, params.prompt, plan.region, self.canvas.document_id(), recipe=recipe
        )
        settings = self.settings
        region = plan.region
        order = self.canvas.pixel_order
        made: dict[str, QImage] = {}
        fills = self.speaks_upscale
        hires = None if plan.hires is None else Enlarge(width=plan.hires[0], height=plan.hires[1])

        def prepare() -> JobRequest:
            # Runs in a worker: PNG encoding of a big region takes a moment. Pixels go
            # as they are, transparent ones included (RGBA): the server's fill decides
            # what they hold (an older server flattens them on white).
            image = None
            fill = None
            if pixels is not None:
                image = images.encode_png(pixels, region.width, region.height, order)
                made["backdrop"] = images.backdrop(pixels, region.width, region.height, order)
                fill = fill_for(plan.task, has_transparency(pixels)) if fills else None
            return JobRequest(
                task=plan.task,
                prompt=params.prompt,
                model=params.model,
                loras=list(params.loras),
                seed=params.seed,
                batch_size=params.batch_size,
                width=plan.width,
                height=plan.height,
                strength=plan.strength if plan.task.sends_image else None,
                image=image,
                mask=None
                if mask is None
                else images.encode_mask_png(mask, region.width, region.height),
                mask_grow=settings.mask_grow,
                mask_feather=settings.mask_feather,
                preview_every=settings.preview_every,
                control=self._encode_controls(controls, plan, order),
                reference=None if reference is None else reference.encode(order),
                hires=hires,
                fill=fill,
                **self._sampling(params),
            )

        self._send(context, made, prepare)
        if reaches_past(selection, size):
            self.notice.emit(PAST_THE_EDGE)
        return True

    @property
    def speaks_upscale(self) -> bool:
        """The server knows `upscale`, `hires` and `fill` (protocol 5): only then are
        they sent; an older server refuses fields it does not know."""
        return self.client.protocol >= UPSCALE_PROTOCOL

    def _send(
        self,
        context: JobContext,
        made: dict[str, QImage],
        prepare: Callable[[], JobRequest],
        accepted: Callable[[], bool] | None = None,
    ) -> None:
        """Submit; `accepted` runs once the server took the job (False: the job is
        cancelled again, the message already said why)."""
        self.submitting += 1
        self.message.emit("")

        def on_ok(data: object) -> None:
            self._submitted(context, made, data, accepted)

        self.client.submit(prepare, on_ok, self._submit_failed)

    def _base_request(self, params: GenerateInput, task: Task) -> JobRequest:
        """The fields every job of the docker shares: prompt, model, LoRAs, sampling,
        seed, previews."""
        settings = self.settings
        return JobRequest(
            task=task,
            prompt=params.prompt,
            model=params.model,
            loras=list(params.loras),
            seed=params.seed,
            batch_size=1,
            preview_every=settings.preview_every,
            **self._sampling(params),
        )

    def _sampling(self, params: GenerateInput) -> dict[str, Any]:
        """The job's sampler, steps and CFG: the docker's choice (style or the model's
        remembered) else the settings'; `sampling: "auto"` for a fast style. The
        negative prompt, CFG, guidance, clip skip, VAE and memory mode as the model's
        family and the server's protocol allow (family_settings.job_fields)."""
        chosen = params.sampling or sampling_of(self.settings)
        rules = rules_for(self.models.family_of(params.model))
        choices = JobChoices(
            params.negative_prompt,
            chosen.cfg_scale,
            chosen.guidance,
            chosen.clip_skip,
            chosen.vae,
            params.memory_mode,
        )
        return {
            "sampler": chosen.sampler,
            "steps": chosen.steps,
            "sampling": "auto" if chosen.auto else None,
            **job_fields(rules, self.client.protocol, choices),
        }

    # upscale and expand

    def upscale(self, params: GenerateInput, choice: UpscaleChoice) -> bool:
        """Enlarge the whole visible canvas on the server (an upscaler, then a refine
        with the prompt at `choice.strength_percent`); the result joins the history
        and, applied, becomes a new document or a layer of this one scaled to it.
        False, with a message, when it cannot be asked."""
        if not self.speaks_upscale:
            self.message.emit(OLD_SERVER)
            return False
        try:
            size = self.canvas.canvas_size()
            target = target_size(size, choice)
            assert size is not None  # target_size refuses None
            whole = canvas_rect(*size)
            pixels = self.canvas.read_pixels(whole)
        except (UpscaleError, CanvasError) as exc:
            self.message.emit(str(exc))
            return False
        context = JobContext(
            Task.UPSCALE,
            params.prompt,
            canvas_rect(*target),
            self.canvas.document_id(),
            result_name(target, params.prompt),
            choice.destination,
        )
        order = self.canvas.pixel_order
        made: dict[str, QImage] = {}
        request = self._base_request(params, Task.UPSCALE)
        request.upscale = enlarge(choice, target)

        def prepare() -> JobRequest:
            request.image = images.encode_png(pixels, whole.width, whole.height, order)
            made["backdrop"] = images.backdrop(pixels, whole.width, whole.height, order)
            return request

        self._send(context, made, prepare)
        return True

    def expand(self, params: GenerateInput, sides: Sides) -> bool:
        """Grow the canvas by `sides` and fill the new area by inpainting it with the
        picture around it as context. The picture is read before the canvas grows; the
        canvas grows once the server accepted the job (nothing changes when it cannot
        be sent); the result lands in the history like an inpaint's, at its place in
        the grown canvas. False, with a message, when it cannot be asked."""
        try:
            expansion = plan_expansion(self.canvas.canvas_size(), sides)
            region = expansion.region(expansion.context_for(self.settings.context_margin))
            old = self.canvas.read_pixels(expansion.old_part(region))
        except (ExpandError, CanvasError) as exc:
            self.message.emit(str(exc))
            return False
        document = self.canvas.document_id()
        context = JobContext(Task.INPAINT, params.prompt, region, document)
        order = self.canvas.pixel_order
        made: dict[str, QImage] = {}
        request = self._base_request(params, Task.INPAINT)
        request.strength = max(1, min(100, params.strength_percent)) / 100.0
        request.fill = FillMode.EDGE if self.speaks_upscale else None
        feather = self.settings.mask_feather

        def prepare() -> JobRequest:
            pixels = expansion.pixels(region, old)
            request.image = images.encode_png(pixels, region.width, region.height, order)
            mask = expansion.mask(region, feather)
            request.mask = images.encode_mask_png(mask, region.width, region.height)
            made["backdrop"] = images.backdrop(pixels, region.width, region.height, order)
            return request

        def grow() -> bool:
            if (
                self.canvas.document_id() != document
                or self.canvas.canvas_size() != expansion.old_size
            ):
                self.message.emit("The document changed before it could be expanded; try again.")
                return False
            new_width, new_height = expansion.new_size
            try:
                self.canvas.resize_canvas(sides.left, sides.top, new_width, new_height)
            except CanvasError as exc:
                self.message.emit(str(exc))
                return False
            return True

        self._send(context, made, prepare, grow)
        return True

    def _read_controls(self, rows: list[ControlRow], region: Rect) -> list[ControlPixels]:
        """Each row's layer pixels of exactly the job's region (hidden layers too);
        ControlError or CanvasError, with what to do, when a row cannot be sent."""
        if not rows:
            return []
        layer_ids = {layer.layer_id for layer in self.canvas.list_layers()}
        choices = check_rows(rows, layer_ids)  # every row checked: each has a layer
        read = self.canvas.read_layer_pixels
        return [
            ControlPixels(row, choice, read(row.layer_id or "", region))
            for choice, row in zip(choices, rows, strict=True)
        ]

    def _read_reference(self, setting: ReferenceSetting | None) -> ReferencePicture | None:
        """The reference picture: a layer is read whole (the IP-Adapter takes any
        size; its look, not its place, matters); a file is only checked to exist."""
        if setting is None:
            return None
        layer_ids = {layer.layer_id for layer in self.canvas.list_layers()}
        model = check_reference(setting, layer_ids)
        if setting.path is not None:
            if not os.path.isfile(setting.path):
                raise ControlError(f"Reference: the file {setting.path} is not there any more.")
            return ReferencePicture(model, setting.weight, path=setting.path)
        size = self.canvas.canvas_size() or (0, 0)
        pixels = self.canvas.read_layer_pixels(setting.layer_id or "", canvas_rect(*size))
        return ReferencePicture(model, setting.weight, pixels, size)

    @staticmethod
    def _encode_controls(controls: list[ControlPixels], plan: Plan, order: str) -> list[Control]:
        """PNGs of the control layers at the size the server expects: the region's, or
        for text to image the requested size (the region is scaled like the result)."""
        region = plan.region
        size = (region.width, region.height)
        if plan.width and plan.height and not plan.task.sends_image:
            size = (plan.width, plan.height)
        return [
            Control(
                model=entry.choice.model,
                image=images.encode_png_sized(
                    entry.pixels, region.width, region.height, order, size
                ),
                mode=entry.choice.mode,
                strength=entry.row.strength,
                start=entry.row.start,
                end=entry.row.end,
            )
            for entry in controls
        ]

    # "From canvas": a control image made from the picture, as a new layer

    def preprocess_from_canvas(
        self, mode: str, strength_percent: int, on_layer: Callable[[str], None]
    ) -> bool:
        """Turn the current region (the selection plus its context, or the whole
        canvas: what Generate would use) into a `mode` control image on the server
        and add it as a new layer at the region's place; `on_layer` gets its id.
        False, with a message, when it cannot be asked."""
        try:
            plan = make_plan(
                self.canvas.canvas_size(),
                self.canvas.selection_bounds(),
                strength_percent,
                self.settings.context_margin,
                self.working_resolution(None),
            )
            pixels = self.canvas.read_pixels(plan.region)
        except (PlanError, CanvasError) as exc:
            self.message.emit(str(exc))
            return False
        region, order, document = plan.region, self.canvas.pixel_order, self.canvas.document_id()
        self.message.emit("")
        self.client.preprocess(
            mode,
            lambda: images.encode_png(pixels, region.width, region.height, order),
            lambda data: self._preprocessed(mode, region, document, data, on_layer),
            self.message.emit,
        )
        return True

    def _preprocessed(
        self,
        mode: str,
        region: Rect,
        document: str,
        data: object,
        on_layer: Callable[[str], None],
    ) -> None:
        """Decode the control image in the background, then insert it as a layer."""
        encoded = data.get("image") if isinstance(data, dict) else None
        if not isinstance(encoded, str):
            self.message.emit("The server sent no control image; try again.")
            return
        order = self.canvas.pixel_order

        def decode() -> LayerImage:
            png = base64.b64decode(encoded)
            pixels = images.png_to_pixels(png, region.width, region.height, order)
            return LayerImage(preprocess_layer_name(mode), region, pixels)

        self._background(
            decode,
            lambda layer: self._insert_control_layer(layer, document, on_layer),
            self.message.emit,
        )

    def _insert_control_layer(
        self, layer: LayerImage, document: str, on_layer: Callable[[str], None]
    ) -> None:
        if self.canvas.document_id() != document:
            self.message.emit("The document changed before the control layer was made; try again.")
            return
        try:
            ids = self.canvas.insert_layers([layer], None)
        except CanvasError as exc:
            self.message.emit(str(exc))
            return
        if ids:
            on_layer(ids[0])

    def _submitted(
        self,
        context: JobContext,
        made: dict[str, QImage],
        data: object,
        accepted: Callable[[], bool] | None = None,
    ) -> None:
        self.submitting -= 1
        if not isinstance(data, dict) or "job_id" not in data:
            self._submission_ended()
            self.message.emit("The server accepted the job but did not say its id; try again.")
            return
        job = Job(str(data["job_id"]), context, position=int(data.get("position") or 0))
        self.jobs[job.job_id] = job
        if accepted is not None and not accepted():
            self.client.cancel(job.job_id, on_error=self.message.emit)
        if "backdrop" in made:
            self._backdrops[job.job_id] = made["backdrop"]
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
            # Ours whose POST has not answered yet, or another window's docker's: kept
            # only while a submission is on its way, so other windows' previews do
            # not pile up here.
            if self.submitting:
                self.pending.add(event)
            return
        self._apply(job, event)
        self.job_updated.emit(job)

    def _apply(self, job: Job, event: Event) -> None:
        if event.type is EventType.STATE:
            self.resumption.account(job.job_id)
            self._on_status(job, event.record)
            return
        if event.type is EventType.WARNING:
            if event.message:
                self.notice.emit(event.message)
            return
        job.apply_event(event)
        if event.type is EventType.PREVIEW and event.preview:
            self._decode_preview(event.preview)
        elif event.type is EventType.RESULT:
            self._fetch_results(job)
        elif event.type is EventType.FINISHED:
            # Results announced while the stream was down are only in the job's record.
            self.client.job_status(job.job_id, partial(self._on_status, job))
        elif event.type is EventType.FAILED:
            self.message.emit(job.error or "The job failed on the server.")
        self._release(job)

    def _decode_preview(self, preview: str) -> None:
        """Decode a live preview in the background; a frame that finishes decoding
        after a newer one is dropped, so previews never go backwards."""
        try:
            jpeg = base64.b64decode(preview.split(",", 1)[-1])  # a data: URL or bare base64
        except (binascii.Error, ValueError):
            return
        self._previews_sent += 1
        number = self._previews_sent
        self._background(
            lambda: images.preview_image(jpeg),
            lambda image: self._preview_decoded(number, image),
            None,
        )

    def _preview_decoded(self, number: int, image: QImage) -> None:
        if number > self._previews_shown:
            self._previews_shown = number
            self.preview_ready.emit(image)

    def _remember_message(self, text: str) -> None:
        self._shown_message = text

    def recover(self) -> None:
        """After a (re)connection: take back a "cannot reach" message and reconcile
        every job that may have moved on while the stream was down. A resuming server
        sends their states now; those it has not accounted for after a moment (at
        once for an older server) are asked about one by one."""
        if is_unreachable_message(self._shown_message):
            self.message.emit("")
        waiting = [job.job_id for job in self.jobs.values() if self._waits_for(job)]
        round_ = self.resumption.begin(waiting)
        if not waiting:
            return
        if self.client.resumes:
            self._schedule(STATE_GRACE_MS, lambda: self._ask_unaccounted(round_))
        else:
            self._ask_unaccounted(round_)

    def _waits_for(self, job: Job) -> bool:
        """Still running on the server, or a result of it not here nor on its way."""
        on_way = {index for job_id, index in self._fetching if job_id == job.job_id}
        return not job.done or any(ref.index not in on_way for ref in job.missing)

    def _ask_unaccounted(self, round_: int) -> None:
        """The jobs no state accounted for: their records (`GET /v1/jobs/{id}`); one
        the server does not know comes back failed, as lost."""
        for job_id in self.resumption.unaccounted(round_):
            job = self.jobs.get(job_id)
            if job is not None:
                self.client.job_status(job_id, partial(self._on_status, job))

    def _later(self, delay_ms: int, work: Callable[[], None]) -> None:
        """`work` on the GUI thread after `delay_ms`, by a timer this controller owns
        (so it never runs once the controller is gone)."""
        timer = QTimer(self)
        timer.setSingleShot(True)
        timer.timeout.connect(work)
        timer.timeout.connect(timer.deleteLater)
        timer.start(delay_ms)

    def _on_status(self, job: Job, data: object) -> None:
        if not isinstance(data, dict):
            return
        was_done = job.done
        if job.apply_status(data):
            if job.done and not was_done and job.error:
                self.message.emit(job.error)
            self.job_updated.emit(job)
        self._fetch_results(job)
        self._release(job)

    # downloading results

    def _fetch_results(self, job: Job) -> None:
        for ref in job.missing:
            key = (job.job_id, ref.index)
            if key in self._fetching:
                continue
            self._fetching.add(key)
            self.client.fetch(
                ref.url,
                partial(self._downloaded, job, ref),
                partial(self._download_failed, job, ref),
            )

    def _downloaded(self, job: Job, ref: ResultRef, png: object) -> None:
        """Decode and compose the result's views in the background before it joins the
        history: a result is only announced once its pixels are usable."""
        if not isinstance(png, bytes):
            self._download_failed(job, ref, "the server sent no image.")
            return
        region = job.context.region
        under = self._backdrops.get(job.job_id)
        self._background(
            lambda: images.result_views(png, region.width, region.height, under),
            lambda views: self._add_result(job, ref, png, views),
            lambda message: self._download_failed(job, ref, message),
        )

    def _download_failed(self, job: Job, ref: ResultRef, message: str) -> None:
        self._fetching.discard((job.job_id, ref.index))  # Retry (or a reconnection) tries again
        job.download_error = message
        self.message.emit(
            f"Could not download a result of “{job.context.prompt}”: {message.strip()} "
            "Press Retry to try again."
        )
        self.retry_available.emit(True)
        self.job_updated.emit(job)

    def retry_downloads(self) -> None:
        """Download again every result the server made that is not in the history."""
        self.message.emit("")
        self.retry_available.emit(False)
        for job in self.jobs.values():
            if job.missing:
                job.download_error = None
                self.job_updated.emit(job)
                self._fetch_results(job)

    @property
    def downloads_failed(self) -> bool:
        return any(job.download_error for job in self.jobs.values())

    def _add_result(self, job: Job, ref: ResultRef, png: bytes, views: images.ResultViews) -> None:
        context = job.context
        item, dropped = self.history.add(
            job.job_id,
            ref.index,
            ref.seed,
            context.prompt,
            context.task,
            context.region,
            png,
            context.document_id,
            context.name,
            context.destination,
            None if context.recipe is None else with_seed(context.recipe, ref.seed),
        )
        self.views[item.item_id] = views
        job.result_fetched(ref.index)
        for old in dropped:
            self._forget(old)
        self._release(job)
        self.seed_used.emit(ref.seed)
        self.history_changed.emit()
        self.result_added.emit(item)
        self.job_updated.emit(job)
        if not self.downloads_failed:
            self.retry_available.emit(False)

    def _release(self, job: Job) -> None:
        """Drop what a job kept for its results once it can have no more."""
        if job.done and not job.missing:
            self._backdrops.pop(job.job_id, None)
            self._trim_jobs()

    def _trim_jobs(self) -> None:
        """Forget the oldest jobs that are over, beyond `KEPT_JOBS`: a long session
        would otherwise keep every job it ever sent. Their results stay in the history;
        a late event for one is ignored like another client's."""
        over = [job_id for job_id, job in self.jobs.items() if job.done and not job.missing]
        for job_id in over[: max(0, len(over) - KEPT_JOBS)]:
            del self.jobs[job_id]

    # history and the canvas

    def _forget(self, item: HistoryItem) -> None:
        self.views.pop(item.item_id, None)

    def _check_document(self, item: HistoryItem) -> bool:
        if item.document_id and item.document_id != self.canvas.document_id():
            self.message.emit(
                "This result was made for another document: switch to that document to use it."
            )
            return False
        return True

    def apply_items(self, item_ids: list[int]) -> bool:
        """Make items permanent layers; several at once go into one group layer.

        The PNGs are decoded and scaled to their regions in the background; the layers
        are inserted when that is done (`applied` then names the items). An upscaled
        result goes where its job said (`_apply_upscaled`), each on its own. False,
        with a message, when nothing can be applied.
        """
        picked = [item for i in item_ids if (item := self.history.get(i)) is not None]
        if not picked:
            self.message.emit("Select a result in the history first.")
            return False
        upscaled = [item for item in picked if item.destination is not None]
        chosen = [item for item in picked if item.destination is None]
        done = [self._apply_upscaled(item) for item in upscaled]
        if not chosen:
            return all(done)
        if not all(self._check_document(item) for item in chosen):
            return False
        group = None
        if len(chosen) > 1:
            group = layer_name(chosen[0].prompt, chosen[0].seed).rsplit(" (seed", 1)[0] + " (batch)"
        order = self.canvas.pixel_order
        document = self.canvas.document_id()
        sources = [(item.layer_name, item.region, item.png) for item in chosen]

        def decode() -> list[LayerImage]:
            return [
                LayerImage(
                    name, region, images.png_to_pixels(png, region.width, region.height, order)
                )
                for name, region, png in sources
            ]

        self._background(
            decode,
            lambda layers: self._insert(layers, group, [item.item_id for item in chosen], document),
            self.message.emit,
        )
        return True

    def _insert(
        self, layers: list[LayerImage], group: str | None, item_ids: list[int], document: str
    ) -> None:
        if self.canvas.document_id() != document:
            self.message.emit(
                "The document changed before the result could be applied; apply it again."
            )
            return
        try:
            self.canvas.insert_layers(layers, group)
        except CanvasError as exc:
            self.message.emit(str(exc))
            return
        for item_id in item_ids:
            item = self.history.get(item_id)
            if item is not None:
                item.applied = True
        self.history_changed.emit()
        self.applied.emit(item_ids)

    def _apply_upscaled(self, item: HistoryItem) -> bool:
        """An upscaled result: a new document (any document may be active), or a layer
        on top of its own document, scaled to the result's size first."""
        if item.destination is Destination.LAYER and not self._check_document(item):
            return False
        order = self.canvas.pixel_order
        document = self.canvas.document_id()
        name, region, png = item.layer_name, item.region, item.png

        def decode() -> LayerImage:
            return LayerImage(
                name, region, images.png_to_pixels(png, region.width, region.height, order)
            )

        def place(layer: LayerImage) -> None:
            try:
                if item.destination is Destination.NEW_DOCUMENT:
                    self.canvas.open_document(layer)
                else:
                    if self.canvas.document_id() != document:
                        self.message.emit(
                            "The document changed before the result could be applied; "
                            "apply it again."
                        )
                        return
                    if self.canvas.canvas_size() != (region.width, region.height):
                        self.canvas.scale_canvas(region.width, region.height)
                    self.canvas.insert_layers([layer], None)
            except CanvasError as exc:
                self.message.emit(str(exc))
                return
            item.applied = True
            self.history_changed.emit()
            self.applied.emit([item.item_id])

        self._background(decode, place, self.message.emit)
        return True

    def discard_items(self, item_ids: list[int]) -> None:
        for item_id in item_ids:
            item = self.history.remove(item_id)
            if item is not None:
                self._forget(item)
        self.history_changed.emit()
