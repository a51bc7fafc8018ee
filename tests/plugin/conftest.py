"""Fixtures for the plugin's tests: an in-memory canvas and the real server."""

from __future__ import annotations

import sys

import pytest

from support.servers import ProcessServer


@pytest.fixture(scope="session", autouse=True)
def one_qt_binding():
    """After every plugin test: the other binding was never loaded (two Qt's in one
    Krita would crash it). Matters in the PyQt6 run, where PyQt5 is importable."""
    yield
    from krita_diffusers import qt

    other = qt.PYQT6 if qt.BINDING == qt.PYQT5 else qt.PYQT5
    assert other not in sys.modules, f"{other} was loaded beside {qt.BINDING}"


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
