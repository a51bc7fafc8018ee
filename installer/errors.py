"""The one error type the installer shows to people.

Every failure a user can meet is raised as `InstallError(what, fix)`; the CLI prints
both sentences and exits non-zero, so nobody ever sees a traceback.
"""

from __future__ import annotations


class InstallError(Exception):
    """A problem worded for the person running the installer: what went wrong, what to do."""

    def __init__(self, problem: str, fix: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.problem}\n  What to do: {self.fix}" if self.fix else self.problem
