"""What the controller needs from a server client, and nothing more.

`client.ServerClient` implements it over HTTP and WebSocket; the controller's unit
tests implement it with a stand-in that answers from memory, so the controller's
logic (jobs, results, retries, history) is tested without a network, while the
real-server tests keep covering the real client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from .protocol import JobRequest

OkCallback = Callable[[Any], None]
ErrorCallback = Callable[[str], None]


class BoundSignal(Protocol):
    """The part of a bound Qt signal the controller uses."""

    def connect(self, slot: Callable[..., Any]) -> Any: ...


class JobClient(Protocol):
    """Submits and follows jobs. Every callback runs later on the GUI thread; an error
    callback gets a sentence for the artist.

    Signals: `event_received(protocol.Event)` for each frame of the event stream,
    `reconnected()` after every (re)connection, `models_changed(protocol.ModelList)`.
    """

    event_received: BoundSignal
    reconnected: BoundSignal
    models_changed: BoundSignal

    @property
    def resumes(self) -> bool:
        """After `reconnected`, the server sends a `state` event for each job of this
        client it knows (protocol 2 and later)."""
        ...

    @property
    def protocol(self) -> int:
        """The server's protocol version (`/v1/health`); fields of a later protocol
        are never sent to it."""
        ...

    def submit(
        self, prepare: Callable[[], JobRequest], on_ok: OkCallback, on_error: ErrorCallback
    ) -> None:
        """POST a job; `prepare` builds the request off the GUI thread; `on_ok` gets the
        202 body (`job_id`, `position`)."""
        ...

    def cancel(
        self, job_id: str, on_ok: OkCallback | None = None, on_error: ErrorCallback | None = None
    ) -> None: ...

    def job_status(
        self, job_id: str, on_ok: OkCallback, on_error: ErrorCallback | None = None
    ) -> None:
        """The job's record (`GET /v1/jobs/{id}`); a job the server does not know
        (`404 job_not_found`) comes back as failed (`protocol.lost_job_status`)."""
        ...

    def fetch(self, path: str, on_ok: OkCallback, on_error: ErrorCallback | None = None) -> None:
        """A result's bytes (PNG) from a URL relative to the server root."""
        ...

    def preprocess(
        self,
        mode: str,
        prepare: Callable[[], bytes],
        on_ok: OkCallback,
        on_error: ErrorCallback,
    ) -> None:
        """`POST /v1/preprocess` (protocol 4): `prepare` makes the picture's PNG off
        the GUI thread; `on_ok` gets the body (`mode`, `image` base64 PNG, size)."""
        ...
