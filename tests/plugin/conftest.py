"""Fixtures for the plugin's tests: an in-memory canvas and the real server."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kd_plugin_server import LiveServer


@pytest.fixture(scope="session")
def live_server(tmp_path_factory):
    server = LiveServer(tmp_path_factory.mktemp("kd-plugin-server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def canvas():
    from memory_canvas import MemoryCanvas

    return MemoryCanvas(64, 64)
