"""Step previews are made on a thread of their own, so the denoising never waits for them.

Why: on a GPU a denoising step takes 10-20 ms. Making a preview on the denoising
thread (a latent-to-RGB map or a tiny VAE decode, a forced GPU sync for the copy to
the host, then in the API a JPEG and an event) adds a few milliseconds to every step
that has one, and the sync stalls the GPU's queue of work. Here the denoising thread
only hands over a copy of the latents (`previews.snapshot`, queued on the GPU without
waiting), and this thread does the rest.

One preview waits at most: when a newer one is offered before the waiting one has
started, the waiting one is dropped (it is stale), so a slow consumer never builds a
backlog and never slows the denoising. Previews of one job arrive in step order, and
`drain` lets the job's last preview through before the job returns, so no preview
ever follows its job's result.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

Work = Callable[[], None]


class PreviewWorker:
    """One daemon thread that runs the latest offered preview; started on first use."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: Work | None = None
        self._busy = False
        self._thread: threading.Thread | None = None
        self.dropped = 0  # previews replaced by a newer one before they started

    def offer(self, work: Work) -> None:
        """Run `work` soon on the preview thread; a waiting, unstarted one is dropped."""
        with self._cond:
            if self._pending is not None:
                self.dropped += 1
            self._pending = work
            self._start()
            self._cond.notify_all()

    def drain(self, discard: bool = False) -> None:
        """Wait until the preview thread is idle: the waiting preview runs first, or is
        dropped with `discard` (a cancelled job's)."""
        with self._cond:
            if discard and self._pending is not None:
                self._pending = None
                self.dropped += 1
            self._cond.wait_for(lambda: self._pending is None and not self._busy)

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kd-previews", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None)
                work, self._pending = self._pending, None
                self._busy = True
            try:
                assert work is not None
                work()
            except Exception:  # a failed preview must not end the thread or the job
                log.exception("Making a step preview failed")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
