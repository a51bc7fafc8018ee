"""The models view: the server's models per family, LoRAs filtered to the chosen
checkpoint's family, and "Why is my model missing?" with the server's reasons. The
last test runs a real server over a model folder holding a pickle `.ckpt` and a
truncated `.safetensors`, and reads the docker's view of it."""

from __future__ import annotations

import json
import pickle
import struct

import pytest

from krita_diffusers.client import ConnectionState
from krita_diffusers.docker import DiffusersPanel
from krita_diffusers.model_catalogue import (
    catalogue,
    loras_for,
    missing,
    missing_text,
    with_trigger_words,
)
from krita_diffusers.protocol import parse_models
from krita_diffusers.qt import QLabel, QListWidget
from krita_diffusers.settings import MemoryStore, Settings, save
from support.servers import ProcessServer

WAIT_MS = 180_000

MODELS = {
    "checkpoints": [
        {"name": "dream", "family": "sd15", "default": True, "working_size": 512},
        {"name": "juggernaut", "family": "sdxl", "default": False, "working_size": 1024},
        {"name": "dream-inpaint", "family": "sd15-inpaint", "default": False},
    ],
    "loras": [
        {"name": "detail", "family": "sd15", "trigger_words": ["inkstyle", "bold lines"]},
        {"name": "xl-style", "family": "sdxl", "trigger_words": []},
        {"name": "mystery", "family": None},
    ],
    "unusable": [{"name": "old.ckpt", "kind": "checkpoint", "reason": "A pickle file."}],
    "embeddings": [
        {"name": "easynegative", "family": "sd15", "vectors": 8, "usable": True, "reason": None},
        {"name": "bad-hands", "family": None, "vectors": 0, "usable": False, "reason": "A .pt"},
    ],
    "vaes": [
        {"name": "vae-ft-mse", "usable": True, "reason": None},
        {"name": "flux-vae", "usable": False, "reason": "16 channels"},
    ],
    "upscalers": [{"name": "old-esrgan", "usable": False, "reason": None}],
}


def test_models_grouped_by_family():
    found = catalogue(parse_models(MODELS))
    assert [g.name for g in found.families] == ["SD 1.5", "SDXL", "Other / unknown family"]
    sd15, sdxl, other = found.families
    assert sd15.checkpoints == ["dream", "dream-inpaint  (SD 1.5 inpaint)"]
    assert sd15.loras == ["detail"] and sd15.embeddings == ["easynegative"]
    assert sdxl.checkpoints == ["juggernaut"] and sdxl.loras == ["xl-style"]
    assert other.loras == ["mystery"]
    assert found.vaes == ["vae-ft-mse"]


def test_loras_fit_the_chosen_checkpoint():
    models = parse_models(MODELS)
    assert loras_for(models, None) == ["detail", "mystery"]  # the default is SD 1.5
    assert loras_for(models, "dream-inpaint") == ["detail", "mystery"]
    assert loras_for(models, "juggernaut") == ["xl-style", "mystery"]
    assert loras_for(models, "gone") == ["detail", "xl-style", "mystery"]  # unknown: all


def test_trigger_words_are_parsed_per_lora():
    models = parse_models(MODELS)
    assert models.lora_trigger_words == {"detail": ("inkstyle", "bold lines")}
    assert catalogue(models).trigger_words == {"detail": ("inkstyle", "bold lines")}
    older = parse_models({"loras": [{"name": "a"}, "b"]})  # before protocol 5: none
    assert older.loras == ["a", "b"] and older.lora_trigger_words == {}
    garbled = parse_models({"loras": [{"name": "a", "trigger_words": [" x ", 3, "", None]}]})
    assert garbled.lora_trigger_words == {"a": ("x",)}
    assert parse_models({"loras": [{"name": "a", "trigger_words": "x"}]}).lora_trigger_words == {}


def test_trigger_words_join_the_prompt_once():
    words = ("inkstyle", "bold lines")
    assert with_trigger_words("", words) == "inkstyle, bold lines"
    assert with_trigger_words("a cat", words) == "a cat, inkstyle, bold lines"
    assert with_trigger_words("a cat,  \n", words) == "a cat, inkstyle, bold lines"
    # a word already there, in any case, is not written again; only the missing ones are
    assert with_trigger_words("a cat, InkStyle", words) == "a cat, InkStyle, bold lines"
    assert with_trigger_words("bold lines, inkstyle", words) == "bold lines, inkstyle"
    assert with_trigger_words("inkstyles", ("inkstyle",)) == "inkstyles, inkstyle"  # whole words
    assert with_trigger_words("a (c++:1.2)", ("c++", "c++")) == "a (c++:1.2)"
    assert with_trigger_words("a", ("x", "X", "")) == "a, x"
    assert with_trigger_words("a cat ", ()) == "a cat "  # nothing to add: untouched


def test_every_unusable_file_with_its_reason():
    files = missing(parse_models(MODELS))
    lines = {(f.name, f.kind, f.reason) for f in files}
    assert lines == {
        ("old.ckpt", "Checkpoint", "A pickle file."),
        ("bad-hands", "Embedding", "A .pt"),
        ("flux-vae", "VAE", "16 channels"),
        ("old-esrgan", "Upscaler", "The server did not say why."),
    }
    assert missing_text(files) == "4 files found but not usable:"
    assert missing_text([]).startswith("Every model file")


