"""Reuse and Reuse seed in the docker, against the real server: a result's whole
recipe comes back into the docker after the artist changed everything; Reuse seed
changes only the seed."""

from __future__ import annotations

import pytest

from krita_diffusers.client import ConnectionState
from krita_diffusers.docker import DiffusersPanel
from krita_diffusers.qt import QListWidget, QPushButton
from krita_diffusers.settings import MemoryStore, Settings, save
from krita_diffusers.styles import Style, save_style

WAIT_MS = 180_000
MODEL = "tiny-sd15-embedded"


@pytest.fixture
def panel(qtbot, canvas, live_server, make_core, tmp_path):
    store = MemoryStore()
    save(
        store,
        Settings(server_url=live_server.url, steps=2, preview_every=0, working_resolution=64),
    )
    save_style(tmp_path / "styles", Style("Ink", prompt="{prompt}, in ink"))
    made = DiffusersPanel(canvas, make_core(store), styles=tmp_path / "styles")
    qtbot.addWidget(made)
    qtbot.waitUntil(lambda: made.client.state is ConnectionState.CONNECTED, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: made.model.count() >= 2, timeout=WAIT_MS)
    yield made
    made.shutdown()


def test_reuse_brings_the_whole_recipe_back(panel, qtbot):
    panel.style_choice.setCurrentIndex(panel.style_choice.findData("Ink"))
    panel.model.setCurrentIndex(panel.model.findData(MODEL))
    panel.apply_settings(Settings(**{**vars(panel.settings), "cfg_scale": 5.5}))
    panel.prompt.setPlainText("a fox")
    panel.negative.setPlainText("blurry")
    panel.strength.setValue(100)
    panel.generate_button.click()
    history = panel.findChild(QListWidget, "kd-history")
    qtbot.waitUntil(lambda: history.count() == 1, timeout=WAIT_MS)
    item = panel.controller.history.items[0]
    recipe = item.recipe
    assert (recipe.prompt, recipe.sent_prompt, recipe.style) == ("a fox", "a fox, in ink", "Ink")
    assert (recipe.model, recipe.cfg_scale, recipe.steps, recipe.seed) == (
        MODEL,
        5.5,
        2,
        item.seed,
    )
    assert recipe.task == "txt2img" and recipe.region == (0, 0, 64, 64)

    # the artist moves on: another style, model, prompt, CFG and seed
    panel.style_choice.setCurrentIndex(0)
    panel.model.setCurrentIndex(0)
    panel.apply_settings(Settings(**{**vars(panel.settings), "cfg_scale": 9.0}))
    panel.prompt.setPlainText("a boat")
    panel.negative.setPlainText("")
    panel.strength.setValue(40)
    panel.seed.setText("7")

    panel.findChild(QPushButton, "kd-history-reuse-seed").click()
    assert panel.seed.text() == str(item.seed) and panel.seed_lock.isChecked()
    assert panel.prompt.toPlainText() == "a boat"  # only the seed

    panel.findChild(QPushButton, "kd-history-reuse").click()
    assert panel.style_choice.currentData() == "Ink"
    assert panel.model.currentData() == MODEL
    assert panel.prompt.toPlainText() == "a fox"
    assert panel.negative.toPlainText() == "blurry"
    assert panel.strength.value() == 100
    assert panel.settings.cfg_scale == 9.0  # a style is chosen: its sampling applies
    again = panel.current_input()
    assert again.prompt == "a fox, in ink" and again.seed == item.seed
    assert again.recipe.cfg_scale == 9.0  # the style keeps the docker's CFG


def test_reuse_without_a_style_restores_the_sampling(panel):
    from krita_diffusers.recipes import Recipe

    panel.reuse(Recipe("a hill", model=MODEL, sampler="Euler", steps=4, cfg_scale=3.0, seed=5))
    assert (panel.settings.sampler, panel.settings.steps, panel.settings.cfg_scale) == (
        "Euler",
        4,
        3.0,
    )
    assert panel.seed.text() == "5" and panel.model.currentData() == MODEL
    panel.reuse(Recipe("x", model="gone.safetensors", style="Gone"))
    assert panel.notice.text() == (
        "Not on this server any more: style Gone, model gone.safetensors."
    )


def test_history_is_kept_with_the_document_and_reused_later(
    qtbot, canvas, live_server, make_core, panel
):
    """A result's recipe and thumbnail go into the document (Krita: an annotation in
    the .kra); a later session opening that document lists it, and Reuse seed and
    Reuse take it back. Another document has its own (here: none)."""
    panel.prompt.setPlainText("a kept fox")
    panel.generate_button.click()
    history = panel.findChild(QListWidget, "kd-history")
    qtbot.waitUntil(lambda: history.count() == 1, timeout=WAIT_MS)
    seed = panel.controller.history.items[0].seed
    assert canvas.notes["memory-doc"]["krita_diffusers/history"]
    saved = panel.findChild(QListWidget, "kd-history-saved")
    assert saved.count() == 0  # this session's results are in the history above
    panel.shutdown()

    # a later Krita session opens the same document
    store = MemoryStore()
    save(store, Settings(server_url=live_server.url))
    later = DiffusersPanel(canvas, make_core(store), styles=panel.styles_folder)
    qtbot.addWidget(later)
    try:
        saved = later.findChild(QListWidget, "kd-history-saved")
        assert saved.count() == 1 and saved.item(0).text() == str(seed)
        assert not saved.item(0).icon().isNull()  # the thumbnail
        saved.item(0).setSelected(True)
        later.findChild(QPushButton, "kd-history-reuse-seed").click()
        assert later.seed.text() == str(seed) and later.prompt.toPlainText() == ""
        later.findChild(QPushButton, "kd-history-reuse").click()
        assert later.prompt.toPlainText() == "a kept fox"

        canvas.doc = "another-doc"  # another document becomes the active one
        later.document_changed()
        assert saved.count() == 0 and not saved.isVisibleTo(later)
        canvas.doc = "memory-doc"
        later.document_changed()
        assert saved.count() == 1
    finally:
        later.shutdown()
