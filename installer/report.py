"""A running list of what the installer did, printed as it goes and summed up at the end.

Re-runs must be visibly quick and harmless, so every step says whether it created,
updated, repaired or merely kept something.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from enum import Enum
from typing import TextIO


class Action(Enum):
    CREATED = "created"
    UPDATED = "updated"
    KEPT = "unchanged"
    REMOVED = "removed"
    SKIPPED = "skipped"
    NOTE = "note"


@dataclass
class Step:
    action: Action
    what: str


@dataclass
class Report:
    """Collects steps; `quiet` keeps tests' output short."""

    stream: TextIO = field(default_factory=lambda: sys.stdout)
    quiet: bool = False
    steps: list[Step] = field(default_factory=list)

    def add(self, action: Action, what: str) -> None:
        self.steps.append(Step(action, what))
        if not self.quiet:
            print(f"  [{action.value:>9}] {what}", file=self.stream, flush=True)

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    def changed(self) -> list[Step]:
        """Steps that changed something on disk (empty on a clean re-run)."""
        busy = {Action.CREATED, Action.UPDATED, Action.REMOVED}
        return [step for step in self.steps if step.action in busy]
