"""Docker widgets and the controller where no server is needed (or none answers).

Real PyQt widgets offscreen (PyQt5, and PyQt6 in the second run of tests/run.sh); the
canvas is the in-memory test canvas.
"""

from __future__ import annotations

import threading

import pytest

from krita_diffusers import images
from krita_diffusers.client import ConnectionState
from krita_diffusers.docker import DiffusersPanel
from krita_diffusers.geometry import Rect
from krita_diffusers.protocol import Task
from krita_diffusers.qt import (
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QPushButton,
    QSettings,
    QSpinBox,
)
from krita_diffusers.qt_store import QtSettingsStore
from krita_diffusers.settings import FIELDS, Settings, load, save
from support.servers import free_port


@pytest.fixture
def dead_url():
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def make_panel(qtbot, canvas, dead_url, make_core):
    panels = []

    def make(store=None, url=dead_url, core=None, open_image=None, **settings):
        core = core or make_core(store, server_url=url, **settings)
        panel = DiffusersPanel(canvas, core, open_image)
        qtbot.addWidget(panel)
        panels.append(panel)
        return panel

    yield make
    for panel in panels:
        panel.shutdown()


def test_every_named_control_exists(make_panel):
    panel = make_panel()
    for name in (
        "kd-prompt",
        "kd-negative-prompt",
        "kd-generate",
        "kd-strength",
        "kd-model",
        "kd-batch",
        "kd-seed",
        "kd-seed-lock",
        "kd-progress",
        "kd-preview",
        "kd-cancel",
        "kd-history",
        "kd-settings",
        "kd-connection",
        "kd-start-server",
        "kd-retry",
        "kd-apply",
        "kd-discard",
        "kd-scroll",
    ):
        assert panel.findChild(object, name) is not None, name


def test_negative_prompt_is_collapsible(make_panel):
    panel = make_panel()
    panel.show()
    assert not panel.negative.isVisible()
    panel.negative_toggle.click()
    assert panel.negative.isVisible()
    panel.negative_toggle.click()
    assert not panel.negative.isVisible()


def test_generate_label_follows_strength_and_selection(make_panel, canvas):
    panel = make_panel()
    button = panel.findChild(QPushButton, "kd-generate")
    assert button.text() == "Generate"
    panel.strength.setValue(60)
    assert button.text() == "Refine"
    canvas.select(Rect(10, 10, 20, 20))
    panel.selection_timer.timeout.emit()
    assert button.text() == "Inpaint"
    canvas.deselect()
    panel.strength.setValue(100)
    panel.selection_timer.timeout.emit()
    assert button.text() == "Generate"


def test_a_document_change_refreshes_label_and_layer_pickers_at_once(make_panel, canvas):
    """What Krita's document notifications call (krita_adapter.watch_documents and
    the docker's canvasChanged): no wait for the next poll."""
    panel = make_panel()
    panel.selection_timer.stop()
    row = panel.add_control()
    canvas.add_layer("sketch", "Sketch")
    canvas.select(Rect(10, 10, 20, 20))
    assert panel.findChild(QPushButton, "kd-generate").text() == "Generate"
    panel.document_changed()
    assert panel.findChild(QPushButton, "kd-generate").text() == "Inpaint"
    assert [row.layer.itemText(i) for i in range(row.layer.count())] == ["Sketch"]
    assert panel.reference.layer.findData("sketch") >= 0


def test_unreachable_server_is_said_once_with_what_to_do(make_panel, qtbot, dead_url):
    """The connection line says there is no server and how to get one (the docker's
    button or the command); pressing Generate then does not repeat it below."""
    panel = make_panel(server_command="kd-serve --port 1")
    connection = panel.findChild(QLabel, "kd-connection")
    qtbot.waitUntil(lambda: panel.client.state is ConnectionState.UNREACHABLE, timeout=30_000)
    text = connection.text()
    assert text.startswith(f"Cannot reach the server at {dead_url}.")
    assert "Start server" in text and text.endswith("kd-serve --port 1")
    assert connection.wordWrap()
    panel.show()
    assert panel.findChild(QPushButton, "kd-start-server").isVisible()
    panel.prompt.setPlainText("a cat")
    panel.generate_button.click()
    error = panel.findChild(QLabel, "kd-error")
    qtbot.waitUntil(lambda: panel.progress.text().startswith("Not sent"), timeout=30_000)
    assert error.text() == "" and not error.isVisible()
    assert panel.cancel_button.isEnabled() is False
    assert threading.main_thread() not in panel.client.network_threads


def test_a_remote_server_gets_no_start_button(make_panel, qtbot):
    panel = make_panel(url=f"http://192.0.2.1:{free_port()}")  # TEST-NET: never answers
    panel.show()
    qtbot.waitUntil(lambda: panel.client.state is ConnectionState.UNREACHABLE, timeout=30_000)
    assert "Check that it runs" in panel.connection.text()
    assert not panel.start_server_button.isVisible()


