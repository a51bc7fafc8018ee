"""Fixtures for the plugin's tests: an in-memory canvas and the real server."""

from __future__ import annotations

import pytest

from support.servers import ProcessServer


@pytest.fixture(scope="session")
def live_server(tmp_path_factory):
    server = ProcessServer(tmp_path_factory.mktemp("kd-plugin-server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def canvas():
    from plugin.memory_canvas import MemoryCanvas

    return MemoryCanvas(64, 64)


@pytest.fixture
def make_core():
    """Builds the shared plugin core a docker attaches to (one per Krita in real
    life) from settings; every core made is shut down after the test."""
    from krita_diffusers.core import PluginCore
    from krita_diffusers.settings import MemoryStore, Settings, save

    cores = []

    def make(store=None, **settings):
        if store is None:
            store = MemoryStore()
            save(store, Settings(**settings))
        core = PluginCore(store)
        cores.append(core)
        return core

    yield make
    for core in cores:
        core.shutdown()
