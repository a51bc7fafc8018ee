"""The docker against the real server with its embedded tiny model.

Sizes and step counts stay tiny: the machine is small and shared. Waits are for
events, never assertions about how long something took.
"""

from __future__ import annotations

import threading

import pytest

from krita_diffusers.client import ConnectionState
from krita_diffusers.docker import DiffusersPanel
from krita_diffusers.geometry import Rect
from krita_diffusers.guidance import WHAT_NEXT
from krita_diffusers.jobs import JobStatus
from krita_diffusers.protocol import Task
from krita_diffusers.qt import QLabel, QListWidget, QProgressBar, QPushButton
from krita_diffusers.settings import MemoryStore, Settings, save
from support.servers import ProcessServer

WAIT_MS = 180_000


@pytest.fixture
def make_panel(qtbot, canvas, live_server, make_core):
    panels = []

    def make(store=None, open_image=None, **overrides):
        values = dict(server_url=live_server.url, steps=3, preview_every=1, working_resolution=64)
        values.update(overrides)
        store = store if store is not None else MemoryStore()
        save(store, Settings(**values))
        core = make_core(store)
        panel = DiffusersPanel(canvas, core, open_image)
        qtbot.addWidget(panel)
        panels.append(panel)
        qtbot.waitUntil(lambda: panel.client.state is ConnectionState.CONNECTED, timeout=WAIT_MS)
        return panel

    yield make
    for panel in panels:
        panel.shutdown()


def watch(panel):
    """Records what the artist would have seen: progress texts and previews."""
    seen = {"progress": [], "previews": 0}
    progress = panel.findChild(QProgressBar, "kd-progress")
    panel.controller.job_updated.connect(lambda _job: seen["progress"].append(progress.text()))
    panel.controller.preview_ready.connect(
        lambda _image: seen.__setitem__("previews", seen["previews"] + 1)
    )
    return seen


def test_connection_shows_server_device(make_panel):
    panel = make_panel()
    text = panel.findChild(QLabel, "kd-connection").text()
    assert text.startswith("Connected: ") and panel.client.health.get("device") in text
    assert panel.model.count() >= 2  # "Server default" and the embedded model


def test_generate_shows_progress_preview_then_result(make_panel, qtbot, canvas):
    panel = make_panel()
    seen = watch(panel)
    panel.prompt.setPlainText("a small red square")
    panel.generate_button.click()
    history = panel.findChild(QListWidget, "kd-history")
    qtbot.waitUntil(lambda: history.count() == 1, timeout=WAIT_MS)
    assert any(text.startswith("Step ") for text in seen["progress"])
    assert seen["previews"] >= 1
    assert not panel.findChild(QLabel, "kd-preview").pixmap().isNull()
    item = panel.controller.history.items[0]
    assert item.task is Task.TXT2IMG and item.region == Rect(0, 0, 64, 64)
    assert panel.seed.text() == str(item.seed)
    assert panel.progress.text() == "Done: 1 result"
    # the newest result is selected and shown in the docker, not put on the canvas
    assert panel.history.currentItem().isSelected() and canvas.layers == []
    assert not panel.history.currentItem().icon().isNull()
    panel.apply_button.click()
    qtbot.waitUntil(lambda: len(canvas.layers) == 1, timeout=WAIT_MS)
    assert canvas.layers[0].image.rect == Rect(0, 0, 64, 64)
    assert canvas.layers[0].image.name == f"a small red square (seed {item.seed})"
    assert panel.client.network_threads
    assert threading.main_thread() not in panel.client.network_threads
    # Daemon threads only: quitting Krita never waits on a request in flight.
    assert all(thread.daemon for thread in panel.client.network_threads)


def test_inpaint_result_lands_exactly_over_the_grown_selection(make_panel, qtbot, canvas):
    panel = make_panel(context_margin=4, mask_feather=0, mask_grow=0)
    canvas.select(Rect(20, 24, 10, 6))
    panel.selection_timer.timeout.emit()
    assert panel.generate_button.text() == "Inpaint"
    panel.prompt.setPlainText("a blue dot")
    panel.seed.setText("1234")
    panel.seed_lock.setChecked(True)
    panel.batch.setValue(2)
    panel.generate_button.click()
    qtbot.waitUntil(lambda: panel.history.count() == 2, timeout=WAIT_MS)
    items = panel.controller.history.items
    assert {item.seed for item in items} == {1234, 1235}
    assert all(item.region == Rect(16, 20, 18, 14) for item in items)
    panel.history.selectAll()
    panel.apply_button.click()
    qtbot.waitUntil(lambda: len(canvas.layers) == 2, timeout=WAIT_MS)
    layers = canvas.layers
    assert {layer.group for layer in layers} == {"a blue dot (batch)"}
    image = layers[0].image
    assert image.rect == Rect(16, 20, 18, 14)
    alpha = image.data[3::4]
    corner, inside = alpha[0], alpha[(4 + 3) * 18 + 4 + 5]  # region corner vs. selection centre
    assert corner == 0 and inside == 255


def test_cancel_stops_a_running_job(make_panel, qtbot):
    panel = make_panel(steps=150, working_resolution=512, preview_every=0)
    panel.prompt.setPlainText("a long job")
    panel.generate_button.click()
    qtbot.waitUntil(lambda: bool(panel.controller.jobs), timeout=WAIT_MS)
    job = next(iter(panel.controller.jobs.values()))
    qtbot.waitUntil(lambda: job.status is JobStatus.RUNNING and job.step >= 1, timeout=WAIT_MS)
    assert panel.cancel_button.isEnabled()
    panel.cancel_button.click()
    qtbot.waitUntil(lambda: job.done, timeout=WAIT_MS)
    assert job.status is JobStatus.CANCELLED and job.step < 150
    assert panel.progress.text() == "Cancelled"
    assert not panel.cancel_button.isEnabled()
    assert panel.history.count() == 0


