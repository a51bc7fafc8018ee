"""The docker per model family: labels in the model picker, what Flux hides (negative
prompt, CFG) and shows instead (Guidance), the gear dialog's rows, the memory mode
line, a style's memory mode, and clip skip and a VAE reaching a real server's job
(read back from the result's PNG parameters).

Offline tests feed the docker a `/v1/models` answer as a protocol 6 server gives it;
the last test runs the real server over a folder holding a VAE file."""

from __future__ import annotations

import json

import pytest

from kd_server.pngmeta import read_parameters
from krita_diffusers.client import ConnectionState
from krita_diffusers.docker import DiffusersPanel
from krita_diffusers.protocol import parse_models
from krita_diffusers.qt import QComboBox, QLabel, QListWidget
from krita_diffusers.settings import MemoryStore, Settings, save
from support.servers import ProcessServer

WAIT_MS = 180_000
MODELS = {
    "checkpoints": [
        {"name": "dream", "family": "sd15", "default": True, "working_size": 512},
        {"name": "flux1-dev", "family": "flux-dev", "default": False, "working_size": 1024},
        {"name": "flux1-schnell", "family": "flux-schnell", "default": False},
        {"name": "sd3.5", "family": "sd35-medium", "default": False},
        {"name": "future", "family": "hidream-full", "default": False},
    ],
    "loras": [],
    "vaes": [{"name": "vae-ft-mse", "usable": True, "reason": None}],
}


@pytest.fixture
def panel(qtbot, canvas, make_core, tmp_path):
    made = DiffusersPanel(
        canvas, make_core(server_url="http://127.0.0.1:9"), styles=tmp_path / "styles"
    )
    qtbot.addWidget(made)
    made.client.health = {"protocol": 6}  # as a protocol 6 server answers
    made._on_models(parse_models(MODELS))
    yield made
    made.shutdown()


def choose(combo: QComboBox, data: object) -> None:
    combo.setCurrentIndex(combo.findData(data))


def test_the_model_picker_names_each_family(panel):
    texts = [panel.model.itemText(i) for i in range(panel.model.count())]
    assert texts == [
        "Server default",
        "dream (SD 1.5)",
        "flux1-dev (Flux.1 dev)",
        "flux1-schnell (Flux.1 schnell)",
        "sd3.5 (SD 3.5 medium)",
        "future (hidream-full)",  # a family this plugin does not know: as sent
    ]


def test_flux_dev_hides_negative_and_cfg_and_sends_guidance(panel):
    sampling = panel.findChild(QLabel, "kd-sampling")
    panel.negative_toggle.setChecked(True)
    panel.negative.setPlainText("blurry")
    assert sampling.text() == "DPM++ 2M Karras · 20 steps · CFG 7"
    choose(panel.model, "flux1-dev")
    assert not panel.negative_toggle.isEnabled() and panel.negative.isHidden()
    assert "Flux.1 dev uses no negative prompt" in panel.negative_toggle.toolTip()
    # never tuned: the family's starting sampling (the server runs Flux with Euler)
    assert sampling.text() == "Euler · 28 steps · Guidance 3.5"
    chosen = panel.current_input()
    assert chosen.recipe.guidance == 3.5
    live = panel.live_settings()
    assert live.negative_prompt == "" and live.extras == {"guidance": 3.5}

    dialog = panel.open_settings()
    assert dialog.input("cfg_scale").isHidden() and not dialog.input("guidance").isHidden()
    assert dialog.input("clip_skip").isHidden() and dialog.input("vae").isHidden()
    note = dialog.findChild(QLabel, "kd-settings-family")
    assert note.text().startswith("Not used by the chosen model (Flux.1 dev)")
    dialog.input("guidance").setValue(2.0)
    dialog.accept()
    assert panel.settings.guidance == 2.0
    assert sampling.text().endswith("Guidance 2")
    assert panel.model_defaults.get("flux1-dev").guidance == 2.0  # remembered per model

    choose(panel.model, "flux1-schnell")
    assert sampling.text() == "Euler · 4 steps"  # neither CFG nor guidance
    assert panel.live_settings().extras == {}

    choose(panel.model, "dream")  # back to SD 1.5: the negative is there again
    assert sampling.text() == "DPM++ 2M Karras · 20 steps · CFG 7"  # what it had
    assert panel.negative_toggle.isEnabled()
    panel.negative_toggle.setChecked(True)
    assert panel.negative.toPlainText() == "blurry"
    dialog = panel.open_settings()
    assert not dialog.input("cfg_scale").isHidden() and dialog.input("guidance").isHidden()
    vae = dialog.input("vae")
    assert [vae.itemText(i) for i in range(vae.count())] == ["The model's own", "vae-ft-mse"]
    assert dialog.findChild(QLabel, "kd-settings-family").isHidden()
    dialog.close()


def test_the_memory_mode_line_follows_the_chosen_model(panel):
    line = panel.findChild(QLabel, "kd-memory")
    assert line.isHidden()
    panel._on_health(
        {"protocol": 6, "memory": {"flux1-dev": {"mode": "fp8", "reason": "10 GB free"}}}
    )
    assert line.isHidden()  # the server's default (dream) has none
    choose(panel.model, "flux1-dev")
    assert not line.isHidden() and line.text() == "Memory: fp8 (10 GB free)"


