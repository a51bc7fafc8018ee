"""Fixtures of the hardening suite: one engine on the embedded tiny model (built once),
real uvicorn servers on loopback around it, and the quick/full switch.

Servers run in a thread of the test process where a test needs to look inside (the
event hub, live tensors); tests that kill the server, measure its memory alone or
read its log use `hardening.support.ProcessServer` instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from api.live import LiveServer, start_server, stop_server
from hardening.support import TOKEN, ProcessServer, full_mode
from kd_server.config import Settings


@pytest.fixture(scope="session")
def full(pytestconfig: pytest.Config) -> bool:
    return full_mode(pytestconfig)


@pytest.fixture(scope="session")
def token_server(engine: Any, library: Any) -> Iterator[LiveServer]:
    """A server with a token and tight limits: a small queue and pixel budget keep
    what the fuzzer gets accepted cheap on this CPU."""
    settings = Settings(device="cpu", token=TOKEN, max_queue=4, max_pixels=2 * 128 * 128)
    live = start_server(settings, engine, library)
    yield live
    stop_server(live)


@pytest.fixture(scope="session")
def process_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessServer]:
    """The real CLI server in its own process, with a token and a small queue: its
    memory is measured alone under load, and its log is read for the token at the end."""
    live = ProcessServer(tmp_path_factory.mktemp("kd-process"), token=TOKEN, max_queue=6)
    live.start()
    yield live
    live.stop()
