"""Every task the server runs, declared once (one module per task).

Adding a task: a value in `generation.Task`, a module here with its `TaskSpec`, and
its line in `TASKS`. docs/architecture.md walks through it.
"""

from __future__ import annotations

from kd_server.generation import Task
from kd_server.tasks.base import Passes, Prepared, TaskSpec
from kd_server.tasks.img2img import IMG2IMG
from kd_server.tasks.inpaint import INPAINT
from kd_server.tasks.txt2img import TXT2IMG
from kd_server.tasks.upscale import UPSCALE

TASKS: dict[Task, TaskSpec] = {spec.task: spec for spec in (TXT2IMG, IMG2IMG, INPAINT, UPSCALE)}

#: The task whose pipeline a checkpoint is loaded as; the others are made from it.
LOAD_AS = Task.TXT2IMG


def spec_for(task: Task) -> TaskSpec:
    return TASKS[task]


__all__ = ["LOAD_AS", "TASKS", "Passes", "Prepared", "TaskSpec", "spec_for"]
