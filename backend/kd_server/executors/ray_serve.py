"""Workers on other machines: a Ray Serve deployment of engine replicas.

The gateway (this server) keeps the queue, fairness, positions, cancel, events,
results and auth; only the denoising moves. Each replica is one engine on one GPU
and runs one job at a time (`max_ongoing_requests=1`); Serve scales the replicas
between a minimum and a maximum. Ray Serve's own HTTP proxy is never started: the
gateway calls the deployment through a handle, so WebSockets, the A1111 API and the
queue stay ours.

A job travels as the journal's bytes (`request_codec`) and comes back as a stream
of small messages (`Message`): accepted (with the replica's process id), loading,
progress, preview (a JPEG made on the replica), result (a PNG encoded on the
replica), then done, cancelled or error. The gateway has one lane (`RayWorker`) per
possible replica and lets at most "running replicas + 1" of them hold a job, so at
most one job waits inside Ray (it is what makes Serve add a replica) and the rest
wait in our fair queue with exact positions.

Cancel: the lane stops reading and cancels the Serve request; the replica's
generator is cancelled, which sets the engine's cancel flag: the job stops at its
next step. A replica that dies mid-job: the job fails with `worker_lost` (not
retried: it may have been the job that killed it, and the artist decides); a job
whose replica died before accepting it is sent again (nothing of it ran). Serve
replaces the dead replica; the other replicas keep working meanwhile.

Serve routes a job to a replica that holds its checkpoint when it can (Serve's
model multiplexing, with the checkpoint's name as the model id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import ray
from ray import serve

from kd_server.config import ConfigError, ReplicaRange, Settings, replica_range
from kd_server.executors.stream import (
    FINAL,
    LOST,
    Message,
    ReplicaConfig,
    apply,
    run_job,
)
from kd_server.generation import Cancelled, EngineError
from kd_server.jobqueue import Output, RunHooks, WorkerLost

log = logging.getLogger(__name__)

APP_NAME = "krita-diffusers"
DEPLOYMENT_NAME = "KdReplica"
NAMESPACE = "krita-diffusers"

#: How long a job whose replica died before accepting it keeps being sent again
#: (Serve notices a dead replica within its health-check period and starts another).
RESEND_WINDOW_S = 120.0
#: How often the gateway asks Serve how many replicas are up.
POLL_S = 1.0


# ----------------------------------------------------------------- the replica side


class KdReplica:
    """One engine, one job at a time; `run` streams a job's messages."""

    def __init__(self, config: ReplicaConfig) -> None:
        self.engine, self.runner = config.build()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kd-replica")

    def pid(self) -> int:
        return os.getpid()

    async def run(self, payload: bytes) -> AsyncIterator[Message]:
        """Run one job, yielding its messages; cancelled by the gateway, it stops the
        engine at the next step and waits for it before taking another job."""
        loop = asyncio.get_running_loop()
        out: asyncio.Queue[Message] = asyncio.Queue()
        cancel = threading.Event()

        def send(message: Message) -> None:
            loop.call_soon_threadsafe(out.put_nowait, message)

        yield {"kind": "accepted", "pid": os.getpid()}
        model_id = serve.get_multiplexed_model_id()
        if model_id:
            await self.warm(model_id)  # tells Serve's router this replica holds it
        work = loop.run_in_executor(self.pool, self._work, payload, send, cancel)
        try:
            while True:
                message = await out.get()
                yield message
                if message["kind"] in FINAL:
                    return
        finally:
            cancel.set()
            with contextlib.suppress(BaseException):
                await asyncio.shield(work)

    @serve.multiplexed(max_num_models_per_replica=8)
    async def warm(self, model_id: str) -> str:
        """Serve's record of the checkpoints this replica has run (the engine's own
        cache decides what stays loaded)."""
        return model_id

    def _work(
        self, payload: bytes, send: Callable[[Message], None], cancel: threading.Event
    ) -> None:
        run_job(self.runner, payload, send, cancel, self.engine.loaded_models)


# ----------------------------------------------------------------- the gateway side


