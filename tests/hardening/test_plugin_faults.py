"""The plugin when its server dies mid-job: the docker (real widgets, offscreen) with
the in-memory canvas, against the real server in its own process, killed with
SIGKILL (a crash, not a clean shutdown: no `cancelled` event, no close frame).

The artist must see that the server is gone, nothing may be written to the canvas,
the plugin must reconnect by itself when the server is back, and the lost job must
not leave the panel busy forever.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hardening.figures import record
from hardening.support import ProcessServer
from plugin.memory_canvas import MemoryCanvas
from PyQt5.QtWidgets import QLabel

from krita_diffusers.client import ConnectionState
from krita_diffusers.core import PluginCore
from krita_diffusers.docker import DiffusersPanel
from krita_diffusers.jobs import JobStatus
from krita_diffusers.settings import MemoryStore, Settings, save

WAIT_MS = 180_000


@pytest.fixture
def server(tmp_path: Path):
    live = ProcessServer(tmp_path)
    live.start()
    yield live
    live.stop()


def test_server_killed_mid_job_is_shown_and_survived(qtbot, server: ProcessServer):
    canvas = MemoryCanvas(64, 64)
    store = MemoryStore()
    # a job long enough to be killed in the middle of (512 px, 150 steps on a CPU)
    save(store, Settings(server_url=server.url, steps=150, preview_every=1, working_resolution=512))
    core = PluginCore(store)
    panel = DiffusersPanel(canvas, core)
    qtbot.addWidget(panel)
    try:
        qtbot.waitUntil(lambda: panel.client.state is ConnectionState.CONNECTED, timeout=WAIT_MS)
        panel.prompt.setPlainText("interrupted")
        panel.generate_button.click()
        qtbot.waitUntil(lambda: bool(panel.controller.jobs), timeout=WAIT_MS)
        job = next(iter(panel.controller.jobs.values()))
        qtbot.waitUntil(lambda: job.status is JobStatus.RUNNING and job.step >= 1, timeout=WAIT_MS)

        server.kill()
        qtbot.waitUntil(lambda: panel.client.state is ConnectionState.UNREACHABLE, timeout=WAIT_MS)
        assert "Cannot reach the server" in panel.findChild(QLabel, "kd-connection").text()
        assert canvas.layers == []
        assert job.status is not JobStatus.FINISHED

        server.start()  # same port: the plugin finds it again by itself
        qtbot.waitUntil(lambda: panel.client.state is ConnectionState.CONNECTED, timeout=WAIT_MS)
        # the new server never heard of the job: it ends as failed, the panel is free
        qtbot.waitUntil(lambda: job.done, timeout=WAIT_MS)
        assert job.status is JobStatus.FAILED, job.status
        assert "restart" in (job.error or "").lower(), job.error
        assert not panel.controller.busy and panel.generate_button.isEnabled()
        assert canvas.layers == []
        assert panel.history.count() == 0
    finally:
        panel.shutdown()
        core.shutdown()
    record("plugin_server_killed_mid_job", "shown, canvas untouched, reconnected, job failed")
