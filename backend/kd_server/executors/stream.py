"""A job run away from the queue's process, as a stream of small messages.

Both remote kinds of worker speak it: a Ray Serve replica (`ray_serve`) and a local
worker process (`processes`). The job goes out as the journal's bytes
(`request_codec`); back come plain dicts: accepted (the runner's process id),
loading, progress, preview (a JPEG made there), result (a PNG encoded there), then
exactly one of done, cancelled or error. Nothing here imports Ray.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kd_server.config import Settings
from kd_server.generation import Cancelled, EngineError, EngineErrorCode
from kd_server.jobqueue import Hooks, Output

log = logging.getLogger(__name__)

Message = dict[str, Any]
FINAL = ("done", "cancelled", "error")

LOST = (
    "The GPU worker running this job stopped before it finished (its process or "
    "machine went away); the other workers carry on. Generate again."
)


@dataclass(frozen=True)
class ReplicaConfig:
    """What a remote worker needs to build its engine: the gateway's settings that
    matter there. Model folders must hold the same files at the same paths on every
    machine (a shared folder, or the same copy)."""

    model_dirs: tuple[str, ...]
    default_model: str | None
    cache_size: int
    speedups: tuple[str, ...]
    device: str
    preview_max_size: int
    memory_mode: str = "auto"
    t5_tokenizer: str | None = None  # the T5 tokenizer folder (same path everywhere)

    @classmethod
    def from_settings(cls, settings: Settings, device: str | None = None) -> ReplicaConfig:
        return cls(
            model_dirs=tuple(str(d) for d in settings.model_dirs),
            default_model=settings.default_model,
            cache_size=settings.cache_size,
            speedups=tuple(settings.speedups),
            device=device or settings.ray_device,
            preview_max_size=settings.preview_max_size,
            memory_mode=settings.memory_mode,
            t5_tokenizer=str(settings.t5_tokenizer) if settings.t5_tokenizer else None,
        )

    def build(self) -> tuple[Any, Any]:
        """(engine, runner) for this process; never reaches for the hub."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before diffusers loads, as the CLI
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from kd_server.api.services import EngineRunner
        from kd_server.engine import Engine
        from kd_server.library import ModelLibrary
        from kd_server.speed import SpeedOptions

        library = ModelLibrary([Path(d) for d in self.model_dirs], default_model=self.default_model)
        engine = Engine(
            library,
            device=self.device,
            cache_size=self.cache_size,
            speed=SpeedOptions.from_names(list(self.speedups)),
            memory_mode=self.memory_mode,
            t5_tokenizer=Path(self.t5_tokenizer) if self.t5_tokenizer else None,
        )
        return engine, EngineRunner(engine, self.preview_max_size)


class RelayHooks:
    """The runner's hooks where the job runs: each call becomes a message."""

    def __init__(self, send: Callable[[Message], None], cancel: threading.Event) -> None:
        self._send = send
        self._cancel = cancel

    def loading(self, model_name: str) -> None:
        self._send({"kind": "loading", "model": model_name})

    def progress(self, step: int, total: int, preview: str | None = None) -> None:
        self._send({"kind": "progress", "step": step, "total": total})
        if preview is not None:
            self._send({"kind": "preview", "step": step, "image": preview})

    def preview(self, step: int, image: str) -> None:
        self._send({"kind": "preview", "step": step, "image": image})

    def warning(self, code: str, message: str) -> None:
        self._send({"kind": "warning", "code": code, "message": message})

    def should_cancel(self) -> bool:
        return self._cancel.is_set()


def run_job(
    runner: Any,
    payload: bytes,
    send: Callable[[Message], None],
    cancel: threading.Event,
    warm: Callable[[], list[str]],
) -> None:
    """Run one job where it is; every outcome ends with exactly one final message
    (`done` names the checkpoints now warm there, for the gateway's affinity)."""
    from kd_server.request_codec import decode_request

    try:
        request = decode_request(payload)
        images = runner(request, RelayHooks(send, cancel))
        for image in images:
            if cancel.is_set():
                raise Cancelled
            png = image.encode()
            send({"kind": "result", "index": image.index, "seed": image.seed, "png": png})
    except Cancelled:
        send({"kind": "cancelled"})
    except EngineError as exc:
        send({"kind": "error", "code": exc.code.value, "message": exc.message})
    except Exception:
        log.exception("A job failed in worker process %d", os.getpid())
        send({"kind": "error", "code": "internal_error", "message": ""})
    else:
        send({"kind": "done", "warm": warm()})


@dataclass
class EncodedPng:
    """A result as the worker sent it: already a PNG."""

    index: int
    seed: int
    png: bytes

    def encode(self) -> bytes:
        return self.png


def apply(message: Message, hooks: Hooks, outputs: list[Output]) -> str:
    """Pass one message on to the queue's hooks; returns its kind. `cancelled` and
    `error` raise what a local runner would raise (`Cancelled`, `EngineError`)."""
    kind = str(message["kind"])
    if kind == "loading":
        hooks.loading(str(message["model"]))
    elif kind == "progress":
        hooks.progress(int(message["step"]), int(message["total"]))
    elif kind == "preview":
        hooks.preview(int(message["step"]), str(message["image"]))
    elif kind == "warning":
        hooks.warning(str(message["code"]), str(message["message"]))
    elif kind == "result":
        outputs.append(EncodedPng(message["index"], message["seed"], message["png"]))
    elif kind == "cancelled":
        raise Cancelled
    elif kind == "error":
        raise engine_error(message)
    return kind


def engine_error(message: Message) -> EngineError:
    try:
        code = EngineErrorCode(message["code"])
    except ValueError:
        code = EngineErrorCode.INTERNAL
    text = message.get("message") or (
        "The server hit an unexpected error while running this job; the GPU worker's "
        "log has the details."
    )
    return EngineError(code, str(text))
