"""The job queue on its own, driven by a plain Python runner (no diffusion, no HTTP)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from kd_server.generation import Cancelled, EngineError, EngineErrorCode
from kd_server.job_events import JobError, JobEvent
from kd_server.jobqueue import (
    JobNotActive,
    JobNotFound,
    JobQueue,
    JobStatus,
    QueueFull,
    QueueLimits,
    RunHooks,
)


@dataclass
class Png:
    index: int
    seed: int
    data: bytes = b"png"

    def encode(self) -> bytes:
        return self.data


@dataclass
class Work:
    """What the test runner does: `steps` steps, optionally held at a gate first."""

    steps: int = 2
    images: int = 1
    gate: threading.Event | None = None
    fail: Exception | None = None
    size: int = 3


def runner(work: Work, hooks: RunHooks) -> list[Png]:
    if work.gate is not None:
        while not work.gate.wait(0.01):
            if hooks.should_cancel():
                raise Cancelled
    if work.fail is not None:
        raise work.fail
    for step in range(1, work.steps + 1):
        if hooks.should_cancel():
            raise Cancelled
        hooks.progress(step, work.steps, "jpeg" if step == work.steps else None)
    return [Png(i, 100 + i, b"x" * work.size) for i in range(work.images)]


class Recorder:
    """Collects published events; lets a test wait for one."""

    def __init__(self) -> None:
        self.events: list[tuple[str | None, JobEvent]] = []
        self._cond = threading.Condition()

    def __call__(self, client_id: str | None, event: JobEvent) -> None:
        with self._cond:
            self.events.append((client_id, event))
            self._cond.notify_all()

    def wait_for(self, job_id: str, kind: str, timeout: float = 10) -> Any:
        with self._cond:
            ok = self._cond.wait_for(lambda: self.find(job_id, kind) is not None, timeout)
            assert ok, f"no {kind} event for {job_id}: {self.events}"
            return self.find(job_id, kind)  # type: ignore[return-value]

    def find(self, job_id: str, kind: str) -> JobEvent | None:
        for _, event in self.events:
            if event.job_id == job_id and event.kind == kind:
                return event
        return None

    def types(self, job_id: str) -> list[str]:
        return [e.kind for _, e in self.events if e.job_id == job_id]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def queue(recorder: Recorder) -> Iterator[JobQueue]:
    q = JobQueue(runner, recorder, QueueLimits(max_queue=4))
    q.start()
    yield q
    q.stop(timeout=10)


def test_job_runs_and_reports_in_order(queue: JobQueue, recorder: Recorder) -> None:
    view = queue.submit(Work(steps=2, images=2), client_id="a")
    assert view.status is JobStatus.QUEUED and view.position == 0
    recorder.wait_for(view.job_id, "finished")
    assert recorder.types(view.job_id) == [
        "queued",
        "started",
        "progress",
        "progress",
        "preview",
        "result",
        "result",
        "finished",
    ]
    done = queue.get(view.job_id)
    assert done.status is JobStatus.FINISHED
    assert [i.seed for i in done.images] == [100, 101]
    assert queue.image(view.job_id, 1) == b"xxx"


def test_state_is_updated_before_event(recorder: Recorder) -> None:
    seen: list[JobStatus] = []
    holder: dict[str, JobQueue] = {}

    def publish(client_id: str | None, event: JobEvent) -> None:
        if event.kind in ("finished", "started"):
            seen.append(holder["q"]._jobs[event.job_id].status)
        recorder(client_id, event)

    q = JobQueue(runner, publish)
    holder["q"] = q
    q.start()
    try:
        job = q.submit(Work())
        recorder.wait_for(job.job_id, "finished")
    finally:
        q.stop()
    assert seen == [JobStatus.RUNNING, JobStatus.FINISHED]


def test_clients_take_turns(queue: JobQueue, recorder: Recorder) -> None:
    gate = threading.Event()
    blocker = queue.submit(Work(gate=gate), client_id="a")
    recorder.wait_for(blocker.job_id, "started")
    a1 = queue.submit(Work(), client_id="a")
    a2 = queue.submit(Work(), client_id="a")
    b1 = queue.submit(Work(), client_id="b")
    assert queue.get(b1.job_id).position == 1  # b goes before a's second job
    assert queue.get(a2.job_id).position == 2
    moved = [e for _, e in recorder.events if e.job_id == a2.job_id and e.kind == "queued"]
    assert [e.position for e in moved] == [1, 2]  # type: ignore[attr-defined]  # re-announced when b cut in
    gate.set()
    for job in (a1, a2, b1):
        recorder.wait_for(job.job_id, "finished")
    starts = [e.job_id for _, e in recorder.events if e.kind == "started"]
    assert starts == [blocker.job_id, a1.job_id, b1.job_id, a2.job_id]


def test_queue_cap(queue: JobQueue, recorder: Recorder) -> None:
    gate = threading.Event()
    running = queue.submit(Work(gate=gate))
    recorder.wait_for(running.job_id, "started")
    waiting = [queue.submit(Work(gate=gate)) for _ in range(4)]
    with pytest.raises(QueueFull) as info:
        queue.submit(Work())
    assert info.value.retry_after >= 1
    for job in waiting:
        queue.cancel(job.job_id)
    queue.cancel(running.job_id)
    recorder.wait_for(running.job_id, "cancelled")


def test_cancel_queued_and_running(queue: JobQueue, recorder: Recorder) -> None:
    gate = threading.Event()
    running = queue.submit(Work(gate=gate), client_id="a")
    recorder.wait_for(running.job_id, "started")
    waiting = queue.submit(Work(), client_id="a")
    assert queue.cancel(waiting.job_id).status is JobStatus.CANCELLED
    assert queue.cancel(running.job_id).status is JobStatus.RUNNING  # asked to stop
    recorder.wait_for(running.job_id, "cancelled")
    assert queue.get(running.job_id).status is JobStatus.CANCELLED
    with pytest.raises(JobNotActive):
        queue.cancel(running.job_id)
    with pytest.raises(JobNotFound):
        queue.cancel("nope")


def test_failures_end_the_job_not_the_worker(queue: JobQueue, recorder: Recorder) -> None:
    oom = queue.submit(Work(fail=EngineError(EngineErrorCode.OUT_OF_MEMORY, "Too big.")))
    bug = queue.submit(Work(fail=RuntimeError("secret traceback detail")))
    after = queue.submit(Work())
    failed = recorder.wait_for(oom.job_id, "failed")
    assert failed.error == JobError("out_of_memory", "Too big.")
    internal = recorder.wait_for(bug.job_id, "failed")
    assert internal.error.code == "internal_error"
    assert "secret" not in internal.error.message
    recorder.wait_for(after.job_id, "finished")


def test_stop_cancels_everything(recorder: Recorder) -> None:
    q = JobQueue(runner, recorder)
    q.start()
    gate = threading.Event()
    running = q.submit(Work(gate=gate))
    recorder.wait_for(running.job_id, "started")
    waiting = q.submit(Work())
    q.stop(timeout=10)
    assert recorder.find(running.job_id, "cancelled")
    assert recorder.find(waiting.job_id, "cancelled")


def test_retention_by_count_and_bytes(recorder: Recorder) -> None:
    q = JobQueue(runner, recorder, QueueLimits(result_max_jobs=2, result_max_bytes=25))
    q.start()
    try:
        jobs = [q.submit(Work(size=10)) for _ in range(3)]
        for job in jobs:
            recorder.wait_for(job.job_id, "finished")
        with pytest.raises(JobNotFound):
            q.get(jobs[0].job_id)
        assert q.get(jobs[2].job_id).status is JobStatus.FINISHED
        big = q.submit(Work(size=30))  # alone over the byte budget: newest is kept
        recorder.wait_for(big.job_id, "finished")
        assert q.image(big.job_id, 0) == b"x" * 30
        with pytest.raises(JobNotFound):
            q.get(jobs[2].job_id)
    finally:
        q.stop()


def test_retention_by_time(recorder: Recorder) -> None:
    now = [0.0]
    q = JobQueue(runner, recorder, QueueLimits(result_ttl_s=60), clock=lambda: now[0])
    q.start()
    try:
        job = q.submit(Work())
        recorder.wait_for(job.job_id, "finished")
        now[0] = 61.0
        with pytest.raises(JobNotFound):
            q.get(job.job_id)
    finally:
        q.stop()


def test_expired_images_are_not_served(recorder: Recorder) -> None:
    """The image route honours the TTL too, even when nothing else read the queue."""
    now = [0.0]
    q = JobQueue(runner, recorder, QueueLimits(result_ttl_s=60), clock=lambda: now[0])
    q.start()
    try:
        job = q.submit(Work())
        recorder.wait_for(job.job_id, "finished")
        assert q.image(job.job_id, 0) == b"xxx"
        now[0] = 61.0
        with pytest.raises(JobNotFound):
            q.image(job.job_id, 0)
    finally:
        q.stop()
