"""Control rows of the docker against the real server process, with tiny ControlNets
in a models folder it reads (`model_dirs`, laid out as ComfyUI keeps them).

Sizes and step counts stay tiny; waits are for events, never for a time.
"""

from __future__ import annotations

import pytest

from krita_diffusers.client import ConnectionState
from krita_diffusers.docker import DiffusersPanel
from krita_diffusers.geometry import Rect
from krita_diffusers.qt import QComboBox, QDoubleSpinBox, QToolButton, QWidget
from krita_diffusers.settings import MemoryStore, Settings, save
from support.control import DEPTH, IP_ADAPTER, LINES, write_control_models
from support.servers import ProcessServer

WAIT_MS = 180_000


@pytest.fixture(scope="module")
def control_server(tmp_path_factory):
    models = write_control_models(tmp_path_factory.mktemp("comfyui"))
    server = ProcessServer(tmp_path_factory.mktemp("kd-control-server"), model_dirs=[str(models)])
    server.start()
    yield server
    server.stop()


@pytest.fixture
def panel(qtbot, canvas, control_server, make_core):
    store = MemoryStore()
    save(
        store,
        Settings(
            server_url=control_server.url,
            steps=2,
            preview_every=0,
            working_resolution=64,
            context_margin=4,
            mask_grow=0,
            mask_feather=0,
        ),
    )
    made = DiffusersPanel(canvas, make_core(store))
    qtbot.addWidget(made)
    qtbot.waitUntil(lambda: made.client.state is ConnectionState.CONNECTED, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: bool(made.models.controls), timeout=WAIT_MS)
    yield made
    made.shutdown()


def _result_png(panel, qtbot, count: int) -> bytes:
    qtbot.waitUntil(lambda: panel.history.count() == count, timeout=WAIT_MS)
    assert panel.error.text() == ""
    return panel.controller.history.items[0].png  # newest first


def test_a_control_row_changes_the_job_and_the_server_accepts_it(panel, qtbot, canvas):
    """The same inpaint job (same seed) without and then with a depth control row: the
    server accepts the control and the result differs."""
    canvas.add_layer("depth-1", "depth", rgba=(0, 0, 0, 255))
    canvas.paint("depth-1", Rect(16, 16, 24, 24), (255, 255, 255, 255))
    canvas.select(Rect(12, 12, 32, 32))
    panel.prompt.setPlainText("a ball")
    panel.seed.setText("77")
    panel.seed_lock.setChecked(True)
    panel.generate_button.click()
    without = _result_png(panel, qtbot, 1)

    panel.findChild(QToolButton, "kd-control-add").click()
    row = panel.findChild(QWidget, "kd-control-row-1")
    layer = row.findChild(QComboBox, "kd-control-layer-1")
    mode = row.findChild(QComboBox, "kd-control-mode-1")
    strength = row.findChild(QDoubleSpinBox, "kd-control-strength-1")
    assert layer.itemData(layer.currentIndex()) == "depth-1"  # the only layer: chosen
    labels = [mode.itemText(i) for i in range(mode.count())]
    assert labels == [f"{DEPTH} (depth)", f"{LINES} (lineart)"]  # sd15 ControlNets only
    assert not any("ip-adapter" in label for label in labels)
    strength.setValue(2.0)
    panel.findChild(QToolButton, "kd-control-range-toggle-1").click()
    end = row.findChild(QDoubleSpinBox, "kd-control-end-1")
    assert end.isVisibleTo(panel)
    end.setValue(0.9)
    assert panel.current_input().controls[0].end == 0.9
    panel.generate_button.click()
    with_control = _result_png(panel, qtbot, 2)
    assert with_control != without


def test_removing_a_control_row_takes_it_out_of_the_job(panel, qtbot):
    add = panel.findChild(QToolButton, "kd-control-add")
    add.click()
    add.click()
    assert panel.findChild(QWidget, "kd-control-row-2") is not None
    panel.findChild(QToolButton, "kd-control-remove-1").click()
    assert [row.number for row in panel.control_rows] == [2]
    assert len(panel.current_input().controls) == 1


def test_from_canvas_adds_a_control_layer_over_the_region_and_selects_it(panel, qtbot, canvas):
    canvas.select(Rect(20, 24, 10, 6))
    panel.findChild(QToolButton, "kd-control-add").click()
    mode = panel.findChild(QComboBox, "kd-control-mode-1")
    mode.setCurrentIndex(mode.findText(f"{DEPTH} (depth)"))
    panel.findChild(QToolButton, "kd-control-preprocess-1").click()
    qtbot.waitUntil(lambda: len(canvas.layers) == 1, timeout=WAIT_MS)
    image = canvas.layers[0].image
    assert image.name == "Depth (control)"
    assert image.rect == Rect(16, 20, 18, 14)  # the selection plus its context
    layer = panel.findChild(QComboBox, "kd-control-layer-1")
    assert layer.currentData() == "inserted-1" and layer.currentText() == "Depth (control)"
    assert panel.error.text() == ""


def test_a_reference_layer_is_accepted_by_the_server(panel, qtbot, canvas):
    canvas.add_layer("look-1", "look", rgba=(30, 90, 200, 255))
    panel.prompt.setPlainText("a ball")
    panel.findChild(QToolButton, "kd-reference-toggle").click()
    model = panel.findChild(QComboBox, "kd-reference-model")
    assert [model.itemText(i) for i in range(model.count())] == [IP_ADAPTER]
    layer = panel.findChild(QComboBox, "kd-reference-layer")
    layer.setCurrentIndex(layer.findData("look-1"))
    panel.findChild(QDoubleSpinBox, "kd-reference-weight").setValue(1.0)
    assert panel.current_input().reference is not None
    panel.generate_button.click()
    _result_png(panel, qtbot, 1)
