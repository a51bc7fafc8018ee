"""Faults injected by test code around the real engine (never by a product setting)."""

from __future__ import annotations

from typing import Any

import torch

from kd_server.engine import Engine
from kd_server.generation import GeneratedImage, GenerationRequest, Progress


class OutOfMemoryAtStep:
    """The real engine, except that every job reaching denoising step `step` raises
    what CUDA raises when memory runs out, from inside the denoising loop, so the
    engine's own recovery runs on any machine. Jobs with fewer steps are unaffected."""

    def __init__(self, engine: Engine, step: int) -> None:
        self.engine = engine
        self.step = step

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def generate(
        self,
        request: GenerationRequest,
        on_progress: Any = None,
        should_cancel: Any = None,
        on_loading: Any = None,
        on_preview: Any = None,
        on_warning: Any = None,
    ) -> list[GeneratedImage]:
        def progress(report: Progress) -> None:
            if report.step == self.step:
                raise torch.OutOfMemoryError(
                    f"CUDA out of memory (simulated at step {report.step} for a test)"
                )
            if on_progress is not None:
                on_progress(report)

        return self.engine.generate(
            request, progress, should_cancel, on_loading, on_preview, on_warning
        )