def test_missing_prompt_and_refused_document_give_messages(make_panel, canvas):
    panel = make_panel()
    panel.generate_button.click()
    assert "Write a prompt" in panel.error.text()
    panel.prompt.setPlainText("a cat")
    panel.strength.setValue(50)
    canvas.refuse_reading = "This document is CMYKA/U8; convert it first."
    panel.generate_button.click()
    assert panel.error.text() == "This document is CMYKA/U8; convert it first."
    canvas.open = False
    panel.generate_button.click()
    assert "Open or create a document" in panel.error.text()


def test_a_server_warning_is_shown_beside_the_work_until_the_next_generate(make_panel):
    """A `warning` (a result the server could not save) is for reading, not for
    answering: a line of its own, no dialog, the error line left alone."""
    panel = make_panel()
    panel.show()
    notice = panel.findChild(QLabel, "kd-notice")
    assert not notice.isVisible()
    panel.controller.notice.emit("The result could not be saved to /srv/out (disk full).")
    assert notice.isVisible() and "could not be saved" in notice.text()
    assert not panel.error.isVisible() and notice.wordWrap()
    panel.prompt.setPlainText("a cat")
    panel.generate_button.click()
    assert not notice.isVisible() and notice.text() == ""


def test_settings_dialog_round_trip_through_qsettings(make_panel, qtbot, tmp_path, dead_url):
    ini = QSettings(str(tmp_path / "plugin.ini"), QSettings.Format.IniFormat)
    store = QtSettingsStore(ini)
    save(store, Settings(server_url=dead_url))
    panel = make_panel(store=store)
    dialog = panel.open_settings()
    assert dialog.objectName() == "kd-settings-dialog"
    dialog.input("steps").setValue(9)
    dialog.input("cfg_scale").setValue(3.5)
    dialog.input("context_margin").setValue(12)
    dialog.input("preview_every").setValue(0)
    dialog.input("history_size").setValue(3)
    dialog.input("token").setText("secret-token")
    assert dialog.input("hires_fix").isChecked()  # on by default
    dialog.input("hires_fix").setChecked(False)
    dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok).click()
    assert panel.settings.steps == 9 and panel.client.token == "secret-token"
    assert panel.controller.settings.steps == 9
    reread = load(
        QtSettingsStore(QSettings(str(tmp_path / "plugin.ini"), QSettings.Format.IniFormat))
    )
    assert (reread.steps, reread.cfg_scale, reread.context_margin) == (9, 3.5, 12)
    assert (reread.preview_every, reread.history_size, reread.token) == (0, 3, "secret-token")
    assert reread.server_url == dead_url and reread.hires_fix is False


def test_settings_dialog_is_built_from_the_table_of_fields(make_panel):
    """One input per field of `Settings`, in its section, with its label, limits and
    unit: a new setting needs only its entry in settings.py."""
    dialog = make_panel().open_settings()
    labels = {}
    for box in dialog.findChildren(QGroupBox):
        form = box.layout()
        assert isinstance(form, QFormLayout)
        for row in range(form.rowCount()):
            label = form.itemAt(row, QFormLayout.ItemRole.LabelRole)
            field = form.itemAt(row, QFormLayout.ItemRole.FieldRole)
            if label is not None and field is not None and field.widget() is not None:
                labels[field.widget().objectName()] = (box.title(), label.widget().text())
    assert set(labels) == {f"kd-setting-{name}" for name, _spec in FIELDS}
    for name, spec in FIELDS:
        assert labels[f"kd-setting-{name}"] == (spec.section, spec.label)
        widget = dialog.input(name)
        if isinstance(widget, (QSpinBox, QDoubleSpinBox)):
            assert (widget.minimum(), widget.maximum()) == (spec.low, spec.high), name
            assert widget.suffix() == spec.unit, name
    dialog.reject()


def test_settings_dialog_refuses_invalid_values_and_restores_defaults(make_panel):
    panel = make_panel()
    dialog = panel.open_settings()
    dialog.input("server_url").setText("not a url")
    dialog.input("server_command").setText("")
    dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok).click()
    assert dialog.isVisible()
    errors = dialog.findChild(QLabel, "kd-settings-errors")
    assert "Server URL" in errors.text() and "command" in errors.text()
    dialog.findChild(QDialogButtonBox).button(
        QDialogButtonBox.StandardButton.RestoreDefaults
    ).click()
    assert dialog.edited() == Settings()
    dialog.reject()
    assert panel.settings.server_url != "not a url"


def test_two_windows_share_one_client_and_one_server(make_panel, make_core, canvas, dead_url):
    """Each Krita window has its own docker; they share the core: one client (one
    event stream, one client id), one managed server, and the same settings."""
    core = make_core(server_url=dead_url)
    first, second = make_panel(core=core), make_panel(core=core)
    assert first.client is second.client is core.client
    assert first.server is second.server is core.server
    assert first.controller is not second.controller  # each window keeps its history
    dialog = first.open_settings()
    dialog.input("steps").setValue(5)
    dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok).click()
    assert second.settings.steps == 5 and second.controller.settings.steps == 5


