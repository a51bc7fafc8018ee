"""The job queue: workers run jobs one at a time each, fairly across clients.

One GPU runs one diffusion at a time, so jobs wait here in memory. Each client has
its own FIFO line and jobs are taken from the lines in turn, so an artist who queues
eight batches does not starve another who queues one. The queue is capped; past the
cap `submit` raises `QueueFull` with a retry hint.

The queue does not know what a job *is*: it stores an opaque payload and hands it to
a `Worker` (one per GPU of this server, or one lane per remote replica, see
`kd_server.executors`), each on a thread of its own, with `RunHooks` through which
the worker reports model loading, progress and previews and learns about
cancellation. A plain `Runner` function is one worker. Jobs leave the fair line only
when a worker is free and ready for one (the dispatch), so positions stay exact and
a waiting job is cancelled at once; among the free workers the one that prefers the
job (`Worker.affinity`: its model is warm there) gets it, else the one idle longest.
The worker returns `Output`s whose `encode()` turns an image into PNG bytes;
encoding runs on separate threads so the worker's next diffusion starts at once.
Nothing here imports diffusers, so the queue is testable with a plain Python runner.

Every state change is applied before the event announcing it is published, so a
client that reads the job after an event sees at least that state. Finished jobs are
kept for `GET` within a time, count and byte budget, oldest dropped first.

Live jobs (`submit(..., live=True)`) are a client's frames of live painting, where
only the newest canvas state matters: a client's new live job takes the place of its
waiting live job and stops its running one at the next step (both end `cancelled`
with the reason `superseded`). Only that client's live jobs are touched, and the
replacement keeps its place in the line, so the turns between clients are unchanged.
A live job is never journaled: after a restart it would be a stale frame.

With `Durability`, every job is also recorded in a journal (`kd_server.journal`)
before `submit` returns, results are written to disk, and `recover` rebuilds the
queue of a new process from it: queued jobs wait again in their order, the job that
was running runs again from the start, finished results stay downloadable.
"""

from __future__ import annotations

import enum
import itertools
import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from kd_server.config import Settings
from kd_server.generation import Cancelled, EngineError
from kd_server.job_events import (
    SUPERSEDED,
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
from kd_server.journal import Journal, JournalError, StoredJob, read_result

log = logging.getLogger(__name__)

Publish = Callable[[str | None, JobEvent], None]

_DEFAULTS = Settings()


class JobStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELLED)


class Output(Protocol):
    """One generated image as the runner returns it; encoding is deferred."""

    index: int
    seed: int

    def encode(self) -> bytes: ...


class QueueFull(Exception):
    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(f"The queue is full ({limit} jobs waiting).")
        self.limit = limit
        self.retry_after = retry_after


class QueueClosed(Exception):
    """The server is shutting down and takes no more jobs."""


class JobNotFound(Exception):
    pass


class WorkerLost(Exception):
    """Raised by a worker whose machine or process went away mid-job: the job fails
    with `worker_lost` and this message; the queue and the other workers go on."""


class JobNotActive(Exception):
    """Cancelling a job that already ended."""

    def __init__(self, status: JobStatus) -> None:
        super().__init__(status.value)
        self.status = status


@dataclass(frozen=True)
class JobView:
    """A consistent snapshot of a job, safe to hand to another thread."""

    job_id: str
    client_id: str | None
    status: JobStatus
    position: int | None
    step: int
    total: int
    images: tuple[ResultRef, ...]
    error: JobError | None
    loading_model: str | None
    worker: str | None = None  # the worker that runs or ran it (not on the wire)
    started_at: float | None = None  # the queue's clock when a worker took it


@dataclass(frozen=True)
class WorkerView:
    """One worker as the queue sees it: for /v1/health, the benchmarks and tests."""

    name: str
    job_id: str | None  # the job it runs now
    jobs_run: int  # jobs handed to it since the start


