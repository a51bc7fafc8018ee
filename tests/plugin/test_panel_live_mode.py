"""Live mode in the docker against the real server process (its embedded tiny model,
which has no fast settings, so the docker also says it is not fast enough).

The docker's own timer polls the region; waits are for what the artist would see,
never for a time.
"""

from __future__ import annotations

import pytest

from krita_diffusers.client import ConnectionState
from krita_diffusers.docker import DiffusersPanel
from krita_diffusers.geometry import Rect
from krita_diffusers.live_mode import NOT_FAST
from krita_diffusers.qt import QCheckBox, QLabel, QPushButton
from krita_diffusers.settings import MemoryStore, Settings, save

WAIT_MS = 180_000


@pytest.fixture
def panel(qtbot, canvas, live_server, make_core):
    store = MemoryStore()
    save(
        store,
        Settings(server_url=live_server.url, steps=3, preview_every=1, working_resolution=64),
    )
    made = DiffusersPanel(canvas, make_core(store))
    qtbot.addWidget(made)
    qtbot.waitUntil(lambda: made.client.state is ConnectionState.CONNECTED, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: made.model.count() >= 2, timeout=WAIT_MS)
    yield made
    made.shutdown()


def paint(canvas, rgba: tuple[int, int, int, int]) -> None:
    """The artist paints the top half of the picture."""
    half = canvas.width * canvas.height // 2
    canvas.pixels = bytes(rgba) * half + canvas.pixels[half * 4 :]


def wait_for_new_result(qtbot, panel, before) -> None:
    live = panel.live
    qtbot.waitUntil(lambda: live.result is not None and live.result is not before, timeout=WAIT_MS)


def test_live_follows_the_canvas_applies_and_turning_off_changes_nothing(qtbot, panel, canvas):
    toggle = panel.findChild(QCheckBox, "kd-live")
    apply = panel.findChild(QPushButton, "kd-live-apply")
    note = panel.findChild(QLabel, "kd-live-note")
    shown: list[object] = []
    panel.live.frame_ready.connect(shown.append)
    panel.prompt.setPlainText("a small red square")
    panel.strength.setValue(60)
    original = (canvas.pixels, list(canvas.layers))

    toggle.setChecked(True)
    assert panel.live.active and note.isVisibleTo(panel) and note.text() == NOT_FAST
    wait_for_new_result(qtbot, panel, None)
    # what the artist sees follows the result (its picture is decoded in the background)
    qtbot.waitUntil(
        lambda: bool(shown) and not panel.preview.pixmap().isNull() and apply.isEnabled(),
        timeout=WAIT_MS,
    )
    assert canvas.layers == []  # shown in the docker only
    toggle.setChecked(False)
    assert (canvas.pixels, canvas.layers) == original and not panel.live.active

    toggle.setChecked(True)
    wait_for_new_result(qtbot, panel, None)
    first_job = panel.live.session.current_job
    first = panel.live.result
    paint(canvas, (0, 0, 255, 255))
    wait_for_new_result(qtbot, panel, first)
    assert panel.live.session.current_job != first_job
    assert panel.live.frames_sent >= 2
    assert panel.live.result[1] == Rect(0, 0, 64, 64)  # no selection: the whole canvas

    qtbot.waitUntil(apply.isEnabled, timeout=WAIT_MS)  # the result's picture is shown
    apply.click()
    qtbot.waitUntil(lambda: len(canvas.layers) == 1, timeout=WAIT_MS)
    layer = canvas.layers[0].image
    assert layer.rect == Rect(0, 0, 64, 64) and layer.name.startswith("Live: a small red square")
    assert len(layer.data) == 64 * 64 * 4
    painted = (canvas.pixels, list(canvas.layers))
    toggle.setChecked(False)
    assert (canvas.pixels, canvas.layers) == painted and not apply.isEnabled()
    assert not panel.live_timer.isActive()
