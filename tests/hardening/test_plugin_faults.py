"""The plugin when its server dies mid-job: the docker (real widgets, offscreen) with
the in-memory canvas, against the real server in its own process, killed with
SIGKILL (a crash, not a clean shutdown: no `cancelled` event, no close frame).

The artist must see that the server is gone, nothing may be written to the canvas,
and the plugin must reconnect by itself when the server is back. A server that keeps
its queue on disk (a state folder) runs the job again, and its result reaches the
canvas as if nothing had happened; a server that keeps nothing has truly lost the
job, which then ends as failed, saying so, so the panel is not busy forever.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from plugin.memory_canvas import MemoryCanvas
from PyQt5.QtWidgets import QLabel
from pytestqt.qtbot import QtBot

from hardening.figures import record
from hardening.support import HANG_GUARD_S, ProcessServer
from krita_diffusers import images
from krita_diffusers.client import ConnectionState
from krita_diffusers.core import PluginCore
from krita_diffusers.docker import DiffusersPanel
from krita_diffusers.jobs import Job, JobStatus
from krita_diffusers.protocol import LOST_JOB_MESSAGE
from krita_diffusers.settings import MemoryStore, Settings, save

WAIT_MS = 180_000


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ProcessServer]:
    live = ProcessServer(tmp_path)
    live.start()
    yield live
    live.stop()


@pytest.fixture
def durable(tmp_path: Path) -> Iterator[ProcessServer]:
    """The server as `serve` runs it by default: jobs journaled in a state folder."""
    live = ProcessServer(tmp_path, state_dir=str(tmp_path / "state"))
    live.start()
    yield live
    live.stop()


def docker_for(qtbot: QtBot, canvas: MemoryCanvas, settings: Settings) -> DiffusersPanel:
    store = MemoryStore()
    save(store, settings)
    panel = DiffusersPanel(canvas, PluginCore(store))
    qtbot.addWidget(panel)
    qtbot.waitUntil(lambda: panel.client.state is ConnectionState.CONNECTED, timeout=WAIT_MS)
    return panel


def kill_mid_job(qtbot: QtBot, panel: DiffusersPanel, server: ProcessServer, prompt: str) -> Job:
    """Generate, kill the server once the job has made a step, and wait until the
    docker has noticed; the job it was waiting for is returned."""
    panel.prompt.setPlainText(prompt)
    panel.generate_button.click()
    qtbot.waitUntil(lambda: bool(panel.controller.jobs), timeout=WAIT_MS)
    job = next(iter(panel.controller.jobs.values()))
    qtbot.waitUntil(lambda: job.status is JobStatus.RUNNING and job.step >= 1, timeout=WAIT_MS)
    server.kill()
    qtbot.waitUntil(lambda: panel.client.state is ConnectionState.UNREACHABLE, timeout=WAIT_MS)
    assert "Cannot reach the server" in panel.findChild(QLabel, "kd-connection").text()
    return job


def test_server_killed_mid_job_is_shown_and_survived(qtbot, server: ProcessServer):
    canvas = MemoryCanvas(64, 64)
    # a job long enough to be killed in the middle of (512 px, 150 steps on a CPU)
    settings = Settings(server_url=server.url, steps=150, preview_every=1, working_resolution=512)
    panel = docker_for(qtbot, canvas, settings)
    try:
        job = kill_mid_job(qtbot, panel, server, "interrupted")
        assert canvas.layers == []
        assert job.status is not JobStatus.FINISHED

        server.start()  # same port: the plugin finds it again by itself
        qtbot.waitUntil(lambda: panel.client.state is ConnectionState.CONNECTED, timeout=WAIT_MS)
        # the new server keeps nothing on disk and never heard of the job: it ends as
        # failed, the panel is free
        qtbot.waitUntil(lambda: job.done, timeout=WAIT_MS)
        assert job.status is JobStatus.FAILED, job.status
        assert job.error == LOST_JOB_MESSAGE and "restart" in job.error
        assert not panel.controller.busy and panel.generate_button.isEnabled()
        assert canvas.layers == []
        assert panel.history.count() == 0
    finally:
        panel.shutdown()
        panel.core.shutdown()
    record("plugin_server_killed_mid_job", "shown, canvas untouched, reconnected, job failed")


def test_a_result_waited_for_across_a_server_restart_reaches_the_canvas(
    qtbot, durable: ProcessServer
):
    """Issue 20: the docker waiting for a result while the server is killed and
    started again gets that result, and it goes onto the canvas; nothing is lost."""
    canvas = MemoryCanvas(64, 64)
    # long enough to be mid-job when killed (40 steps of the tiny model at 64 px)
    settings = Settings(server_url=durable.url, steps=40, preview_every=1, working_resolution=64)
    panel = docker_for(qtbot, canvas, settings)
    try:
        job = kill_mid_job(qtbot, panel, durable, "across a restart")
        assert job.status is JobStatus.RUNNING and not job.results  # nothing came yet

        durable.start()  # the same state folder and port
        qtbot.waitUntil(lambda: panel.history.count() == 1, timeout=WAIT_MS)
        assert job.status is JobStatus.FINISHED and job.error is None, job
        assert panel.progress.text() == "Done: 1 result"
        error = panel.findChild(QLabel, "kd-error")
        assert not error.isVisible() and error.text() == "", error.text()
        assert not panel.controller.busy

        panel.apply_button.click()  # the new result is selected: Apply puts it on
        qtbot.waitUntil(lambda: len(canvas.layers) == 1, timeout=WAIT_MS)
        item = panel.controller.history.items[0]
        layer = canvas.layers[0].image
        assert layer.name == f"across a restart (seed {item.seed})"
        # the very pixels the restarted server made for this job
        reply = requests.get(f"{durable.url}/v1/jobs/{job.job_id}/images/0", timeout=HANG_GUARD_S)
        assert reply.status_code == 200, reply.text
        assert layer.data == images.png_to_pixels(reply.content, 64, 64, canvas.pixel_order)
    finally:
        panel.shutdown()
        panel.core.shutdown()
    record("plugin_result_across_restart", "job resumed after SIGKILL, result on the canvas")