@dataclass(frozen=True)
class QueueLimits:
    """The queue's cap and result retention. The defaults are the server settings'
    defaults (config.py), so the two cannot drift apart."""

    max_queue: int = _DEFAULTS.max_queue
    result_ttl_s: float = _DEFAULTS.result_ttl_s
    result_max_jobs: int = _DEFAULTS.result_max_jobs
    result_max_bytes: int = _DEFAULTS.result_max_bytes

    @classmethod
    def from_settings(cls, settings: Settings) -> QueueLimits:
        return cls(
            max_queue=settings.max_queue,
            result_ttl_s=settings.result_ttl_s,
            result_max_jobs=settings.result_max_jobs,
            result_max_bytes=settings.result_max_bytes,
        )


@dataclass
class _Image:
    index: int
    seed: int
    png: bytes | None  # None: only on disk (a result recovered after a restart)
    path: Path | None = None

    def data(self) -> bytes | None:
        if self.png is not None:
            return self.png
        return read_result(self.path) if self.path is not None else None


class QueueStorageError(Exception):
    """The journal could not record a new job, so it was not accepted."""


@dataclass(frozen=True)
class Durability:
    """The journal, and how the queue's opaque payloads become bytes and back."""

    journal: Journal
    encode: Callable[[Any], bytes]
    decode: Callable[[bytes], Any]


@dataclass(eq=False)
class _Job:
    id: str
    client_id: str | None
    payload: Any
    status: JobStatus = JobStatus.QUEUED
    position: int | None = None
    step: int = 0
    total: int = 0
    images: list[_Image] = field(default_factory=list)
    error: JobError | None = None
    loading_model: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    cancel_reason: Literal["superseded"] | None = None
    durable: bool = False  # recorded in the journal
    live: bool = False  # superseded by the same client's next live job
    generating: bool = False  # on the worker (a live job is stoppable only then)
    worker: str | None = None  # the name of the worker it was handed to

    def view(self) -> JobView:
        return JobView(
            job_id=self.id,
            client_id=self.client_id,
            status=self.status,
            position=self.position,
            step=self.step,
            total=self.total,
            images=tuple(ResultRef(i.index, i.seed) for i in self.images),
            error=self.error,
            loading_model=self.loading_model,
            worker=self.worker,
            started_at=self.started_at,
        )

    @property
    def png_bytes(self) -> int:
        return sum(len(i.png) for i in self.images if i.png is not None)


class Hooks(Protocol):
    """What a runner may call while it runs a job: `RunHooks`, or a stand-in in a
    process that relays them to the queue's process (`kd_server.executors.ray_serve`)."""

    def loading(self, model_name: str) -> None: ...
    def progress(self, step: int, total: int, preview: str | None = None) -> None: ...
    def preview(self, step: int, image: str) -> None: ...
    def warning(self, code: str, message: str) -> None: ...
    def should_cancel(self) -> bool: ...


class RunHooks:
    """What the runner may tell the queue about the job it runs (worker thread)."""

    def __init__(self, queue: JobQueue, job: _Job) -> None:
        self._queue = queue
        self._job = job

    def loading(self, model_name: str) -> None:
        """A checkpoint is about to be loaded: clients may show "loading <name>"."""
        self._queue._on_loading(self._job, model_name)

    def progress(self, step: int, total: int, preview: str | None = None) -> None:
        """Step `step` of `total` is done; `preview` is a base64 JPEG made with it."""
        self._queue._on_progress(self._job, step, total, preview)

    def preview(self, step: int, image: str) -> None:
        """A base64 JPEG of the job after `step`, made after that step's progress was
        reported, from any thread, before the runner returns."""
        self._queue._on_preview(self._job, step, image)

    def warning(self, code: str, message: str) -> None:
        """Something the job's client should know while the job carries on (e.g.
        `memory_mode_lowered`: it ran out of GPU memory and runs again in a lower
        memory mode, kd_server.memory_modes)."""
        with self._queue._cond:
            self._queue._emit(self._job, JobWarning(self._job.id, code, message))

    def should_cancel(self) -> bool:
        return self._job.cancel.is_set()


Runner = Callable[[Any, RunHooks], Sequence[Output]]


