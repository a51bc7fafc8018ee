"""The durable queue on its own: a real SQLite journal and result files in a temporary
folder, a plain Python runner, and "restarts" made by building a new queue on the same
folder (the process-level kill and restart is in tests/hardening/test_restart.py)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from kd_server.generation import (
    Conditioning,
    GenerationRequest,
    ImageInputs,
    LoraSpec,
    Sampling,
    Task,
)
from kd_server.job_events import JobEvent
from kd_server.jobqueue import Durability, JobQueue, JobStatus, RunHooks
from kd_server.journal import DB_NAME, Journal
from kd_server.request_codec import decode_request, encode_request

GATES: dict[str, threading.Event] = {}  # payloads are stored as JSON: gates by name


@dataclass
class Png:
    index: int
    seed: int
    data: bytes

    def encode(self) -> bytes:
        return self.data


def runner(work: dict, hooks: RunHooks) -> list[Png]:
    """Payload {"name", "images", "gate"?}: image i's bytes name the job and index."""
    gate = GATES.get(work.get("gate", ""))
    while gate is not None and not gate.wait(0.01):
        if hooks.should_cancel():
            from kd_server.generation import Cancelled

            raise Cancelled
    hooks.progress(1, 1)
    return [Png(i, 10 + i, f"{work['name']}-{i}".encode()) for i in range(work["images"])]


def durable(folder: Path) -> Durability:
    return Durability(
        Journal(folder), lambda work: json.dumps(work).encode(), lambda data: json.loads(data)
    )


class Events:
    def __init__(self) -> None:
        self.items: list[JobEvent] = []
        self.cond = threading.Condition()

    def __call__(self, client_id: str | None, event: JobEvent) -> None:
        with self.cond:
            self.items.append(event)
            self.cond.notify_all()

    def wait_ended(self, job_ids: set[str], timeout: float = 30) -> None:
        def done() -> bool:
            ended = {e.job_id for e in self.items if e.kind in ("finished", "failed", "cancelled")}
            return job_ids <= ended

        with self.cond:
            assert self.cond.wait_for(done, timeout), self.items


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "state"
    GATES.clear()


def test_a_new_process_runs_what_the_last_one_left_in_order(folder: Path) -> None:
    first = JobQueue(runner, Events(), durability=durable(folder))  # never started: a crash
    a1 = first.submit({"name": "a1", "images": 2}, client_id="a").job_id
    b1 = first.submit({"name": "b1", "images": 1}, client_id="b").job_id
    a2 = first.submit({"name": "a2", "images": 1}, client_id="a").job_id
    journal = Journal(folder)  # as the killed process left it: a1 was running, one image out
    journal.set_status(a1, "running")
    partial = journal.add_result(a1, 0, 99, b"half of a batch")

    events = Events()
    second = JobQueue(runner, events, durability=durable(folder))
    assert second.recover() == 3
    assert not partial.exists()  # a1 starts over: no duplicate image 0
    assert [second.get(j).position for j in (a1, b1, a2)] == [0, 1, 2]
    second.start()
    events.wait_ended({a1, b1, a2})
    second.stop()
    started = [e.job_id for e in events.items if e.kind == "started"]
    assert started == [a1, b1, a2]  # the clients' turns, as before the crash
    assert [r.seed for r in second.get(a1).images] == [10, 11]  # once each

    third = JobQueue(runner, Events(), durability=durable(folder))
    third.recover()
    assert third.get(a1).status is JobStatus.FINISHED
    assert third.image(a1, 1) == b"a1-1"  # read back from the outputs folder
    assert third.image(b1, 0) == b"b1-0"


def test_a_clean_stop_keeps_the_queue_for_the_next_process(folder: Path) -> None:
    GATES["hold"] = threading.Event()
    events = Events()
    first = JobQueue(runner, events, durability=durable(folder))
    first.start()
    running = first.submit({"name": "r", "images": 1, "gate": "hold"}, client_id="a").job_id
    waiting = first.submit({"name": "w", "images": 1}, client_id="a").job_id
    first.stop()
    assert not [e for e in events.items if e.kind == "cancelled"]  # nobody was told "cancelled"
    GATES["hold"].set()
    events = Events()
    second = JobQueue(runner, events, durability=durable(folder))
    second.recover()
    second.start()
    events.wait_ended({running, waiting})
    second.stop()
    assert second.image(running, 0) == b"r-0" and second.image(waiting, 0) == b"w-0"


def test_inputs_that_cannot_be_read_back_fail_the_job_clearly(folder: Path) -> None:
    first = JobQueue(runner, Events(), durability=durable(folder))
    job = first.submit({"name": "x", "images": 1}, client_id="a").job_id

    def unreadable(data: bytes) -> dict:
        raise ValueError("a format from another version")

    journal = Journal(folder)
    second = JobQueue(runner, Events(), durability=Durability(journal, json.dumps, unreadable))
    second.recover()
    view = second.get(job)
    assert view.status is JobStatus.FAILED
    assert view.error is not None and view.error.code == "inputs_lost"
    assert "submit it again" in view.error.message


def test_a_damaged_database_is_moved_aside_and_the_server_starts_empty(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder.mkdir(parents=True)
    (folder / DB_NAME).write_bytes(b"SQLite format 3\x00" + b"\x13" * 3000)  # half-written
    with caplog.at_level(logging.ERROR):
        queue = JobQueue(runner, Events(), durability=durable(folder))
    assert queue.recover() == 0
    assert [p.name for p in folder.glob(f"{DB_NAME}.damaged-*")]
    assert "moved to" in caplog.text and "empty queue" in caplog.text
    queue.submit({"name": "after", "images": 1})  # and the new database works


def test_retention_removes_the_files_too(folder: Path) -> None:
    from kd_server.jobqueue import QueueLimits

    events = Events()
    queue = JobQueue(runner, events, QueueLimits(result_max_jobs=1), durability=durable(folder))
    queue.start()
    old = queue.submit({"name": "old", "images": 1}).job_id
    events.wait_ended({old})
    new = queue.submit({"name": "new", "images": 1}).job_id
    events.wait_ended({new})
    queue.stop()
    files = sorted(p.name for p in (folder / "outputs").rglob("*.png"))
    assert files == [f"{new}-0.png"]


def test_a_request_with_images_survives_the_round_trip() -> None:
    picture = Image.new("RGBA", (37, 21), (10, 200, 30, 128))
    picture.putpixel((3, 4), (1, 2, 3, 4))
    request = GenerationRequest(
        task=Task.INPAINT,
        conditioning=Conditioning("a fox", "blur", [LoraSpec("ink", 0.7)]),
        sampling=Sampling("Euler a", 12, 5.5, None, 2),
        inputs=ImageInputs(picture, Image.new("L", (37, 21), 200), 3, 4, 0.6),
        model="sd15/dream.safetensors",
        width=640,
        preview_every=2,
    )
    back = decode_request(encode_request(request))
    assert back.conditioning == request.conditioning and back.sampling == request.sampling
    assert (back.task, back.model, back.width, back.preview_every) == (
        Task.INPAINT,
        "sd15/dream.safetensors",
        640,
        2,
    )
    assert back.inputs.image is not None and back.inputs.mask is not None
    assert back.inputs.image.tobytes() == picture.tobytes()
    assert back.inputs.mask.mode == "L" and back.inputs.mask.getpixel((0, 0)) == 200
    assert (back.inputs.mask_grow, back.inputs.mask_feather, back.inputs.strength) == (3, 4, 0.6)