def test_a_styles_memory_mode_goes_into_the_job_and_the_file(panel):
    dialog = panel.open_styles()
    dialog.new_style()
    dialog.name.setText("Low memory")
    choose(dialog.memory_mode, "sequential-offload")
    dialog.clip_skip.setValue(2)
    dialog.vae.setCurrentText("vae-ft-mse")
    assert dialog.save_current()
    dialog.close()
    saved = json.loads((panel.styles_folder / "Low memory.json").read_text())
    assert (saved["memory_mode"], saved["clip_skip"], saved["vae"]) == (
        "sequential-offload",
        2,
        "vae-ft-mse",
    )
    assert panel.current_style().name == "Low memory"
    chosen = panel.current_input()
    assert chosen.memory_mode == "sequential-offload"
    assert (chosen.sampling.clip_skip, chosen.sampling.vae) == (2, "vae-ft-mse")
    assert chosen.recipe.memory_mode == "sequential-offload"
    extras = panel.live_settings().extras
    assert extras == {"clip_skip": 2, "vae": "vae-ft-mse", "memory_mode": "sequential-offload"}
    panel.client.health = {"protocol": 5}  # an older server: no memory mode sent
    assert panel.live_settings().extras == {"clip_skip": 2, "vae": "vae-ft-mse"}
    dialog = panel.open_styles()  # read back into the editor
    assert dialog.memory_mode.currentData() == "sequential-offload"
    assert dialog.clip_skip.value() == 2
    dialog.close()


@pytest.fixture(scope="module")
def vae_server(tmp_path_factory):
    from modelkit.vaes import embedded_vae, write_vae

    work = tmp_path_factory.mktemp("kd-vae-server")
    write_vae(work / "models" / "VAE" / "nudged.safetensors", embedded_vae(1))
    server = ProcessServer(work, model_dirs=[str(work / "models")])
    server.start()
    yield server
    server.stop()


def test_clip_skip_and_a_vae_reach_the_servers_job(qtbot, canvas, make_core, vae_server):
    """Set in the gear dialog (from the server's VAE list), remembered for the model,
    and in the result's A1111 parameters."""
    store = MemoryStore()
    save(
        store,
        Settings(server_url=vae_server.url, steps=2, preview_every=0, working_resolution=64),
    )
    panel = DiffusersPanel(canvas, make_core(store))
    qtbot.addWidget(panel)
    try:
        qtbot.waitUntil(lambda: panel.client.state is ConnectionState.CONNECTED, timeout=WAIT_MS)
        qtbot.waitUntil(lambda: bool(panel.models.vaes), timeout=WAIT_MS)
        dialog = panel.open_settings()
        vae = dialog.input("vae")
        vae.setCurrentIndex(vae.findData("nudged"))
        dialog.input("clip_skip").setValue(2)
        dialog.accept()
        assert (panel.settings.vae, panel.settings.clip_skip) == ("nudged", 2)
        assert panel.findChild(QLabel, "kd-sampling").text().endswith("Clip skip 2 · VAE nudged")
        panel.prompt.setPlainText("a fox")
        panel.generate_button.click()
        history = panel.findChild(QListWidget, "kd-history")
        qtbot.waitUntil(lambda: history.count() == 1, timeout=WAIT_MS)
        item = panel.controller.history.items[0]
        parameters = read_parameters(item.png)
        assert "Clip skip: 2" in parameters and "VAE: nudged" in parameters, parameters
        assert (item.recipe.clip_skip, item.recipe.vae) == (2, "nudged")
        # the server's memory mode for the model it loaded (protocol 6 /v1/health,
        # read again after the result)
        memory = panel.findChild(QLabel, "kd-memory")
        qtbot.waitUntil(lambda: memory.text().startswith("Memory: "), timeout=WAIT_MS)
        assert not memory.isHidden()
    finally:
        panel.shutdown()


@pytest.fixture(scope="module")
def flux_server(tmp_path_factory):
    from support.flow_models import write_flow_models

    work = tmp_path_factory.mktemp("kd-flux-server")
    write_flow_models(work / "models" / "Stable-diffusion", names=("tiny-flux-dev",))
    server = ProcessServer(work, model_dirs=[str(work)])
    server.start()
    yield server
    server.stop()


def test_a_flux_job_from_the_docker_sends_guidance_and_no_negative(
    qtbot, canvas, make_core, flux_server
):
    """The real server's tiny Flux.1 dev (a diffusers folder): the picker names its
    family, the typed negative prompt is not sent, the guidance set in the gear dialog
    is (the result's parameters say *Distilled CFG Scale* as Forge writes it)."""
    store = MemoryStore()
    save(store, Settings(server_url=flux_server.url, preview_every=0, working_resolution=64))
    panel = DiffusersPanel(canvas, make_core(store))
    qtbot.addWidget(panel)
    try:
        qtbot.waitUntil(lambda: panel.client.state is ConnectionState.CONNECTED, timeout=WAIT_MS)
        qtbot.waitUntil(lambda: panel.model.findData("tiny-flux-dev") >= 0, timeout=WAIT_MS)
        index = panel.model.findData("tiny-flux-dev")
        assert panel.model.itemText(index) == "tiny-flux-dev (Flux.1 dev)"
        panel.negative.setPlainText("blurry")
        panel.model.setCurrentIndex(index)
        assert not panel.negative_toggle.isEnabled()
        dialog = panel.open_settings()
        dialog.input("steps").setValue(2)
        dialog.input("guidance").setValue(2.0)
        dialog.accept()
        sampling = panel.findChild(QLabel, "kd-sampling")
        assert sampling.text() == "Euler · 2 steps · Guidance 2"
        panel.prompt.setPlainText("a fox")
        panel.generate_button.click()
        history = panel.findChild(QListWidget, "kd-history")
        qtbot.waitUntil(lambda: history.count() == 1, timeout=WAIT_MS)
        item = panel.controller.history.items[0]
        parameters = read_parameters(item.png)
        assert "Negative prompt" not in parameters and "blurry" not in parameters, parameters
        assert "Distilled CFG Scale: 2," in parameters, parameters
        assert item.recipe.guidance == 2.0
    finally:
        panel.shutdown()
