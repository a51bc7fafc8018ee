"""Delivery of job events to WebSocket connections, one bounded buffer per connection.

The job worker publishes from its own thread and must never wait for a network peer:
a client whose connection has stalled (laptop asleep, slow Wi-Fi) would otherwise hold
up every other artist's job. So `EventHub.publish` only appends to in-memory buffers
and wakes the connection's sender coroutine; it never blocks on a socket.

Each buffer is bounded. When it is full, previews go first (the next one supersedes
them), then older progress events. Events that carry state a client cannot recover
from the next event (`queued`, `started`, `result`, `finished`, `failed`, `cancelled`)
are never dropped; if a consumer falls so far behind that even those pile up past a
hard limit, its connection is closed instead, and the client recovers with
`GET /v1/jobs/{id}`. Closing or losing a connection never touches the jobs.

This module knows nothing about HTTP, the queue or diffusion.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from kd_server.job_events import JobEvent as Event

log = logging.getLogger(__name__)

#: Event types that may be dropped for a slow consumer, most expendable first.
DROPPABLE_ORDER = ("preview", "progress")


class Subscription:
    """The buffer of one connection. `offer` from any thread, `get` from its event loop."""

    def __init__(
        self,
        client_id: str,
        loop: asyncio.AbstractEventLoop,
        capacity: int = 64,
        hard_limit: int = 1024,
    ) -> None:
        self.client_id = client_id
        self.capacity = capacity
        self.hard_limit = hard_limit
        self.dropped = 0
        self.close_reason: str | None = None
        self._loop = loop
        self._events: deque[Event] = deque()
        self._lock = threading.Lock()
        self._wakeup = asyncio.Event()
        self._wake_scheduled = False

    @property
    def closed(self) -> bool:
        return self.close_reason is not None

    def pending(self) -> int:
        with self._lock:
            return len(self._events)

    def offer(self, event: Event) -> None:
        """Queue `event` for sending; never blocks beyond a short in-memory lock."""
        with self._lock:
            if self.close_reason is not None:
                return
            if len(self._events) >= self.capacity and not self._make_room(event.kind):
                if event.kind in DROPPABLE_ORDER:
                    self.dropped += 1
                    return
                if len(self._events) >= self.hard_limit:
                    self.close_reason = "The client read events too slowly; reconnect."
                    self._events.clear()
                    self._schedule_wake()
                    return
            self._events.append(event)
            self._schedule_wake()

    def close(self, reason: str) -> None:
        """Ask the sender to stop once the buffered events are out (any thread)."""
        with self._lock:
            if self.close_reason is None:
                self.close_reason = reason
            self._schedule_wake()

    async def get(self) -> Event | None:
        """The next event, waiting for one; None once the subscription is closed and empty."""
        while True:
            with self._lock:
                if self._events:
                    return self._events.popleft()
                if self.close_reason is not None:
                    return None
                self._wakeup.clear()
            await self._wakeup.wait()

    def _make_room(self, incoming: str) -> bool:
        """Drop the oldest expendable event (never a more important one than `incoming`)."""
        for kind in DROPPABLE_ORDER:
            if incoming == "preview" and kind != "preview":
                return False  # a preview never pushes out progress
            for i, queued in enumerate(self._events):
                if queued.kind == kind:
                    del self._events[i]
                    self.dropped += 1
                    return True
        return False

    def _schedule_wake(self) -> None:
        """Wake the sender coroutine; coalesced so a burst costs one loop callback."""
        if self._wake_scheduled:
            return
        self._wake_scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the connection's loop is gone; nobody is listening
            self._wake_scheduled = False

    def _wake(self) -> None:
        with self._lock:
            self._wake_scheduled = False
        self._wakeup.set()


class EventHub:
    """Routes each job's events to the connections of the client that submitted it."""

    def __init__(self, capacity: int = 64, hard_limit: int = 1024) -> None:
        self.capacity = capacity
        self.hard_limit = hard_limit
        self._subscriptions: dict[str, set[Subscription]] = {}
        self._lock = threading.Lock()
        self._closed_reason: str | None = None  # set by close_all: no new listeners

    @contextmanager
    def subscribe(self, client_id: str) -> Iterator[Subscription]:
        """Register a connection for `client_id` for the duration of the `with` block."""
        sub = Subscription(client_id, asyncio.get_running_loop(), self.capacity, self.hard_limit)
        with self._lock:
            self._subscriptions.setdefault(client_id, set()).add(sub)
            if self._closed_reason is not None:  # connected while the server shuts down
                sub.close(self._closed_reason)
        try:
            yield sub
        finally:
            with self._lock:
                subs = self._subscriptions.get(client_id)
                if subs is not None:
                    subs.discard(sub)
                    if not subs:
                        del self._subscriptions[client_id]

    def publish(self, client_id: str | None, event: Event) -> None:
        """Hand `event` to every connection of `client_id`; a None client hears nothing."""
        if client_id is None:
            return
        with self._lock:
            subs = list(self._subscriptions.get(client_id, ()))
        for sub in subs:
            sub.offer(event)

    def connection_count(self) -> int:
        with self._lock:
            return sum(len(subs) for subs in self._subscriptions.values())

    def close_all(self, reason: str) -> None:
        """Tell every sender to finish what is buffered and close (server shutdown)."""
        with self._lock:
            self._closed_reason = reason
            subs = [sub for group in self._subscriptions.values() for sub in group]
        for sub in subs:
            sub.close(reason)
