"""Upscale, hi-res fix and Expand through the docker's own widgets against the real
server process (embedded tiny model, protocol 5). Sizes stay tiny: the machine is
small and shared. Waits are for what the artist would see, never for a time."""

from __future__ import annotations

import pytest
from plugin.memory_canvas import MemoryCanvas

from krita_diffusers import images
from krita_diffusers.client import ConnectionState
from krita_diffusers.docker import DiffusersPanel
from krita_diffusers.geometry import Rect
from krita_diffusers.protocol import Task
from krita_diffusers.qt import (
    QCheckBox,
    QComboBox,
    QListWidget,
    QPushButton,
    QSpinBox,
    Qt,
    QToolButton,
)
from krita_diffusers.settings import MemoryStore, Settings, save
from krita_diffusers.upscaling import LANCZOS, Destination
from modelkit.upscalers import write_esrgan, write_malicious_pickle
from support.servers import ProcessServer

WAIT_MS = 240_000


def patterned(width: int, height: int) -> MemoryCanvas:
    """A canvas of coloured 8x8 checks, so any change to it shows."""
    canvas = MemoryCanvas(width, height)
    rows = []
    for y in range(height):
        row = bytearray()
        for x in range(width):
            on = (x // 8 + y // 8) % 2
            row += bytes((200, 40, 40, 255) if on else (40, 60, 200, 255))
        rows.append(bytes(row))
    canvas.pixels = b"".join(rows)
    return canvas


@pytest.fixture
def make_panel(qtbot, live_server, make_core):
    panels = []

    def make(canvas: MemoryCanvas, **overrides):
        values = dict(server_url=live_server.url, steps=4, preview_every=1, working_resolution=64)
        values.update(overrides)
        store = MemoryStore()
        save(store, Settings(**values))
        panel = DiffusersPanel(canvas, make_core(store))
        qtbot.addWidget(panel)
        panels.append(panel)
        qtbot.waitUntil(lambda: panel.client.state is ConnectionState.CONNECTED, timeout=WAIT_MS)
        qtbot.waitUntil(lambda: panel.model.count() >= 2, timeout=WAIT_MS)
        assert panel.client.protocol >= 5, panel.client.health
        return panel

    yield make
    for panel in panels:
        panel.shutdown()


def wait_for_results(qtbot, panel, count: int) -> None:
    history = panel.findChild(QListWidget, "kd-history")
    qtbot.waitUntil(lambda: history.count() >= count or panel.error.text() != "", timeout=WAIT_MS)
    assert panel.error.text() == "", panel.error.text()
    qtbot.waitUntil(lambda: not panel.controller.busy, timeout=WAIT_MS)


def result_size(panel) -> tuple[int, int]:
    image = images.decode(panel.controller.history.items[0].png)
    return image.width(), image.height()


@pytest.mark.parametrize("destination", list(Destination))
def test_upscale_makes_the_target_size_as_a_new_document_or_a_scaled_layer(
    qtbot, make_panel, destination
):
    canvas = patterned(64, 48)
    original = canvas.pixels
    panel = make_panel(canvas)
    panel.findChild(QToolButton, "kd-upscale-toggle").click()
    box = panel.upscale_box
    assert box.isVisibleTo(panel)
    upscaler = panel.findChild(QComboBox, "kd-upscale-upscaler")
    assert upscaler.itemText(0) == LANCZOS
    factor = panel.findChild(QComboBox, "kd-upscale-factor")
    factor.setCurrentIndex(factor.findText("2x"))
    panel.findChild(QSpinBox, "kd-upscale-strength").setValue(30)
    where = panel.findChild(QComboBox, "kd-upscale-destination")
    where.setCurrentIndex(where.findData(destination))
    panel.prompt.setPlainText("sharp checks")
    panel.findChild(QPushButton, "kd-upscale").click()
    assert panel.cancel_button.isEnabled()  # progress and cancel as for any job
    wait_for_results(qtbot, panel, 1)
    item = panel.controller.history.items[0]
    assert item.task is Task.UPSCALE and item.region == Rect(0, 0, 128, 96)
    assert result_size(panel) == (128, 96)
    assert canvas.pixels == original and canvas.layers == []  # nothing until applied

    panel.apply_button.click()
    if destination is Destination.NEW_DOCUMENT:
        qtbot.waitUntil(lambda: len(canvas.documents) == 1, timeout=WAIT_MS)
        assert canvas.documents[0].rect == Rect(0, 0, 128, 96)
        assert canvas.documents[0].name == "Upscaled 128x96: sharp checks"
        assert (canvas.width, canvas.height) == (64, 48) and canvas.pixels == original
    else:
        qtbot.waitUntil(lambda: len(canvas.layers) == 1, timeout=WAIT_MS)
        assert (canvas.width, canvas.height) == (128, 96) and canvas.scales == [(128, 96)]
        layer = canvas.layers[0].image
        assert layer.rect == Rect(0, 0, 128, 96) and canvas.documents == []
        assert min(layer.data[3::4]) == 255  # the whole picture, opaque


def test_hires_fix_generates_the_canvas_size_on_a_large_canvas(qtbot, make_panel):
    canvas = MemoryCanvas(240, 160)
    panel = make_panel(canvas, working_resolution=96)
    panel.prompt.setPlainText("wide hills")
    panel.generate_button.click()
    wait_for_results(qtbot, panel, 1)
    assert panel.controller.history.items[0].task is Task.TXT2IMG
    assert result_size(panel) == (240, 160)  # not the 120x80 first pass, scaled
    panel.apply_button.click()
    qtbot.waitUntil(lambda: len(canvas.layers) == 1, timeout=WAIT_MS)
    assert canvas.layers[0].image.rect == Rect(0, 0, 240, 160)


def test_without_hires_fix_the_first_pass_is_scaled(qtbot, make_panel):
    panel = make_panel(MemoryCanvas(240, 160), working_resolution=96, hires_fix=False)
    panel.prompt.setPlainText("wide hills")
    panel.generate_button.click()
    wait_for_results(qtbot, panel, 1)
    assert result_size(panel) == (120, 80)


def test_expand_grows_the_canvas_and_fills_the_new_area(qtbot, make_panel):
    canvas = patterned(64, 64)
    original = canvas.pixels
    panel = make_panel(canvas, context_margin=16, mask_feather=4)
    panel.findChild(QToolButton, "kd-expand-toggle").click()
    panel.findChild(QSpinBox, "kd-expand-pixels").setValue(32)
    assert panel.findChild(QCheckBox, "kd-expand-right").isChecked()  # the default side
    panel.prompt.setPlainText("more checks")
    panel.findChild(QPushButton, "kd-expand").click()
    qtbot.waitUntil(lambda: canvas.width == 96, timeout=WAIT_MS)  # once accepted
    wait_for_results(qtbot, panel, 1)
    assert (canvas.width, canvas.height) == (96, 64)
    old_area = b"".join(canvas.read_pixels(Rect(0, y, 64, 1)) for y in range(64))
    assert old_area == original  # the artist's picture: untouched, at the same place

    panel.apply_button.click()
    qtbot.waitUntil(lambda: len(canvas.layers) == 1, timeout=WAIT_MS)
    layer = canvas.layers[0].image
    assert layer.rect == Rect(32, 0, 64, 64)  # the strip and 32 px of context
    alpha = layer.data[3::4]
    new_area = [alpha[y * 64 + x] for y in range(64) for x in range(32, 64)]
    assert min(new_area) == 255, "the new area must be filled, not transparent"
    assert max(alpha[y * 64 + x] for y in range(64) for x in range(0, 26)) == 0
    colours = {layer.data[i : i + 3] for i in range(0, len(layer.data), 4 * 7)}
    assert len(colours) > 4, "a flat fill, not a picture"


@pytest.fixture(scope="module")
def upscaler_server(tmp_path_factory):
    """A server whose model folder has a tiny 4x ESRGAN (ComfyUI's `upscale_models`)
    and a pickle with code in it (A1111's `models/ESRGAN`), which it must list as
    unusable."""
    work = tmp_path_factory.mktemp("kd-upscaler-server")
    models = work / "models"
    write_esrgan(models / "upscale_models" / "4x-tiny.safetensors")
    write_malicious_pickle(models / "models" / "ESRGAN" / "evil.pth", work / "never-created")
    server = ProcessServer(work, model_dirs=[str(models)])
    server.start()
    yield server
    server.stop()


def test_an_upscaler_model_from_the_list_makes_the_result(qtbot, make_core, upscaler_server):
    canvas = patterned(64, 48)
    store = MemoryStore()
    save(store, Settings(server_url=upscaler_server.url, steps=4, preview_every=1))
    panel = DiffusersPanel(canvas, make_core(store))
    qtbot.addWidget(panel)
    try:
        combo = panel.findChild(QComboBox, "kd-upscale-upscaler")
        qtbot.waitUntil(lambda: combo.count() >= 3, timeout=WAIT_MS)
        labels = [combo.itemText(i) for i in range(combo.count())]
        assert labels[0] == LANCZOS and "4x-tiny (4x)" in labels, labels
        evil = combo.findData("evil")
        assert evil > 0, labels
        assert not combo.model().item(evil).isEnabled()  # listed, greyed out, with why
        assert combo.itemData(evil, Qt.ItemDataRole.ToolTipRole)
        combo.setCurrentIndex(combo.findData("4x-tiny"))
        panel.findChild(QSpinBox, "kd-upscale-strength").setValue(0)  # the model alone
        panel.findChild(QPushButton, "kd-upscale").click()
        wait_for_results(qtbot, panel, 1)
        assert result_size(panel) == (128, 96)
    finally:
        panel.shutdown()
