"""Work off Krita's GUI thread, with the outcome handed back to it.

Krita freezes while its GUI thread is busy, so anything that can take more than a
moment (a request, decoding or scaling an image) runs here on a daemon thread, and
its callbacks run later on the GUI thread through a queued Qt signal.

Daemon threads rather than a QThreadPool: a pool waits for its running work when it
is destroyed, so quitting Krita during a request to a server that stopped answering
would hang for the whole request timeout. Daemon threads are dropped at exit; a
semaphore keeps a few at work at once, as a pool would.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from .qt import QObject, pyqtSignal, pyqtSlot

log = logging.getLogger(__name__)

OkCallback = Callable[[Any], None]
ErrorCallback = Callable[[str], None]
#: Turns an exception from the work into a sentence for the artist.
Describe = Callable[[Exception], str]
#: What the controller and the client take to run work in the background.
Runner = Callable[[Callable[[], object], OkCallback | None, ErrorCallback | None], None]


class _Relay(QObject):
    """Lives in the GUI thread and carries one call's outcome back to it.

    The worker emits; because this object belongs to the GUI thread, Qt queues the
    slot there. The callbacks therefore never run in a worker.
    """

    succeeded = pyqtSignal(object)
    failed = pyqtSignal(str)

    def __init__(
        self,
        on_ok: OkCallback | None,
        on_error: ErrorCallback | None,
        done: Callable[[_Relay], None],
    ) -> None:
        super().__init__()
        self._on_ok = on_ok
        self._on_error = on_error
        self._done = done
        self.succeeded.connect(self._deliver_ok)
        self.failed.connect(self._deliver_error)

    @pyqtSlot(object)
    def _deliver_ok(self, value: object) -> None:
        self._done(self)
        if self._on_ok is not None:
            call_unless_closed(self._on_ok, value)

    @pyqtSlot(str)
    def _deliver_error(self, message: str) -> None:
        self._done(self)
        if self._on_error is not None:
            call_unless_closed(self._on_error, message)


def call_unless_closed(callback: Callable[[Any], object], value: object) -> None:
    """Run a GUI callback; a widget closed while the work ran is not an error.

    PyQt raises RuntimeError("wrapped C/C++ object ... has been deleted") for those.
    Anything else is a bug: it is logged with its traceback, not swallowed, and not
    raised either, since an exception escaping a Qt slot can abort Krita itself.
    """
    try:
        callback(value)
    except RuntimeError as exc:
        if "has been deleted" not in str(exc):
            log.exception("A Krita Diffusers callback failed")
    except Exception:
        log.exception("A Krita Diffusers callback failed")


def _plain(exc: Exception) -> str:
    return f"Something went wrong: {exc}"


class Background:
    """Runs work on daemon threads; at most `slots` at once."""

    def __init__(self, slots: int = 4, describe: Describe = _plain) -> None:
        self._slots = threading.BoundedSemaphore(slots)
        self._describe = describe
        self._relays: set[_Relay] = set()  # alive until their outcome is delivered
        self.threads: set[threading.Thread] = set()  # who ran work (tests check this)

    def run(
        self,
        work: Callable[[], object],
        on_ok: OkCallback | None = None,
        on_error: ErrorCallback | None = None,
    ) -> None:
        """Start `work`; its value goes to `on_ok`, a failure's sentence to `on_error`,
        both later on the GUI thread. Must be called from the GUI thread."""
        relay = _Relay(on_ok, on_error, self._relays.discard)
        self._relays.add(relay)
        thread = threading.Thread(
            target=self._call, args=(work, relay), name="krita-diffusers-work", daemon=True
        )
        thread.start()

    def _call(self, work: Callable[[], object], relay: _Relay) -> None:
        self.threads.add(threading.current_thread())
        with self._slots:
            try:
                value = work()
            except Exception as exc:  # a bug or odd data must not kill the worker silently
                relay.failed.emit(self._describe(exc))
            else:
                relay.succeeded.emit(value)
