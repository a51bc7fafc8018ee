"""Suite-wide set-up: no network, offscreen Qt, no server state on disk.

Import paths are declared in pytest.ini."""

import contextlib
import os

import pytest

# Before anything imports diffusers or huggingface_hub: a slip to the hub fails at once.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Servers the tests start keep nothing on disk (and never in the real home folder)
# unless a test gives one a state folder of its own.
os.environ["KD_STATE_DIR"] = ""


def pytest_addoption(parser):
    """`--hardening-full`: run tests/hardening in full mode (thousands of fuzz cases,
    bigger load); the default quick mode keeps the suite short. KD_HARDENING_FULL=1
    does the same."""
    parser.addoption(
        "--kd-device",
        default=os.environ.get("KD_TEST_DEVICE", "cpu"),
        help="where the shared test engines run: cpu (default) or cuda (bench/gpu_run.sh)",
    )
    parser.addoption(
        "--hardening-full",
        action="store_true",
        default=False,
        help="tests/hardening: thousands of fuzz cases and a bigger load (slow)",
    )


@pytest.fixture(scope="session")
def library():
    """The embedded model only; folders with their own models override this."""
    from kd_server.library import ModelLibrary

    return ModelLibrary([])


@pytest.fixture(scope="session")
def kd_device(pytestconfig) -> str:
    """The device of the shared test engines (`--kd-device`, KD_TEST_DEVICE)."""
    return str(pytestconfig.getoption("--kd-device"))


@pytest.fixture(scope="session")
def engine(library, kd_device):
    """One engine, shared by the live servers of the api and hardening tests."""
    from kd_server.engine import Engine

    return Engine(library, device=kd_device)


@pytest.fixture
def server_factory(engine, library):
    """Start extra live servers with other settings (token, small limits, fault
    injection) for one test, on the `engine` and `library` fixtures of the test's own
    folder unless others are passed."""
    from api.live import start_server, stop_server
    from kd_server.config import Settings

    started = []
    folder_engine, folder_library = engine, library

    def factory(engine=None, library=None, **settings):
        live = start_server(
            Settings(device="cpu", **settings),
            engine or folder_engine,
            library or folder_library,
        )
        started.append(live)
        return live

    yield factory
    for live in started:
        with contextlib.suppress(Exception):
            stop_server(live)