@dataclass
class RayWorker:
    """One lane to the deployment: the queue's `Worker` for one possible replica."""

    name: str
    index: int
    executor: RayExecutor
    replica_pid: int | None = field(default=None)  # of the job now running (tests kill it)

    def affinity(self, payload: Any) -> int:
        return 0  # Serve's router prefers the replica holding the model

    def ready(self) -> bool:
        return self.index < self.executor.lanes_open()

    def run(self, payload: Any, hooks: RunHooks) -> Sequence[Output]:
        from kd_server.request_codec import encode_request

        blob = encode_request(payload)
        model = self.executor.model_of(payload)
        deadline = time.monotonic() + RESEND_WINDOW_S
        while True:
            try:
                return self._attempt(blob, model, hooks)
            except _NotAccepted as exc:
                if hooks.should_cancel():
                    raise Cancelled from exc
                if time.monotonic() > deadline:
                    raise WorkerLost(
                        "No machine could take this job: the GPU workers did not answer "
                        "for two minutes. Generate again, or ask whoever runs the server."
                    ) from exc
                log.warning(
                    "%s: the replica did not take the job (%s); sending again", self.name, exc
                )
                time.sleep(0.5)

    def _attempt(self, blob: bytes, model: str, hooks: RunHooks) -> list[Output]:
        handle = self.executor.handle.options(stream=True, multiplexed_model_id=model)
        stream = handle.run.remote(blob)
        outputs: list[Output] = []
        accepted = False
        try:
            for message in stream:
                if message["kind"] == "accepted":
                    accepted, self.replica_pid = True, int(message["pid"])
                elif apply(message, hooks, outputs) == "done":
                    return outputs
                if hooks.should_cancel():
                    stream.cancel()  # the replica stops the engine at its next step
                    raise Cancelled
        except (Cancelled, EngineError):
            raise
        except Exception as exc:
            if not accepted:
                raise _NotAccepted(str(exc)) from exc
            log.error(
                "%s: the replica (pid %s) was lost mid-job: %s", self.name, self.replica_pid, exc
            )
            raise WorkerLost(LOST) from exc
        finally:
            self.replica_pid = None
        if not accepted:
            raise _NotAccepted("the stream ended before the replica took the job")
        raise WorkerLost(LOST)


class _NotAccepted(Exception):
    """The request never reached a live replica: safe to send again."""


class RayExecutor:
    """The deployment, its handle and one lane per possible replica."""

    def __init__(
        self,
        settings: Settings,
        check_model: Callable[[str | None], Any],
        app_name: str = APP_NAME,
    ) -> None:
        """`check_model`: the checkpoint a request will use (the gateway's engine);
        `app_name`: the Serve application (one per gateway; a benchmark runs two)."""
        self.replicas: ReplicaRange = replica_range(settings.ray_replicas)
        self.app_name = app_name
        self._check_model = check_model
        _connect(settings.ray_address)
        self.handle = _deploy(ReplicaConfig.from_settings(settings), self.replicas, app_name)
        self._running = self.replicas.minimum
        self._lanes = [
            RayWorker(f"ray-{index}", index, self) for index in range(self.replicas.maximum)
        ]
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    def workers(self) -> list[RayWorker]:
        return list(self._lanes)

    def lanes_open(self) -> int:
        """How many jobs may be in Ray at once: the running replicas + 1, at most
        the maximum (the one extra is what makes Serve start another replica)."""
        return min(self.replicas.maximum, self._running + 1)

    def model_of(self, payload: Any) -> str:
        try:
            return str(self._check_model(getattr(payload, "model", None)).name)
        except Exception:
            return ""

    def start(self, wake: Callable[[], None]) -> None:
        """Follow the number of running replicas; `wake` the queue when it changes."""

        def poll() -> None:
            while not self._stop.wait(POLL_S):
                try:
                    running = running_replicas(self.app_name)
                except Exception as exc:
                    log.warning("Cannot read the Ray Serve status: %s", exc)
                    continue
                if running != self._running:
                    log.info("Ray Serve replicas running: %d", running)
                    self._running = running
                    wake()

        self._poller = threading.Thread(target=poll, name="kd-ray-status", daemon=True)
        self._poller.start()

    def close(self) -> None:
        """Stop following; the deployment stays up for the next gateway (or `serve
        shutdown`): a gateway restart does not cost the replicas' warm models."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join(5)


def running_replicas(app_name: str = APP_NAME) -> int:
    status = serve.status().applications.get(app_name)
    if status is None:
        return 0
    deployment = status.deployments.get(DEPLOYMENT_NAME)
    if deployment is None:
        return 0
    states: dict[Any, int] = dict(deployment.replica_states)
    return int(states.get("RUNNING", 0))


def _connect(address: str | None) -> None:
    """Join the cluster at `address` ("auto": the one this machine is part of),
    unless this process already is (the tests start their own on loopback)."""
    if ray.is_initialized():
        return
    try:
        ray.init(address=address or "auto", namespace=NAMESPACE, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"Cannot join the Ray cluster at {address}: {exc}") from exc


def _deploy(config: ReplicaConfig, replicas: ReplicaRange, app_name: str) -> Any:
    """Start (or update) the deployment with no HTTP proxy; returns its handle once
    the minimum number of replicas runs."""
    serve.start(proxy_location="Disabled")
    gpus = 1 if config.device.startswith("cuda") else 0
    deployment: Any = serve.deployment(
        KdReplica,
        name=DEPLOYMENT_NAME,
        max_ongoing_requests=1,
        max_queued_requests=-1,
        health_check_period_s=1,
        health_check_timeout_s=30,
        graceful_shutdown_timeout_s=5,
        autoscaling_config={
            "min_replicas": replicas.minimum,
            "initial_replicas": replicas.minimum,
            "max_replicas": replicas.maximum,
            "target_ongoing_requests": 1,
            "upscale_delay_s": 3,
            "downscale_delay_s": 600,
        },
        ray_actor_options={"num_gpus": gpus, "num_cpus": 1},
    )
    return serve.run(deployment.bind(config), name=app_name, route_prefix=None)
