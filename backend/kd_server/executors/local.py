"""Local workers: one engine per device of this server, each with its own model cache.

A server with two GPUs runs two jobs at once, one per GPU. The queue hands a job to a
free worker, preferring the one whose cache already holds the job's model (loading a
checkpoint costs seconds; a warm one costs nothing), so artists working with
different models end up on different GPUs without anyone choosing.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kd_server.jobqueue import Hooks, Output, RunHooks, Runner

#: `--device all`: every CUDA GPU this machine shows.
ALL_DEVICES = "all"

#: One job at a time in this process may be loading weights. diffusers and
#: transformers build modules under a process-wide "empty weights" patch; two loads on
#: two threads at once left modules on the meta device ("Cannot copy out of meta
#: tensor") and every later load in the process broken (found by
#: tests/api/test_workers.py, which now proves the gate).
_LOADING = threading.Lock()


class WarmEngine(Protocol):
    """What a worker asks its engine to rate a job (`kd_server.engine.Engine`)."""

    def check_model(self, name: str | None) -> Any: ...
    def loaded_models(self) -> list[str]: ...


def device_list(setting: str | Sequence[str]) -> list[str]:
    """The devices of a `device` setting: one name (`cuda`, `cpu`, `auto`), several
    separated by commas or given as a list (`cuda:0,cuda:1`; a name may repeat, as
    `cpu,cpu` in tests), or `all` (every CUDA GPU; without one, `auto`)."""
    items = setting.split(",") if isinstance(setting, str) else list(setting)
    names = [item.strip().lower() for item in items if item.strip()] or ["auto"]
    if ALL_DEVICES not in names:
        return names
    if len(names) > 1:
        raise ValueError("device 'all' stands alone: it means every CUDA GPU.")
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [f"cuda:{index}" for index in range(count)] or ["auto"]


def worker_names(devices: Sequence[str]) -> list[str]:
    """A name per worker for logs and health: the device, numbered when repeated."""
    if len(set(devices)) == len(devices):
        return list(devices)
    return [f"{device}#{index}" for index, device in enumerate(devices)]


@dataclass
class EngineWorker:
    """One engine as a queue `Worker`: runs jobs with `runner`, and prefers jobs whose
    checkpoint is in its engine's cache or is the one it is running."""

    name: str
    engine: WarmEngine
    runner: Runner
    _current: str | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def run(self, payload: Any, hooks: RunHooks) -> Sequence[Output]:
        model = self._model_of(payload)
        with self._lock:
            self._current = model
        if not self._may_load(payload, model):
            return self.runner(payload, hooks)
        gate = _LoadGate(hooks)  # held until the job's first step: its loads are done
        try:
            return self.runner(payload, gate)  # type: ignore[arg-type]
        finally:
            gate.release()

    def _may_load(self, payload: Any, model: str | None) -> bool:
        """Whether the job may load weights before its first step: a cold checkpoint,
        LoRAs, control layers, a reference image or an upscaler."""
        if model is None or model not in self.engine.loaded_models():
            return True
        conditioning = getattr(payload, "conditioning", None)
        extras = (
            getattr(conditioning, "loras", None),
            getattr(conditioning, "control", None),
            getattr(conditioning, "reference", None),
            getattr(payload, "upscaling", None),
        )
        return any(extras)

    def affinity(self, payload: Any) -> int:
        """1 when the job's model is warm here (or loading here now), else 0."""
        model = self._model_of(payload)
        if model is None:
            return 0
        with self._lock:
            current = self._current
        return int(model == current or model in self.engine.loaded_models())

    def ready(self) -> bool:
        return True

    def _model_of(self, payload: Any) -> str | None:
        """The checkpoint a job will load (its own, or the library's default)."""
        try:
            return str(self.engine.check_model(getattr(payload, "model", None)).name)
        except Exception:  # an unknown model fails when it runs, wherever it runs
            return None


class _LoadGate:
    """The job's hooks, holding `_LOADING` from the start of the job until its first
    progress or preview (all its weights are loaded by then) or its end."""

    def __init__(self, hooks: Hooks) -> None:
        self._hooks = hooks
        self._guard = threading.Lock()
        _LOADING.acquire()
        self._held = True

    def release(self) -> None:
        with self._guard:
            if self._held:
                self._held = False
                _LOADING.release()

    def loading(self, model_name: str) -> None:
        self._hooks.loading(model_name)

    def progress(self, step: int, total: int, preview: str | None = None) -> None:
        self.release()
        self._hooks.progress(step, total, preview)

    def preview(self, step: int, image: str) -> None:
        self.release()
        self._hooks.preview(step, image)

    def should_cancel(self) -> bool:
        return self._hooks.should_cancel()
