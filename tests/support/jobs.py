"""Engine requests from flat keyword arguments, for tests that vary one field.

`make_request(task=Task.INPAINT, prompt="x", image=..., steps=3)` puts each argument
into its concern of the nested `GenerationRequest` (conditioning, sampling, inputs),
by the concerns' own field names, so a test reads like the wire body it stands for.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from kd_server.generation import Conditioning, GenerationRequest, ImageInputs, Sampling, Task

_CONCERNS: dict[str, Any] = {
    "conditioning": Conditioning,
    "sampling": Sampling,
    "inputs": ImageInputs,
}


def make_request(task: Task = Task.TXT2IMG, **flat: Any) -> GenerationRequest:
    nested: dict[str, Any] = {}
    for concern, kind in _CONCERNS.items():
        names = {f.name for f in fields(kind)}
        nested[concern] = kind(**{k: flat.pop(k) for k in list(flat) if k in names})
    return GenerationRequest(task=task, **nested, **flat)