class Worker(Protocol):
    """Where jobs run, one at a time: a device of this server or a lane to a remote
    replica. The queue calls `affinity` and `ready` with its lock held, so both must
    answer at once (no I/O); `run` is called on the worker's own thread."""

    @property
    def name(self) -> str: ...

    def run(self, payload: Any, hooks: RunHooks) -> Sequence[Output]:
        """Run one job to the end; raise `Cancelled` or `EngineError` as a runner does."""
        ...

    def affinity(self, payload: Any) -> int:
        """How much this worker prefers the job: 0 none, more when its model is warm."""
        ...

    def ready(self) -> bool:
        """Whether it may be handed a job now (a lane whose replica is not up: no)."""
        ...


@dataclass(frozen=True)
class RunnerWorker:
    """A plain `Runner` function as the one worker of a queue."""

    runner: Runner
    name: str = "worker"

    def run(self, payload: Any, hooks: RunHooks) -> Sequence[Output]:
        return self.runner(payload, hooks)

    def affinity(self, payload: Any) -> int:
        return 0

    def ready(self) -> bool:
        return True


@dataclass(eq=False)
class _Lane:
    """One worker, its thread and the job handed to it."""

    worker: Worker
    job: _Job | None = None
    last_used: int = -1  # dispatch counter when it last got a job (idle longest: lowest)
    jobs_run: int = 0
    thread: threading.Thread | None = None


