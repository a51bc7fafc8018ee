"""One engine on the embedded tiny model for the engine tests (diffusers imports once)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def embedded_engine():
    from kd_server.engine import Engine
    from kd_server.library import ModelLibrary

    return Engine(ModelLibrary([]), device="cpu")