def test_history_select_apply_and_discard_on_the_canvas(make_panel, canvas, qtbot):
    """Selecting a result shows it in the docker only; the canvas gets layers only
    when the artist applies (nothing temporary ever goes into the document)."""
    panel = make_panel()
    controller = panel.controller
    red = images.encode_rgba_png(bytes([255, 0, 0, 255]) * 16 * 8, 16, 8)
    region = Rect(4, 6, 16, 8)
    for index, seed in ((0, 11), (1, 12)):
        item, _ = controller.history.add(
            "job", index, seed, "a red box", Task.INPAINT, region, red, canvas.doc
        )
        controller.views[item.item_id] = images.result_views(red, 16, 8)
    controller.history_changed.emit()
    assert panel.history.count() == 2

    panel.history.setCurrentRow(0)
    shown = panel.preview.pixmap().toImage()
    assert shown.pixelColor(shown.width() // 2, shown.height() // 2).red() == 255
    assert canvas.layers == []

    panel.history.selectAll()
    panel.apply_button.click()
    qtbot.waitUntil(lambda: len(canvas.layers) == 2, timeout=10_000)
    assert [layer.image.rect for layer in canvas.layers] == [region, region]
    assert {layer.group for layer in canvas.layers} == {"a red box (batch)"}
    assert [layer.image.name for layer in canvas.layers] == [
        "a red box (seed 12)",
        "a red box (seed 11)",
    ]
    assert canvas.layers[0].image.data[:4] == bytes([255, 0, 0, 255])
    qtbot.waitUntil(lambda: "✓" in panel.history.item(0).text(), timeout=10_000)

    panel.history.setCurrentRow(0)
    panel.discard_button.click()
    assert panel.history.count() == 1 and len(canvas.layers) == 2


def test_result_for_another_document_is_not_placed(make_panel, canvas):
    panel = make_panel()
    png = images.encode_rgba_png(bytes(4 * 4), 2, 2)
    item, _ = panel.controller.history.add(
        "j", 0, 1, "p", Task.TXT2IMG, Rect(0, 0, 2, 2), png, "other"
    )
    assert not panel.controller.apply_items([item.item_id])
    assert canvas.layers == [] and "another document" in panel.error.text()


def test_txt2img_result_is_scaled_to_the_canvas(make_panel, canvas, qtbot):
    panel = make_panel()
    small = images.encode_rgba_png(bytes([0, 0, 255, 255]) * 8 * 8, 8, 8)
    item, _ = panel.controller.history.add(
        "j", 0, 1, "p", Task.TXT2IMG, Rect(0, 0, 64, 64), small, canvas.doc
    )
    assert panel.controller.apply_items([item.item_id])
    qtbot.waitUntil(lambda: len(canvas.layers) == 1, timeout=10_000)
    layer = canvas.layers[0].image
    assert layer.rect == Rect(0, 0, 64, 64) and len(layer.data) == 64 * 64 * 4
    assert canvas.layers[0].group is None


def test_closed_settings_dialogs_do_not_pile_up(make_panel, qtbot):
    """Each gear click makes a dialog wired to the managed server's log; a closed one
    must go, or every later log line is appended to every dialog ever opened."""
    from krita_diffusers.settings_dialog import SettingsDialog

    panel = make_panel()
    for _ in range(3):
        dialog = panel.open_settings()
        dialog.reject()
    qtbot.waitUntil(lambda: len(panel.findChildren(SettingsDialog)) == 0, timeout=5_000)
    dialog = panel.open_settings()
    dialog.input("steps").setValue(7)
    dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok).click()
    assert panel.settings.steps == 7
    qtbot.waitUntil(lambda: len(panel.findChildren(SettingsDialog)) == 0, timeout=5_000)


def test_upscale_and_expand_are_actions_that_reach_the_docker(make_panel, qtbot, canvas):
    """The two new actions run the docker's Upscale and Expand; without a server of
    protocol 5, Upscale says to update it and nothing is sent or changed."""
    from krita_diffusers.controller import OLD_SERVER
    from krita_diffusers.extension import ACTIONS, DOCKER_ID, trigger
    from krita_diffusers.qt import QDockWidget, QMainWindow

    panel = make_panel()
    window = QMainWindow()
    qtbot.addWidget(window)
    dock = QDockWidget("Krita Diffusers", window)
    dock.setObjectName(DOCKER_ID)
    dock.setWidget(panel)
    try:
        by_method = {spec.method: spec for spec in ACTIONS}
        assert {"upscale", "expand"} <= set(by_method)
        assert trigger(window, by_method["upscale"])
        assert panel.error.text() == OLD_SERVER and panel.error.isVisibleTo(panel)
        size_before = (canvas.width, canvas.height)
        assert trigger(window, by_method["expand"])
        qtbot.waitUntil(lambda: not panel.controller.busy, timeout=30_000)
        assert (canvas.width, canvas.height) == size_before  # never sent: nothing grew
        assert canvas.resizes == [] and canvas.layers == []
    finally:
        panel.setParent(None)  # the fixture, not the window, ends the panel
