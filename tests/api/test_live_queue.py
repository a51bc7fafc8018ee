"""Live jobs in the queue on its own (plain Python runner, no diffusion): a client's new
live job replaces its waiting one and stops its running one at the next step; other
jobs and other clients are untouched; turns between clients stay fair."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kd_server.generation import Cancelled
from kd_server.job_events import JobCancelled, JobEvent
from kd_server.jobqueue import Durability, JobQueue, JobStatus, QueueFull, QueueLimits, RunHooks
from kd_server.journal import Journal


@dataclass
class Png:
    index: int
    seed: int

    def encode(self) -> bytes:
        return b"png"


@dataclass
class Frame:
    """A job that runs one step, then waits at `gate` step by step until it opens;
    with `decoded`, it then "decodes" (no step, no cancel check) until that opens."""

    name: str
    gate: threading.Event = field(default_factory=threading.Event)
    steps_run: int = 0
    decoding: threading.Event = field(default_factory=threading.Event)
    decoded: threading.Event | None = None


def runner(frame: Frame, hooks: RunHooks) -> list[Png]:
    while True:
        if hooks.should_cancel():
            raise Cancelled
        frame.steps_run += 1
        hooks.progress(frame.steps_run, frame.steps_run + 1)
        if frame.gate.wait(0.01):
            break
    frame.decoding.set()
    if frame.decoded is not None:
        assert frame.decoded.wait(10)
    return [Png(0, 1)]


class Events:
    def __init__(self) -> None:
        self.items: list[tuple[str | None, JobEvent]] = []
        self.cond = threading.Condition()

    def __call__(self, client_id: str | None, event: JobEvent) -> None:
        with self.cond:
            self.items.append((client_id, event))
            self.cond.notify_all()

    def wait(self, job_id: str, kind: str, timeout: float = 10) -> JobEvent:
        def found() -> JobEvent | None:
            return next((e for _, e in self.items if e.job_id == job_id and e.kind == kind), None)

        with self.cond:
            assert self.cond.wait_for(lambda: found() is not None, timeout), self.items
        event = found()
        assert event is not None
        return event

    def kinds(self, job_id: str) -> list[str]:
        with self.cond:
            return [e.kind for _, e in self.items if e.job_id == job_id]


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def queue(events: Events) -> Iterator[JobQueue]:
    q = JobQueue(runner, events, QueueLimits(max_queue=3))
    q.start()
    yield q
    q.stop(timeout=10)


def running(queue: JobQueue, events: Events, frame: Frame, client: str, live: bool) -> str:
    """Submit `frame` and wait until it is on the worker."""
    job_id = queue.submit(frame, client, live=live).job_id
    events.wait(job_id, "progress")
    return job_id


def test_waiting_live_job_is_replaced_in_its_place(queue: JobQueue, events: Events) -> None:
    blocker = Frame("blocker")
    blocker_id = running(queue, events, blocker, "b", live=False)
    first = queue.submit(Frame("first"), "a", live=True)
    other = queue.submit(Frame("other client"), "b")
    assert (first.position, other.position) == (0, 1)

    second = queue.submit(Frame("second"), "a", live=True)

    cancelled = events.wait(first.job_id, "cancelled")
    assert isinstance(cancelled, JobCancelled) and cancelled.reason == "superseded"
    assert second.position == 0  # the newer frame waits where the older one did
    assert queue.get(other.job_id).position == 1  # the other client's turn is unchanged
    assert queue.get(other.job_id).status is JobStatus.QUEUED
    assert events.kinds(other.job_id) == ["queued"]  # nothing happened to it
    assert queue.get(blocker_id).status is JobStatus.RUNNING  # not a live job: untouched


def test_running_live_job_stops_at_its_next_step(queue: JobQueue, events: Events) -> None:
    stale = Frame("stale")
    stale_id = running(queue, events, stale, "a", live=True)
    fresh = Frame("fresh")
    fresh.gate.set()

    fresh_id = queue.submit(fresh, "a", live=True).job_id

    cancelled = events.wait(stale_id, "cancelled")
    assert isinstance(cancelled, JobCancelled) and cancelled.reason == "superseded"
    events.wait(fresh_id, "finished")
    assert queue.get(stale_id).images == ()


def test_a_frame_past_its_last_step_still_finishes(queue: JobQueue, events: Events) -> None:
    decoding = Frame("decoding", decoded=threading.Event())
    decoding.gate.set()
    decoding_id = queue.submit(decoding, "a", live=True).job_id
    assert decoding.decoding.wait(10)
    fresh = Frame("fresh")
    fresh.gate.set()
    fresh_id = queue.submit(fresh, "a", live=True).job_id
    assert decoding.decoded is not None
    decoding.decoded.set()
    events.wait(decoding_id, "finished")  # no step was left to stop it at
    events.wait(fresh_id, "finished")
    assert "cancelled" not in events.kinds(decoding_id)


def test_a_cancel_asked_for_a_superseded_frame_still_cancels(
    queue: JobQueue, events: Events
) -> None:
    decoding = Frame("decoding", decoded=threading.Event())
    decoding.gate.set()
    decoding_id = queue.submit(decoding, "a", live=True).job_id
    assert decoding.decoding.wait(10)
    queue.submit(Frame("fresh"), "a", live=True)
    queue.cancel(decoding_id)
    assert decoding.decoded is not None
    decoding.decoded.set()
    cancelled = events.wait(decoding_id, "cancelled")
    assert isinstance(cancelled, JobCancelled) and cancelled.reason is None


def test_other_clients_and_plain_jobs_are_untouched(queue: JobQueue, events: Events) -> None:
    theirs = Frame("their live frame")
    theirs_id = running(queue, events, theirs, "b", live=True)
    mine_plain = queue.submit(Frame("my plain job"), "a").job_id

    mine_live = queue.submit(Frame("my live frame"), "a", live=True).job_id
    second_live = queue.submit(Frame("my next live frame"), "a", live=True).job_id

    events.wait(mine_live, "cancelled")  # my own waiting live frame is replaced ...
    assert queue.get(theirs_id).status is JobStatus.RUNNING  # ... theirs runs on
    assert queue.get(mine_plain).status is JobStatus.QUEUED  # ... my plain job waits on
    assert queue.get(second_live).position == 1  # behind my plain job, as submitted
    assert "cancelled" not in events.kinds(theirs_id)
    theirs.gate.set()
    events.wait(theirs_id, "finished")


def test_a_live_job_needs_a_client(queue: JobQueue) -> None:
    with pytest.raises(ValueError, match="client_id"):
        queue.submit(Frame("anonymous"), None, live=True)


def test_replacing_needs_no_free_place(queue: JobQueue, events: Events) -> None:
    running(queue, events, Frame("blocker"), "b", live=False)
    queue.submit(Frame("x"), "b")
    queue.submit(Frame("y"), "b")
    queue.submit(Frame("frame 1"), "a", live=True)  # the queue is now full (3)
    with pytest.raises(QueueFull):
        queue.submit(Frame("plain"), "a")
    replacement = queue.submit(Frame("frame 2"), "a", live=True)  # takes frame 1's place
    assert replacement.status is JobStatus.QUEUED


def test_live_jobs_are_not_journaled(tmp_path: Path, events: Events) -> None:
    frames: dict[str, Frame] = {"plain": Frame("plain"), "live": Frame("live")}
    journal = Journal(tmp_path)
    durability = Durability(
        journal,
        lambda frame: json.dumps(frame.name).encode(),
        lambda data: frames[json.loads(data)],
    )
    queue = JobQueue(runner, events, durability=durability)
    try:
        plain = queue.submit(frames["plain"], "a").job_id
        live = queue.submit(frames["live"], "a", live=True).job_id
        stored = {job.job_id for job in journal.load()}
        assert plain in stored and live not in stored
    finally:
        queue.stop(timeout=10)
