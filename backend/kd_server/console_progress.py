"""What `krita-diffusers-server generate` shows while it works, and what it keeps quiet.

Step progress: on a terminal, one bar redrawn in place; anywhere else (a pipe, a log
file, the installer capturing it) one line per update, since a carriage return there
only glues `step 1/20step 2/20...` into one unreadable line.

Library notes: transformers announces on every model load that it falls back to
Pillow-based image processors because torchvision is not installed. That fallback is
exactly what this server wants (torchvision is deliberately not a dependency), so the
note is noise to the user; it is filtered out by its wording, and every other
warning of transformers still shows.
"""

from __future__ import annotations

import logging
import sys
from typing import Protocol, TextIO

# transformers' logger for the torchvision fallback note, and the note's wording.
_NOTE_LOGGER = "transformers.utils.import_utils"
_NOTE_TEXT = "requires torchvision (not installed); falling back to"
BAR_WIDTH = 30


class _StepInfo(Protocol):
    @property
    def step(self) -> int: ...
    @property
    def total(self) -> int: ...


class _DropTorchvisionFallbackNote(logging.Filter):
    """Drops only transformers' "falls back to the Pillow processor" note."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _NOTE_TEXT not in record.getMessage()


def quiet_library_notes() -> None:
    """Silence the library notes that are not the user's business (see the module
    docstring). Safe to call more than once, before or after transformers is imported."""
    logger = logging.getLogger(_NOTE_LOGGER)
    if not any(isinstance(f, _DropTorchvisionFallbackNote) for f in logger.filters):
        logger.addFilter(_DropTorchvisionFallbackNote())


class StepProgress:
    """The engine's `on_progress` callback for the command line; call `finish()` once
    the steps are over (or failed) so the next message starts on a line of its own."""

    def __init__(self, stream: TextIO | None = None, interactive: bool | None = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self._open_line = False  # a bar is drawn and its line not yet ended

    def __call__(self, progress: _StepInfo) -> None:
        if self.interactive:
            self.stream.write("\r" + bar(progress.step, progress.total))
            self._open_line = True
        else:
            self.stream.write(f"step {progress.step}/{progress.total}\n")
        self.stream.flush()

    def finish(self) -> None:
        if self._open_line:
            self.stream.write("\n")
            self.stream.flush()
            self._open_line = False


def bar(step: int, total: int, width: int = BAR_WIDTH) -> str:
    """`step  7/20 [##########--------------------]  35%`"""
    total = max(total, 1)
    done = min(max(step, 0), total)
    filled = round(width * done / total)
    digits = len(str(total))
    return (
        f"step {done:>{digits}}/{total} [{'#' * filled}{'-' * (width - filled)}] "
        f"{100 * done // total:>3}%"
    )