def test_missed_events_are_recovered_from_the_job_record(make_panel, qtbot):
    panel = make_panel()
    panel.client.stop()  # the event stream is gone while the job runs
    panel.prompt.setPlainText("nobody is listening")
    panel.generate_button.click()
    qtbot.waitUntil(lambda: bool(panel.controller.jobs), timeout=WAIT_MS)
    job = next(iter(panel.controller.jobs.values()))

    def finished_on_server():
        panel.client.job_status(job.job_id, lambda data: seen.append(data.get("status")))
        return bool(seen) and seen[-1] == "finished"

    seen: list[str] = []
    qtbot.waitUntil(finished_on_server, timeout=WAIT_MS)
    panel.client.start()  # reconnecting reads the job's record
    qtbot.waitUntil(lambda: panel.history.count() == 1, timeout=WAIT_MS)
    assert job.status is JobStatus.FINISHED


def test_stopped_server_is_reported_and_a_restarted_one_picked_up(make_panel, qtbot, live_server):
    panel = make_panel()
    connection = panel.findChild(QLabel, "kd-connection")
    error = panel.findChild(QLabel, "kd-error")
    live_server.stop()
    try:
        qtbot.waitUntil(lambda: panel.client.state is ConnectionState.UNREACHABLE, timeout=WAIT_MS)
        assert "Cannot reach the server" in connection.text()
        panel.prompt.setPlainText("a cat")
        panel.generate_button.click()  # pressed while the server is down
        qtbot.waitUntil(lambda: panel.progress.text().startswith("Not sent"), timeout=WAIT_MS)
        assert error.text() == ""  # said once, by the connection line
    finally:
        live_server.start()
    qtbot.waitUntil(lambda: panel.client.state is ConnectionState.CONNECTED, timeout=WAIT_MS)
    assert connection.text().startswith("Connected: ")
    assert error.text() == ""  # no stale message


def test_missing_model_is_explained(make_panel, qtbot):
    panel = make_panel()
    panel.model.addItem("ghost-model", "ghost-model")  # e.g. deleted since the list was read
    panel.model.setCurrentIndex(panel.model.count() - 1)
    panel.prompt.setPlainText("anything")
    panel.generate_button.click()
    error = panel.findChild(QLabel, "kd-error")
    qtbot.waitUntil(lambda: error.text() != "", timeout=WAIT_MS)
    assert "ghost-model" in error.text() and "Pick another model" in error.text()
    assert panel.controller.jobs == {}


def test_server_with_a_token_refuses_until_the_token_is_set(qtbot, canvas, tmp_path, make_core):
    server = ProcessServer(tmp_path, token="s3cret")
    server.start()
    panel = DiffusersPanel(canvas, make_core(server_url=server.url))
    qtbot.addWidget(panel)
    try:
        qtbot.waitUntil(lambda: panel.client.state is ConnectionState.REFUSED, timeout=WAIT_MS)
        assert "token" in panel.findChild(QLabel, "kd-connection").text()
        panel.apply_settings(Settings(server_url=server.url, token="s3cret"))
        qtbot.waitUntil(lambda: panel.client.state is ConnectionState.CONNECTED, timeout=WAIT_MS)
    finally:
        panel.shutdown()
        server.stop()


def test_cancel_of_a_refused_submission_does_not_cancel_the_next_job(make_panel, qtbot):
    panel = make_panel()
    panel.model.addItem("ghost-model", "ghost-model")
    panel.model.setCurrentIndex(panel.model.count() - 1)
    panel.prompt.setPlainText("refused")
    panel.generate_button.click()
    panel.cancel_button.click()  # while the POST is on its way; the server refuses it
    error = panel.findChild(QLabel, "kd-error")
    qtbot.waitUntil(lambda: "ghost-model" in error.text(), timeout=WAIT_MS)
    panel.model.setCurrentIndex(0)
    panel.prompt.setPlainText("accepted")
    panel.generate_button.click()
    qtbot.waitUntil(lambda: bool(panel.controller.jobs), timeout=WAIT_MS)
    job = next(iter(panel.controller.jobs.values()))
    qtbot.waitUntil(lambda: job.done, timeout=WAIT_MS)
    assert job.status is JobStatus.FINISHED


def test_the_first_connection_says_what_next_and_offers_the_first_image(
    make_panel, tmp_path, monkeypatch, qtbot
):
    """Once per Krita profile: a short "what next", and the image the installer made."""
    data = tmp_path / "data"
    (data / "krita-diffusers").mkdir(parents=True)
    image = data / "krita-diffusers" / "first-image.png"
    image.write_bytes(b"\x89PNG")
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    opened = []
    store = MemoryStore()
    panel = make_panel(store=store, open_image=opened.append)
    panel.show()
    assert panel.welcome.isVisible()
    assert panel.findChild(QLabel, "kd-welcome-text").text() == WHAT_NEXT
    button = panel.findChild(QPushButton, "kd-open-first-image")
    assert button.isVisible()
    button.click()
    assert opened == [image] and not panel.welcome.isVisible()
    again = make_panel(store=store)  # a later start (or another window) of the same Krita
    again.show()
    assert not again.welcome.isVisible()
