"""Model loads in one process run one at a time (kd_server.load_lock explains why: a
load swaps a torch method for the whole process while it builds the model)."""

from __future__ import annotations

import threading

import torch

from kd_server.devices import choose_device
from kd_server.library import EMBEDDED_ENTRY
from kd_server.load_lock import LOAD_LOCK
from kd_server.loading import load_model


def test_a_load_waits_while_another_load_holds_the_lock() -> None:
    loaded = threading.Event()
    failures: list[BaseException] = []

    def load() -> None:
        try:
            load_model(EMBEDDED_ENTRY, choose_device("cpu"))
        except BaseException as exc:  # reported by the assertion below
            failures.append(exc)
        loaded.set()

    with LOAD_LOCK:  # another thread's load in progress
        worker = threading.Thread(target=load, daemon=True)
        worker.start()
        # The tiny model loads in well under a second; held back, it has not loaded.
        assert not loaded.wait(timeout=3.0)
    assert loaded.wait(timeout=300) and not failures
    worker.join(timeout=10)


def test_loads_on_two_threads_leave_torch_as_it_was() -> None:
    original = torch.nn.Module.register_parameter
    threads = [
        threading.Thread(target=load_model, args=(EMBEDDED_ENTRY, choose_device("cpu")))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert torch.nn.Module.register_parameter is original
    assert torch.nn.Linear(2, 2).weight.device.type == "cpu"
