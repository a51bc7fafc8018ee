"""Per-connection event buffers on their own: drop policy, routing, no blocking."""

from __future__ import annotations

import asyncio
import threading

from kd_server.events import EventHub
from kd_server.job_events import (
    JobCancelled,
    JobEvent,
    JobFinished,
    JobPreview,
    JobProgress,
    JobResult,
    ResultRef,
)


def event(kind: str, n: int = 0) -> JobEvent:
    """An event of the wire type `kind`; `n` tells events of one type apart."""
    made: dict[str, JobEvent] = {
        "preview": JobPreview("j", step=n, image=""),
        "progress": JobProgress("j", step=n, total=10),
        "result": JobResult("j", ResultRef(n, 0)),
        "finished": JobFinished("j", ()),
        "cancelled": JobCancelled("j"),
    }
    return made[kind]


def test_routing_by_client() -> None:
    async def main() -> None:
        hub = EventHub()
        with hub.subscribe("a") as a, hub.subscribe("b") as b:
            hub.publish("a", event("progress"))
            hub.publish(None, event("progress"))
            assert (await a.get()).kind == "progress"
            assert b.pending() == 0

    asyncio.run(main())


def test_previews_go_first_final_events_never() -> None:
    async def main() -> None:
        hub = EventHub(capacity=4, hard_limit=8)
        with hub.subscribe("a") as sub:
            for n in range(3):
                hub.publish("a", event("preview", n))
            hub.publish("a", event("progress", 0))
            hub.publish("a", event("result", 1))  # full: drops the oldest preview
            hub.publish("a", event("progress", 1))  # drops another preview
            hub.publish("a", event("preview", 9))  # full of better things: dropped
            hub.publish("a", event("finished"))
            got = [(await sub.get()).kind for _ in range(sub.pending())]
            assert got.count("finished") == 1 and got.count("result") == 1
            assert "preview" not in got[1:] and sub.dropped >= 3

    asyncio.run(main())


def test_stuck_consumer_is_cut_off_not_waited_for() -> None:
    async def main() -> None:
        hub = EventHub(capacity=2, hard_limit=4)
        with hub.subscribe("a") as sub:
            publisher = threading.Thread(
                target=lambda: [hub.publish("a", event("result", n)) for n in range(50)]
            )
            publisher.start()
            publisher.join(5)
            assert not publisher.is_alive()
            assert sub.closed
            assert await sub.get() is None

    asyncio.run(main())


def test_close_delivers_what_is_buffered() -> None:
    async def main() -> None:
        hub = EventHub()
        with hub.subscribe("a") as sub:
            hub.publish("a", event("cancelled"))
            hub.close_all("bye")
            hub.publish("a", event("progress"))  # after close: not delivered
            assert (await sub.get()).kind == "cancelled"
            assert await sub.get() is None

    asyncio.run(main())


def test_a_connection_opened_after_close_all_is_closed_too() -> None:
    """A WebSocket accepted while the server shuts down must not hold shutdown up."""

    async def main() -> None:
        hub = EventHub()
        hub.close_all("bye")
        with hub.subscribe("late") as sub:
            assert await asyncio.wait_for(sub.get(), 1) is None
            assert sub.close_reason == "bye"

    asyncio.run(main())
