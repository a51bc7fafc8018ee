"""Picking up the jobs a docker waits for after its event stream reconnects (a network
drop, or a server that was restarted).

The stream always opens with `resume=true` (`protocol.events_url`). A server of
protocol 2 or later then sends a `state` for each job of this client it knows, before
any live event: queued and running jobs go on, ended ones say how they ended and
which results they have. A job is lost only when the server does not know it; the
protocol marks no end of the states, so a job still without one a moment later is
asked about by itself (`GET /v1/jobs/{id}`), and only that answer's
`404 job_not_found` makes it lost. An older server sends no states: every job is
asked about at once. Either way a slow or late answer changes nothing but the order
in which jobs are reconciled: the server's record is the same in both.

Plain Python, no Qt: the controller feeds it and acts on what it returns.
"""

from __future__ import annotations

from collections.abc import Iterable

#: How long after a reconnection the states are waited for before the jobs without
#: one are asked about. They come right after the connection opens, so this only
#: spares a request per job; being early or late is never wrong.
STATE_GRACE_MS = 1500


class Resumption:
    """The jobs the latest (re)connection has not accounted for yet.

    Each reconnection starts a new round; a check scheduled by an earlier round is
    ignored, because the jobs it names were handed to the newer one.
    """

    def __init__(self) -> None:
        self.round = 0
        self._unaccounted: set[str] = set()

    def begin(self, waiting: Iterable[str]) -> int:
        """A connection opened while the docker waits for `waiting`; the round's number
        is what `unaccounted` is later asked with."""
        self.round += 1
        self._unaccounted = set(waiting)
        return self.round

    def account(self, job_id: str) -> None:
        """The server sent a state for this job: it knows it."""
        self._unaccounted.discard(job_id)

    def unaccounted(self, round_: int) -> list[str]:
        """The jobs of round `round_` no state accounted for, each returned once (they
        are to be asked about); nothing for a round a newer connection replaced."""
        if round_ != self.round:
            return []
        left = sorted(self._unaccounted)
        self._unaccounted.clear()
        return left

    @property
    def pending(self) -> frozenset[str]:
        return frozenset(self._unaccounted)
