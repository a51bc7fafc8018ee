"""Local workers: one engine per device of this server, each with its own model cache.

A server with two GPUs runs two jobs at once, one per GPU. The queue hands a job to a
free worker, preferring the one whose cache already holds the job's model (loading a
checkpoint costs seconds; a warm one costs nothing), so artists working with
different models end up on different GPUs without anyone choosing. Loads on two
workers' threads take turns (`kd_server.load_lock`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kd_server.jobqueue import Output, RunHooks, Runner

#: `--device all`: every CUDA GPU this machine shows.
ALL_DEVICES = "all"


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
        return self.runner(payload, hooks)

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
