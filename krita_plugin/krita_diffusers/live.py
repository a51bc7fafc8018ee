"""Live mode's decisions, in plain Python (no Qt, no Krita), so each rule is tested.

Krita has no "the canvas changed" signal, so the docker polls a checksum of the
region's pixels a few times a second and hands each one to `LiveSession.poll`. A frame
is sent only after a pause in painting: the checksum changed, then stayed the same for
`settle_polls` polls. While strokes keep changing it nothing is sent (each frame would
be stale before it finished).

Latest wins. The plugin has at most one frame on its way (POSTed, not yet answered);
a canvas state that settles meanwhile waits and is sent when that answer comes, and a
newer state replaces the waiting one. Once accepted, a frame is the current one: the
server (protocol 3, `live: true`) supersedes this client's earlier live job, so events
of any other live job are stale and dropped, and its `cancelled` with reason
`superseded` is no error.
"""

from __future__ import annotations

import zlib

from .geometry import Rect, canvas_rect, region_for_selection

SUPERSEDED = "superseded"

#: The docker's timer, and the polls without change that count as a pause: a poll
#: every 150 ms and 3 polls is a pause of about half a second. A change that comes
#: after such a pause is sent at once (see `LiveSession.poll`), so a single stroke
#: waits at most one poll; 150 ms keeps that wait small against a frame's time while
#: a poll (one read of the region and a checksum) stays a millisecond or two.
POLL_MS = 150
SETTLE_POLLS = 3


def checksum(pixels: bytes) -> int:
    """A cheap fingerprint of the region's pixels (Adler-32: about 1 ms for 4 MB),
    good enough to tell "the artist painted" from "nothing changed"."""
    return zlib.adler32(pixels)


def live_region(
    canvas_size: tuple[int, int] | None, selection: Rect | None, context_margin: int
) -> Rect | None:
    """What live mode watches and sends: the selection with its context, else the
    whole canvas; None when there is nothing to watch."""
    if canvas_size is None or canvas_size[0] <= 0 or canvas_size[1] <= 0:
        return None
    width, height = canvas_size
    if selection is not None and not selection.is_empty:
        region = region_for_selection(selection, width, height, context_margin)
        return None if region.is_empty else region
    return canvas_rect(width, height)


class LiveSession:
    """When to send a live frame and which frame's events count."""

    def __init__(self, settle_polls: int = SETTLE_POLLS) -> None:
        self.settle_polls = max(1, settle_polls)
        self._last: int | None = None  # the checksum of the previous poll
        self._stable = 0  # polls since it last changed
        self._sent: int | None = None  # the checksum of the newest frame sent
        self._dirty = True  # the canvas (or a setting) differs from the newest frame
        self._forced = False  # a setting changed: even the sent pixels need a new frame
        self.sending = False  # a frame is POSTed and not answered yet
        self.current_job: str | None = None  # the newest accepted frame's job

    def poll(self, value: int) -> bool:
        """Take one poll's checksum; True when a frame of this state is to be sent now
        (the caller then calls `sent`)."""
        if value != self._last:
            rested = self._last is not None and self._stable >= self.settle_polls
            self._last = value
            self._stable = 0
            self._dirty = value != self._sent or self._forced
            # The first change after a pause goes at once: a single stroke is answered
            # one poll after it, not a pause later. While changes keep coming, the next
            # frame waits for the next pause (and replaces this one on the server).
            return self._dirty and rested and not self.sending
        self._stable += 1
        return self._dirty and not self.sending and self._stable >= self.settle_polls

    def invalidate(self) -> None:
        """The prompt, strength or model changed (or the server lost live jobs on a
        restart): the same pixels make a new frame at the next settled poll."""
        self._dirty = True
        self._forced = True
        self._stable = max(self._stable, self.settle_polls - 1)

    def sent(self) -> None:
        """A frame of the last polled state is on its way."""
        self.sending = True
        self._sent = self._last
        self._dirty = False
        self._forced = False

    def accepted(self, job_id: str) -> None:
        """The server took the frame: from now on only its events count."""
        self.sending = False
        self.current_job = job_id

    def refused(self) -> None:
        """The frame was not taken: the state is sent again at the next settled poll
        only if it changes (no retry loop against a server that keeps refusing)."""
        self.sending = False

    def is_current(self, job_id: str) -> bool:
        return job_id == self.current_job

    @staticmethod
    def is_quiet_cancel(reason: str | None) -> bool:
        """A frame stopped because a newer one replaced it: nothing to tell."""
        return reason == SUPERSEDED
