"""Live mode with a fast LoRA, against the real server process: the docker does not
call the model slow, and the frames run with the LoRA's own sampling, chosen by the
server (`sampling: "auto"`), as the PNG the plugin receives records.

The LoRA is a stand-in written by the test with the real LCM LoRA's file name, which
is how the server recognises it (see `kd_server.fast_modes`).
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from krita_diffusers.client import ConnectionState
from krita_diffusers.docker import DiffusersPanel
from krita_diffusers.qt import QCheckBox, QLabel
from krita_diffusers.settings import MemoryStore, Settings, save
from support.servers import ProcessServer

WAIT_MS = 180_000
LORA = "lcm-lora-sdv1-5"


@pytest.fixture(scope="module")
def fast_server(tmp_path_factory):
    from modelkit.loras import write_test_lora

    models = tmp_path_factory.mktemp("kd-fast-models")
    write_test_lora(models / "loras", LORA, seed=3, scale=0.2)
    server = ProcessServer(tmp_path_factory.mktemp("kd-fast-server"), model_dirs=[str(models)])
    server.start()
    yield server
    server.stop()


@pytest.fixture
def panel(qtbot, canvas, fast_server, make_core):
    store = MemoryStore()
    save(
        store,
        Settings(
            server_url=fast_server.url,
            steps=30,
            sampler="DPM++ 2M Karras",
            preview_every=1,
            working_resolution=64,
        ),
    )
    made = DiffusersPanel(canvas, make_core(store))
    qtbot.addWidget(made)
    qtbot.waitUntil(lambda: made.client.state is ConnectionState.CONNECTED, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: made.lora_choice.count() >= 1, timeout=WAIT_MS)
    yield made
    made.shutdown()


def test_a_fast_lora_makes_live_frames_with_its_own_sampling(qtbot, panel):
    toggle = panel.findChild(QCheckBox, "kd-live")
    note = panel.findChild(QLabel, "kd-live-note")
    panel.prompt.setPlainText("a small red square")
    panel.strength.setValue(50)
    panel.add_lora(LORA, 1.0)

    toggle.setChecked(True)
    assert panel.live.active
    assert not note.isVisibleTo(panel)  # a fast LoRA: nothing to warn about
    qtbot.waitUntil(lambda: panel.live.result is not None, timeout=WAIT_MS)

    png = panel.live.result[0]
    parameters = Image.open(io.BytesIO(png)).info["parameters"]
    # The server chose the LCM recipe: not the settings' 30 steps of DPM++ 2M Karras.
    assert "Sampler: LCM" in parameters
    assert "Steps: 30" not in parameters and "DPM++" not in parameters
    assert f"<lora:{LORA}:1" in parameters or LORA in parameters
    toggle.setChecked(False)
