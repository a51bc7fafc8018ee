"""A real server on a free loopback port: uvicorn in a thread, the real engine and the
embedded tiny model. Tests talk to it with `requests` and the `websockets` client.

One engine serves every server of the session (its lock keeps generations one at a
time), so the tiny model is built once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from api.live import LiveServer, start_server, stop_server
from kd_server.config import Settings


@pytest.fixture(scope="session")
def server(engine: Any, library: Any) -> Iterator[LiveServer]:
    """The shared server: default limits, no token."""
    live = start_server(Settings(device="cpu"), engine, library)
    yield live
    stop_server(live)
