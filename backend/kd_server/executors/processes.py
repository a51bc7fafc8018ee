"""Local workers in processes of their own: one per device, each with its engine.

Why processes: workers on threads of the server share one Python interpreter lock,
and a diffusion step is much Python (module calls, kernel launches); two threads
mostly took turns (docs/scale-out.md). A process per device runs each engine's
Python on its own core. The job goes over a pipe in the stream of
`kd_server.executors.stream`, as to a Ray replica.

A worker process is started (spawned: no state copied from the server) when the
worker is made, and again after it died. A job whose process dies fails with
`worker_lost`; the next job starts a fresh process.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from kd_server.executors.stream import LOST, Message, ReplicaConfig, apply, run_job
from kd_server.jobqueue import Output, RunHooks, WorkerLost

log = logging.getLogger(__name__)

_POLL_S = 0.05  # how often the worker's thread looks for cancel while it waits


@dataclass(eq=False)
class ProcessWorker:
    """A queue `Worker` whose engine runs in a child process on `config.device`."""

    name: str
    config: ReplicaConfig
    check_model: Any  # the gateway's `Engine.check_model`: the checkpoint a job uses
    _process: Any = field(default=None, repr=False)
    _conn: Connection | None = field(default=None, repr=False)
    _warm: set[str] = field(default_factory=set, repr=False)
    _current: str | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self._start()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def ready(self) -> bool:
        return True

    def affinity(self, payload: Any) -> int:
        model = self._model_of(payload)
        with self._lock:
            return int(model is not None and (model == self._current or model in self._warm))

    def run(self, payload: Any, hooks: RunHooks) -> Sequence[Output]:
        from kd_server.request_codec import encode_request

        with self._lock:
            self._current = self._model_of(payload)
        conn = self._alive_connection()
        try:
            conn.send(encode_request(payload))
            return self._follow(conn, hooks)
        except (EOFError, OSError, BrokenPipeError) as exc:
            self._lost()
            raise WorkerLost(LOST) from exc

    def close(self) -> None:
        if self._process is not None and self._process.is_alive():
            self._process.terminate()
            self._process.join(10)

    def _follow(self, conn: Connection, hooks: RunHooks) -> list[Output]:
        """Relay the job's messages until its final one; pass a cancel on once."""
        outputs: list[Output] = []
        cancel_sent = False
        while True:
            if conn.poll(_POLL_S):
                message: Message = conn.recv()
                kind = message["kind"]
                if kind == "done":
                    with self._lock:
                        self._warm = set(message.get("warm", []))
                    return outputs
                if kind not in ("ready", "accepted"):
                    apply(message, hooks, outputs)  # raises on cancelled / error
            elif not self._process.is_alive():
                self._lost()
                raise WorkerLost(LOST)
            if not cancel_sent and hooks.should_cancel():
                conn.send("cancel")  # the engine stops at its next step
                cancel_sent = True

    def _alive_connection(self) -> Connection:
        if self._process is None or not self._process.is_alive() or self._conn is None:
            self._start()
        assert self._conn is not None
        return self._conn

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        process = context.Process(
            target=_serve_jobs, args=(theirs, self.config), name=f"kd-{self.name}", daemon=True
        )
        process.start()
        theirs.close()
        self._process, self._conn = process, ours
        with self._lock:
            self._warm = set()

    def _lost(self) -> None:
        log.error("Worker %s: its process (pid %s) went away", self.name, self.pid)
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def _model_of(self, payload: Any) -> str | None:
        try:
            return str(self.check_model(getattr(payload, "model", None)).name)
        except Exception:
            return None


def _serve_jobs(conn: Connection, config: ReplicaConfig) -> None:
    """The child process: build the engine, then run the jobs the pipe brings, one
    at a time, reading `cancel` while each runs."""
    import os

    engine, runner = config.build()
    send_lock = threading.Lock()

    def send(message: Message) -> None:
        with send_lock:
            conn.send(message)

    send({"kind": "ready", "pid": os.getpid()})
    waiting: list[Any] = []  # the next job, when it came while the last one was ending
    while True:
        try:
            payload = waiting.pop(0) if waiting else conn.recv()
        except (EOFError, OSError):
            return  # the server went away
        if payload == "cancel":
            continue  # for a job that had already ended
        cancel = threading.Event()
        job = threading.Thread(
            target=run_job, args=(runner, payload, send, cancel, engine.loaded_models)
        )
        job.start()
        try:
            while job.is_alive():
                if conn.poll(_POLL_S):
                    message = conn.recv()
                    if message == "cancel":
                        cancel.set()
                    else:  # the next job: sent once this one's `done` was read
                        waiting.append(message)
        except (EOFError, OSError):  # the server went away: stop the job, then exit
            cancel.set()
            job.join()
            return
        job.join()