def write_truncated_safetensors(path) -> None:
    """A safetensors file cut short: its header promises more bytes than follow (a
    download that stopped)."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [64], "data_offsets": [0, 256]}})
    raw = header.encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 100)


@pytest.fixture(scope="module")
def folder_server(tmp_path_factory):
    from modelkit.loras import write_test_lora

    work = tmp_path_factory.mktemp("kd-models-view")
    models = work / "models"
    (models / "checkpoints").mkdir(parents=True)
    phrase = {"modelspec.trigger_phrase": "inkstyle, bold lines"}
    write_test_lora(models / "loras", "ink", seed=3, metadata=phrase)
    (models / "checkpoints" / "old.ckpt").write_bytes(pickle.dumps({"state_dict": {}}))
    write_truncated_safetensors(models / "checkpoints" / "half.safetensors")
    server = ProcessServer(work, model_dirs=[str(models)])
    server.start()
    yield server
    server.stop()


def test_the_docker_says_why_a_model_is_missing(qtbot, canvas, folder_server, make_core):
    store = MemoryStore()
    save(store, Settings(server_url=folder_server.url))
    panel = DiffusersPanel(canvas, make_core(store))
    qtbot.addWidget(panel)
    try:
        qtbot.waitUntil(lambda: panel.client.state is ConnectionState.CONNECTED, timeout=WAIT_MS)
        qtbot.waitUntil(lambda: panel.model.count() >= 2, timeout=WAIT_MS)
        dialog = panel.open_models()
        listed = dialog.findChild(QListWidget, "kd-models-missing")
        lines = [listed.item(i).text() for i in range(listed.count())]
        assert dialog.findChild(QLabel, "kd-models-missing-summary").text() == (
            "2 files found but not usable:"
        )
        by_name = {line.split(" ", 1)[0]: line for line in lines}
        assert set(by_name) == {"half", "old.ckpt"} or set(by_name) == {"half", "old"}, lines
        assert any("pickle" in line.lower() for line in lines), lines
        assert any("truncated" in line.lower() for line in lines), lines
        assert all("(Checkpoint): " in line for line in lines), lines
        usable = dialog.findChild(QListWidget, "kd-models-list")
        texts = [usable.item(i).text() for i in range(usable.count())]
        assert "SD 1.5" in texts  # the server's embedded tiny model
        # the LoRA's trigger words, read by the server from the file, go into the prompt
        trigger = texts.index("        Trigger words: inkstyle, bold lines")
        assert texts[trigger - 1].strip() == "LoRA: ink"
        panel.prompt.setPlainText("a harbour at dusk")
        usable.itemDoubleClicked.emit(usable.item(trigger))
        assert panel.prompt.toPlainText() == "a harbour at dusk, inkstyle, bold lines"
        dialog.close()
    finally:
        panel.shutdown()


def test_the_view_shows_its_lines_and_lends_loras_and_embeddings(qtbot, canvas, make_core):
    """Offline: the docker's view of a model list, double clicks used in the docker."""
    from krita_diffusers.models_dialog import ModelsDialog

    panel = DiffusersPanel(canvas, make_core(server_url="http://127.0.0.1:9"))
    qtbot.addWidget(panel)
    try:
        panel._on_models(parse_models(MODELS))
        choices = [panel.lora_choice.itemText(i) for i in range(panel.lora_choice.count())]
        assert choices == ["detail", "mystery"]  # the default checkpoint is SD 1.5
        panel.model.setCurrentIndex(panel.model.findData("juggernaut"))
        choices = [panel.lora_choice.itemText(i) for i in range(panel.lora_choice.count())]
        assert choices == ["xl-style", "mystery"]
        dialog = panel.open_models()
        assert isinstance(dialog, ModelsDialog)
        lines = [dialog.usable.item(i).text().strip() for i in range(dialog.usable.count())]
        assert lines[:3] == [
            "SD 1.5",
            "Checkpoint: dream",
            "Checkpoint: dream-inpaint  (SD 1.5 inpaint)",
        ]
        for text in ("LoRA: detail", "Embedding: easynegative"):
            item = dialog.usable.item(lines.index(text))
            dialog.usable.itemDoubleClicked.emit(item)
        assert [row.name for row in panel.lora_rows] == ["detail"]
        assert panel.prompt.toPlainText() == "easynegative"
        trigger = lines.index("Trigger words: inkstyle, bold lines")
        assert lines[trigger - 1] == "LoRA: detail"  # beside its LoRA, and only that one
        assert sum(line.startswith("Trigger words:") for line in lines) == 1
        for _ in range(2):  # twice: the words are written once
            dialog.usable.itemDoubleClicked.emit(dialog.usable.item(trigger))
        assert panel.prompt.toPlainText() == "easynegative, inkstyle, bold lines"
        assert [row.name for row in panel.lora_rows] == ["detail"]  # no LoRA added by it
        dialog.close()
    finally:
        panel.shutdown()
