"""One engine on the embedded tiny model for the engine tests (diffusers imports once)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def embedded_engine(kd_device):
    from kd_server.engine import Engine
    from kd_server.library import ModelLibrary

    return Engine(ModelLibrary([]), device=kd_device)


@pytest.fixture(scope="session")
def control_engine(tmp_path_factory, kd_device):
    """The embedded model with tiny control models in ComfyUI's folders."""
    from kd_server.engine import Engine
    from kd_server.library import ModelLibrary
    from support.control import write_control_models

    root = write_control_models(tmp_path_factory.mktemp("comfyui"))
    return Engine(ModelLibrary([root]), device=kd_device)
