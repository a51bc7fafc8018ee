"""Styles and per-model sampling in the docker, against the real server (its
embedded tiny model): a style made in the editor wraps the prompt and sets the
sampling of the job the server runs (read back from the result's PNG parameters);
each model brings back its own CFG; bad style files are listed, A1111's styles.csv
imports. Waits are for what the artist would see, never for a time."""

from __future__ import annotations

import json

import pytest

from kd_server.pngmeta import read_parameters
from krita_diffusers.client import ConnectionState
from krita_diffusers.docker import DiffusersPanel
from krita_diffusers.model_defaults import ModelDefaults
from krita_diffusers.qt import QComboBox, QLabel, QListWidget
from krita_diffusers.settings import MemoryStore, Settings, save

WAIT_MS = 180_000
MODEL = "tiny-sd15-embedded"


@pytest.fixture
def panel(qtbot, canvas, live_server, make_core, tmp_path):
    store = MemoryStore()
    save(
        store,
        Settings(server_url=live_server.url, steps=3, preview_every=0, working_resolution=64),
    )
    made = DiffusersPanel(canvas, make_core(store), styles=tmp_path / "styles")
    qtbot.addWidget(made)
    qtbot.waitUntil(lambda: made.client.state is ConnectionState.CONNECTED, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: made.model.count() >= 2, timeout=WAIT_MS)
    yield made
    made.shutdown()


def choose(combo: QComboBox, data: object) -> None:
    combo.setCurrentIndex(combo.findData(data))


def test_a_style_made_in_the_editor_shapes_the_job(panel, qtbot):
    picker = panel.findChild(QComboBox, "kd-style")
    assert picker.itemText(0) == "No style"
    assert "SDXL Everyday" in [picker.itemText(i) for i in range(picker.count())]
    dialog = panel.open_styles()
    dialog.new_style()
    dialog.name.setText("Ink")
    dialog.checkpoint.setCurrentText(MODEL)
    dialog.sampler.setCurrentText("Euler")
    dialog.steps.setValue(2)
    dialog.cfg.setValue(4.5)
    dialog.prompt.setPlainText("{prompt}, in ink")
    dialog.negative.setPlainText("colour")
    assert dialog.save_current()
    dialog.close()
    assert json.loads((panel.styles_folder / "Ink.json").read_text())["cfg_scale"] == 4.5
    assert picker.currentText() == "Ink" and panel.model.currentData() == MODEL
    sampling = panel.findChild(QLabel, "kd-sampling")
    assert sampling.text() == "Euler · 2 steps · CFG 4.5"

    panel.prompt.setPlainText("a fox")
    panel.generate_button.click()
    history = panel.findChild(QListWidget, "kd-history")
    qtbot.waitUntil(lambda: history.count() == 1, timeout=180_000)
    item = panel.controller.history.items[0]
    assert item.prompt == "a fox, in ink"
    parameters = read_parameters(item.png)
    assert parameters.startswith("a fox, in ink\nNegative prompt: colour\n")
    assert "Steps: 2, Sampler: Euler, " in parameters and "CFG scale: 4.5" in parameters

    choose(picker, None)  # no style: the settings' sampling again
    assert sampling.text() == "DPM++ 2M Karras · 3 steps · CFG 7"


def test_each_model_remembers_its_sampling(panel):
    sampling = panel.findChild(QLabel, "kd-sampling")
    choose(panel.model, MODEL)
    panel.apply_settings(Settings(**{**vars(panel.settings), "cfg_scale": 4.5}))
    choose(panel.model, None)  # the server's default: nothing remembered yet
    assert panel.settings.cfg_scale == 4.5
    panel.apply_settings(Settings(**{**vars(panel.settings), "cfg_scale": 9.0, "steps": 5}))
    choose(panel.model, MODEL)
    assert (panel.settings.cfg_scale, panel.settings.steps) == (4.5, 3)
    assert sampling.text() == "DPM++ 2M Karras · 3 steps · CFG 4.5"
    choose(panel.model, None)
    assert (panel.settings.cfg_scale, panel.settings.steps) == (9.0, 5)
    assert ModelDefaults(panel.core.store).get(MODEL).cfg_scale == 4.5  # kept for next time


def test_bad_files_listed_and_a1111_styles_imported(panel, tmp_path):
    folder = panel.styles_folder
    folder.mkdir(parents=True)
    (folder / "broken.json").write_text("{oops")
    webui = tmp_path / "stable-diffusion-webui"
    webui.mkdir()
    (webui / "styles.csv").write_text(
        'name,prompt,negative_prompt\n"Watercolour","{prompt}, watercolour",photo\n'
    )
    dialog = panel.open_styles()
    problems = dialog.findChild(QLabel, "kd-styles-problems")
    assert problems.text().startswith("broken.json is left out: The file is not valid JSON")
    saved = dialog.import_from(webui)
    assert [s.name for s in saved] == ["Watercolour"]
    picker = panel.findChild(QComboBox, "kd-style")
    choose(picker, "Watercolour")
    panel.prompt.setPlainText("a boat")
    chosen = panel.current_input()
    assert (chosen.prompt, chosen.negative_prompt) == ("a boat, watercolour", "photo")
    dialog.list.setCurrentRow(dialog.library.names.index("Watercolour"))
    dialog.delete_current()
    assert "Watercolour" not in [picker.itemText(i) for i in range(picker.count())]
    dialog.close()


def test_the_gear_dialog_opens_the_styles_editor(panel):
    from krita_diffusers.qt import QPushButton
    from krita_diffusers.styles_dialog import StylesDialog

    settings = panel.open_settings()
    settings.findChild(QPushButton, "kd-settings-styles").click()
    editors = panel.findChildren(StylesDialog)
    assert len(editors) == 1 and editors[0].isVisible()
    editors[0].close()
    settings.reject()


def test_the_chosen_style_is_chosen_again_next_time(qtbot, canvas, live_server, make_core, panel):
    """The style and its model come back in a later session, even though the
    server's model list arrives after the docker is built."""
    folder = panel.styles_folder
    from krita_diffusers.styles import Style, save_style

    save_style(folder, Style("Tiny", checkpoint=MODEL, prompt="{prompt}, tiny"))
    panel.reload_styles("Tiny")
    assert panel.model.currentData() == MODEL
    store = panel.core.store
    panel.shutdown()
    later = DiffusersPanel(canvas, make_core(store), styles=folder)
    qtbot.addWidget(later)
    try:
        assert later.style_choice.currentData() == "Tiny"
        qtbot.waitUntil(lambda: later.model.count() >= 2, timeout=WAIT_MS)
        assert later.model.currentData() == MODEL
        assert not later.notice.isVisibleTo(later)
    finally:
        later.shutdown()
