"""Where the queue's jobs run (the queue's `Worker`s; see docs/scale-out.md).

- `processes`: one worker process per device of this server (`--device cuda:0
  --device cuda:1`, or `all`), each with its own engine and model cache.
- `local`: an engine of the server's own process as a worker (one device: the
  server as it always was; the tests' two-thread workers).
- `stream`: the messages a job sends back from another process or machine.
- `ray_serve`: workers on other machines, as replicas of a Ray Serve deployment; the
  gateway (this server: queue, fairness, events, results, auth) stays here. Imports
  Ray: only loaded when `ray_address` is set.

The queue decides which job runs next and on which free worker; a worker only runs
what it is handed. Nothing here changes the protocol clients see.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from kd_server.jobqueue import Worker


class Executor(Protocol):
    """A set of workers with a life of its own (a Ray deployment follows its replicas)."""

    def workers(self) -> Sequence[Worker]: ...

    def start(self, wake: Callable[[], None]) -> None:
        """Begin; call `wake` whenever a worker may have become ready."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class FixedWorkers:
    """Workers that are always there (the devices of this machine)."""

    members: tuple[Worker, ...]

    def workers(self) -> Sequence[Worker]:
        return self.members

    def start(self, wake: Callable[[], None]) -> None:
        pass

    def close(self) -> None:
        """Stop what the workers started (worker processes)."""
        for worker in self.members:
            close = getattr(worker, "close", None)
            if callable(close):
                close()