class JobQueue:
    """FIFO per client, round-robin across clients, one thread per worker."""

    def __init__(
        self,
        runner: Runner | Sequence[Worker],
        publish: Publish,
        limits: QueueLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
        durability: Durability | None = None,
    ) -> None:
        workers = [RunnerWorker(runner)] if callable(runner) else list(runner)
        if not workers:
            raise ValueError("a queue needs at least one worker")
        self._lanes = [_Lane(worker) for worker in workers]
        self._dispatches = itertools.count()
        self._started = False
        self._publish = publish
        self.limits = limits or QueueLimits()
        self._clock = clock
        self._cond = threading.Condition()
        self._jobs: dict[str, _Job] = {}
        self._lines: dict[str, deque[_Job]] = {}  # client key -> its waiting jobs
        self._turns: deque[str] = deque()  # client keys in the order they are served
        self._active: set[_Job] = set()  # running (generating or encoding)
        self._ended: deque[_Job] = deque()  # finished jobs, oldest first, for retention
        self._retained_bytes = 0
        self._durations: deque[float] = deque(maxlen=10)
        self._closing = False
        self._encoder = ThreadPoolExecutor(
            max_workers=len(self._lanes), thread_name_prefix="kd-encode"
        )
        self._durability = durability
        self._suspending = False  # stopping a durable queue: jobs are kept, not ended

    # ----------------------------------------------------------------- public

    def start(self) -> None:
        with self._cond:
            if self._started:
                return
            self._started = True
            for index, lane in enumerate(self._lanes):
                name = "kd-worker" if len(self._lanes) == 1 else f"kd-worker-{index}"
                lane.thread = threading.Thread(
                    target=self._work, args=(lane,), name=name, daemon=True
                )
                lane.thread.start()
            self._dispatch()

    def wake(self) -> None:
        """A worker may have become ready (a replica came up): hand out waiting jobs."""
        with self._cond:
            self._dispatch()

    def workers(self) -> list[WorkerView]:
        with self._cond:
            return [
                WorkerView(lane.worker.name, lane.job.id if lane.job else None, lane.jobs_run)
                for lane in self._lanes
            ]

    def submit(
        self,
        payload: Any,
        client_id: str | None = None,
        durable: bool = True,
        live: bool = False,
    ) -> JobView:
        """Queue a job; raises `QueueFull` past the cap, `QueueClosed` when stopping and
        `QueueStorageError` when a durable queue cannot record it. `durable=False`: a
        job nobody could collect after a restart (its caller waits on one HTTP request)
        is kept in memory only, so a restart does not run it for nobody. `live=True`:
        the job supersedes the client's earlier live jobs (see the module's docstring);
        it needs a `client_id`."""
        if live and client_id is None:
            raise ValueError("a live job needs a client_id: live jobs supersede per client")
        job = _Job(id=uuid.uuid4().hex, client_id=client_id, payload=payload, live=live)
        job.durable = durable and not live and self._durability is not None
        stored = self._durability.encode(payload) if self._durability and job.durable else None
        with self._cond:
            if self._closing:
                raise QueueClosed
            key = client_id or ""
            replaced = self._waiting_live(key) if live else None
            waiting = sum(len(line) for line in self._lines.values()) - (replaced is not None)
            if waiting >= self.limits.max_queue:
                raise QueueFull(self.limits.max_queue, self._retry_after())
            if self._durability is not None and stored is not None:  # before it is acknowledged
                try:
                    self._durability.journal.add(job.id, client_id, stored)
                except JournalError as exc:
                    raise QueueStorageError(str(exc)) from exc
            self._jobs[job.id] = job
            if live:
                self._stop_running_live(client_id)
            if replaced is not None:
                self._replace_waiting(replaced, job)
            else:
                if key not in self._lines:
                    self._lines[key] = deque()
                    self._turns.append(key)
                self._lines[key].append(job)
            self._reposition()
            self._emit(job, JobQueued(job.id, position=0 if job.position is None else job.position))
            view = job.view()  # as acknowledged: queued, whether or not it starts at once
            self._dispatch()
            self._cond.notify_all()
            return view

    def _waiting_live(self, key: str) -> _Job | None:
        """The client's waiting live job (there is at most one), lock held."""
        return next((job for job in self._lines.get(key, ()) if job.live), None)

    def _replace_waiting(self, old: _Job, new: _Job) -> None:
        """`new` takes `old`'s place in its client's line; `old` ends superseded."""
        line = self._lines[old.client_id or ""]
        line[line.index(old)] = new
        new.position = old.position
        old.cancel_reason = SUPERSEDED
        self._end(old, JobStatus.CANCELLED)

    def _stop_running_live(self, client_id: str | None) -> None:
        """Ask the client's live job on the worker to stop at its next step (one that
        has none left finishes, see `_cancelled`). One whose pictures are already
        encoding is left to finish: its frame is moments away."""
        for job in self._active:
            stale = job.live and job.client_id == client_id and job.generating
            if stale and not job.cancel.is_set():
                job.cancel_reason = SUPERSEDED
                job.cancel.set()

    def get(self, job_id: str) -> JobView:
        with self._cond:
            self._prune()
            return self._find(job_id).view()

    def image(self, job_id: str, index: int) -> bytes | None:
        """The PNG of one result, or None when the job has no such image (yet)."""
        with self._cond:
            self._prune()
            job = self._find(job_id)
            for image in job.images:
                if image.index == index:
                    return image.data()
            return None

    def cancel(self, job_id: str) -> JobView:
        """Cancel a queued job at once, or ask the running one to stop at its next step."""
        with self._cond:
            job = self._find(job_id)
            if job.status.final:
                raise JobNotActive(job.status)
            if job.status is JobStatus.QUEUED:
                self._remove_waiting(job)
                self._end(job, JobStatus.CANCELLED)
                self._reposition()
            else:
                job.cancel_reason = None  # asked for: it ends cancelled, whatever its step
                job.cancel.set()
            return job.view()

    def jobs_of(self, client_id: str) -> list[JobView]:
        """The jobs of one client the queue knows (waiting, running, or kept)."""
        with self._cond:
            self._prune()
            return [job.view() for job in self._jobs.values() if job.client_id == client_id]

    def recover(self) -> int:
        """Rebuild the queue from the journal; call before `start`. Returns the number
        of jobs recovered."""
        if self._durability is None:
            return 0
        stored = self._durability.journal.load()
        now_wall = time.time()
        with self._cond:
            for item in stored:
                if item.status in (JobStatus.QUEUED.value, JobStatus.RUNNING.value):
                    self._requeue(item)
            ended = [item for item in stored if item.status not in ("queued", "running")]
            for item in sorted(ended, key=lambda item: item.ended_at or 0.0):
                self._restore_ended(item, now_wall)
            self._reposition()
            self._prune()
        if stored:
            log.info("Recovered %d jobs from %s", len(stored), self._durability.journal.state_dir)
        return len(stored)

    def _requeue(self, item: StoredJob) -> None:
        """A job that had not finished waits again; one that was running starts over."""
        assert self._durability is not None
        journal = self._durability.journal
        try:
            payload = self._durability.decode(item.payload)
        except Exception as exc:
            log.error("Job %s cannot be read back (%s); it fails", item.job_id, exc)
            job = _Job(id=item.job_id, client_id=item.client_id, payload=None, durable=True)
            self._jobs[job.id] = job
            self._end(job, JobStatus.FAILED, _INPUTS_LOST)
            return
        journal.clear_results(item.job_id)
        job = _Job(id=item.job_id, client_id=item.client_id, payload=payload, durable=True)
        if item.status == JobStatus.RUNNING.value:
            self._record(job, JobStatus.QUEUED)
        self._jobs[job.id] = job
        key = job.client_id or ""
        if key not in self._lines:
            self._lines[key] = deque()
            self._turns.append(key)
        self._lines[key].append(job)

    def _restore_ended(self, item: StoredJob, now_wall: float) -> None:
        """A job that had ended: its state and its results on disk, for retention."""
        job = _Job(id=item.job_id, client_id=item.client_id, payload=None, durable=True)
        job.status = JobStatus(item.status)
        if item.error_code is not None:
            job.error = JobError(item.error_code, item.error_message or "")
        job.images = [_Image(r.index, r.seed, None, r.path) for r in item.results]
        age = max(0.0, now_wall - (item.ended_at if item.ended_at is not None else now_wall))
        job.ended_at = self._clock() - age
        self._jobs[job.id] = job
        self._ended.append(job)

    def queue_length(self) -> int:
        """Jobs waiting, not counting the running one."""
        with self._cond:
            return sum(len(line) for line in self._lines.values())

    def running_job(self) -> str | None:
        running = self.running_jobs()
        return running[0] if running else None

    def running_jobs(self) -> list[str]:
        with self._cond:
            return [job.id for job in self._active if job.status is JobStatus.RUNNING]

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the threads. Without a journal every job that has not ended is
        cancelled and its client told; with one, jobs are left as they are in the
        journal (the running one is interrupted) and the next process resumes them."""
        with self._cond:
            self._closing = True
            self._suspending = self._durability is not None
            for line in list(self._lines.values()):
                for job in list(line):
                    self._remove_waiting(job)
                    self._end(job, JobStatus.CANCELLED)  # a durable job is kept instead
            for job in self._active:
                job.cancel_reason = None
                job.cancel.set()
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for lane in self._lanes:
            if lane.thread is not None:
                lane.thread.join(max(0.0, deadline - time.monotonic()))
                if lane.thread.is_alive():
                    log.warning("The running job did not stop within %.0f s.", timeout)
        self._encoder.shutdown(wait=True)

    # ----------------------------------------------------------------- worker

    def _dispatch(self) -> None:
        """Hand waiting jobs, in their fair order, to free ready workers (lock held).
        Only as many leave the line as there are workers to take them."""
        if not self._started or self._closing:
            return
        while self._turns:
            free = [lane for lane in self._lanes if lane.job is None and self._ready(lane)]
            if not free:
                return
            job = self._next_job()
            lane = max(free, key=lambda lane: (self._affinity(lane, job), -lane.last_used))
            job.status = JobStatus.RUNNING
            job.position = None
            job.started_at = self._clock()
            job.generating = True
            job.worker = lane.worker.name
            lane.job, lane.last_used = job, next(self._dispatches)
            lane.jobs_run += 1
            self._active.add(job)
            self._reposition()
            self._emit(job, JobStarted(job.id, loading_model=None))
            self._cond.notify_all()

    @staticmethod
    def _affinity(lane: _Lane, job: _Job) -> int:
        try:
            return lane.worker.affinity(job.payload)
        except Exception:  # a preference only: a broken one must not stop the dispatch
            log.exception("Worker %s could not rate a job", lane.worker.name)
            return 0

    @staticmethod
    def _ready(lane: _Lane) -> bool:
        try:
            return lane.worker.ready()
        except Exception:
            log.exception("Worker %s could not say whether it is ready", lane.worker.name)
            return False

    def _work(self, lane: _Lane) -> None:
        """A worker's thread: run each job handed to it, then ask for the next."""
        while True:
            with self._cond:
                while lane.job is None and not self._closing:
                    self._cond.wait()
                job = lane.job
                if job is None:
                    return
            if self._closing:  # handed over just before the stop: it never started
                self._finish(job, JobStatus.CANCELLED)
            else:
                self._record(job, JobStatus.RUNNING)
                self._run(lane.worker, job)
            with self._cond:
                lane.job = None
                self._dispatch()

    def _run(self, worker: Worker, job: _Job) -> None:
        """Run one job on a worker's thread; failures end the job, never the worker."""
        try:
            try:
                outputs = worker.run(job.payload, RunHooks(self, job))
            finally:
                with self._cond:
                    job.generating = False
        except Cancelled:
            self._finish(job, JobStatus.CANCELLED)
        except EngineError as exc:
            self._finish(job, JobStatus.FAILED, JobError(exc.code.value, exc.message))
        except WorkerLost as exc:
            self._finish(job, JobStatus.FAILED, JobError("worker_lost", str(exc)))
        except Exception:
            log.exception("Job %s failed unexpectedly", job.id)
            self._finish(job, JobStatus.FAILED, _INTERNAL_ERROR)
        else:
            if self._cancelled(job):
                self._finish(job, JobStatus.CANCELLED)
            else:
                self._encoder.submit(self._deliver, job, list(outputs))

    def _deliver(self, job: _Job, outputs: list[Output]) -> None:
        """Encode and announce each result, then finish the job (encoder thread)."""
        for output in outputs:
            if self._cancelled(job):
                self._finish(job, JobStatus.CANCELLED)
                return
            try:
                png = output.encode()
            except Exception:
                log.exception("Encoding image %d of job %s failed", output.index, job.id)
                self._finish(job, JobStatus.FAILED, _INTERNAL_ERROR)
                return
            path = self._save_result(job, output.index, output.seed, png)
            with self._cond:
                job.images.append(_Image(output.index, output.seed, png, path))
                self._retained_bytes += len(png)
                self._emit(job, JobResult(job.id, ResultRef(output.index, output.seed)))
        self._finish(job, JobStatus.CANCELLED if self._cancelled(job) else JobStatus.FINISHED)

    @staticmethod
    def _cancelled(job: _Job) -> bool:
        """Whether a job whose runner returned ends cancelled. A superseded live job is
        stopped at its next step; one that had no step left (it was decoding) finishes:
        its frame is newer than what the client shows."""
        return job.cancel.is_set() and job.cancel_reason != SUPERSEDED

    def _save_result(self, job: _Job, index: int, seed: int, png: bytes) -> Path | None:
        """Write a result to disk (durable queue); a failed write is reported to the
        job's client and logged, and the result stays available from memory."""
        if self._durability is None or not job.durable:
            return None
        try:
            return self._durability.journal.add_result(job.id, index, seed, png)
        except JournalError as exc:
            log.error("Job %s, image %d: %s", job.id, index, exc)
            with self._cond:
                self._emit(job, JobWarning(job.id, "result_not_saved", str(exc)))
            return None

    def _record(
        self, job: _Job, status: JobStatus, error: JobError | None = None, ended: bool = False
    ) -> None:
        """A state change into the journal; a failure is logged, the queue goes on."""
        if self._durability is None or not job.durable:
            return
        try:
            detail = (error.code, error.message) if error is not None else None
            self._durability.journal.set_status(job.id, status.value, detail, ended)
        except JournalError as exc:
            log.error("Job %s: %s", job.id, exc)

    def _on_loading(self, job: _Job, model_name: str) -> None:
        with self._cond:
            job.loading_model = model_name
            self._emit(job, JobStarted(job.id, loading_model=model_name))

    def _on_progress(self, job: _Job, step: int, total: int, preview: str | None) -> None:
        with self._cond:
            job.loading_model = None
            job.step, job.total = step, total
            self._emit(job, JobProgress(job.id, step=step, total=total))
            if preview is not None:
                self._emit(job, JobPreview(job.id, step=step, image=preview))

    def _on_preview(self, job: _Job, step: int, image: str) -> None:
        with self._cond:
            self._emit(job, JobPreview(job.id, step=step, image=image))

    # ---------------------------------------------------------------- helpers

    def _finish(self, job: _Job, status: JobStatus, error: JobError | None = None) -> None:
        with self._cond:
            self._active.discard(job)
            if job.started_at is not None:
                self._durations.append(self._clock() - job.started_at)
            self._end(job, status, error)

    def _end(self, job: _Job, status: JobStatus, error: JobError | None = None) -> None:
        """Record that `job` ended and announce it (lock held)."""
        if self._suspending and job.durable:
            return  # interrupted by the shutdown: the journal still has it to resume
        job.status, job.error, job.position = status, error, None
        job.loading_model = None
        job.ended_at = self._clock()
        self._ended.append(job)
        self._record(job, status, error, ended=True)
        if status is JobStatus.FINISHED:
            self._emit(
                job, JobFinished(job.id, tuple(ResultRef(i.index, i.seed) for i in job.images))
            )
        elif status is JobStatus.FAILED:
            self._emit(job, JobFailed(job.id, error or _INTERNAL_ERROR))
        else:
            self._emit(job, JobCancelled(job.id, reason=job.cancel_reason))
        self._prune()

    def _emit(self, job: _Job, event: JobEvent) -> None:
        """Publish one event (lock held, so one job's events keep their order)."""
        try:
            self._publish(job.client_id, event)
        except Exception:  # a broken listener must not break the queue
            log.exception("Publishing a %s event failed", event.kind)

    def _find(self, job_id: str) -> _Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def _next_job(self) -> _Job:
        key = self._turns.popleft()
        line = self._lines[key]
        job = line.popleft()
        if line:
            self._turns.append(key)
        else:
            del self._lines[key]
        return job

    def _remove_waiting(self, job: _Job) -> None:
        key = job.client_id or ""
        line = self._lines[key]
        line.remove(job)
        if not line:
            del self._lines[key]
            self._turns.remove(key)

    def _waiting_order(self) -> list[_Job]:
        """The order in which the waiting jobs will start (round-robin over clients)."""
        lines = {key: deque(line) for key, line in self._lines.items()}
        turns = deque(self._turns)
        order: list[_Job] = []
        while turns:
            key = turns.popleft()
            order.append(lines[key].popleft())
            if lines[key]:
                turns.append(key)
        return order

    def _reposition(self) -> None:
        """Renumber waiting jobs; announce changed positions with `queued` events.

        A newly submitted job (no position yet) is announced by `submit` itself.
        """
        for position, job in enumerate(self._waiting_order()):
            previous, job.position = job.position, position
            if previous is not None and previous != position:
                self._emit(job, JobQueued(job.id, position=position))

    def _retry_after(self) -> int:
        """Seconds until a place is likely to free up: about one job's duration."""
        if not self._durations:
            return 10
        mean = sum(self._durations) / len(self._durations) / len(self._lanes)
        return max(1, min(600, math.ceil(mean)))

    def _prune(self) -> None:
        """Forget the oldest ended jobs beyond the time, count and byte budget."""
        now = self._clock()
        limits = self.limits
        while self._ended:
            oldest = self._ended[0]
            ended_at = now if oldest.ended_at is None else oldest.ended_at
            expired = now - ended_at > limits.result_ttl_s
            over = len(self._ended) > limits.result_max_jobs or (
                self._retained_bytes > limits.result_max_bytes and len(self._ended) > 1
            )
            if not (expired or over):
                return
            self._ended.popleft()
            self._jobs.pop(oldest.id, None)
            self._retained_bytes -= oldest.png_bytes
            if self._durability is not None and oldest.durable:
                try:
                    self._durability.journal.forget(oldest.id)
                except JournalError as exc:
                    log.error("Job %s: %s", oldest.id, exc)


_INPUTS_LOST = JobError(
    "inputs_lost",
    "The server restarted and could not read this job's inputs back; submit it again.",
)
_INTERNAL_ERROR = JobError(
    "internal_error",
    "The server hit an unexpected error while running this job; its log has the details.",
)
