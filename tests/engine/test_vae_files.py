"""VAE files: found in A1111's models/VAE and ComfyUI's models/vae from the header, and a
job that names one decodes with it (the tiny SD 1.5 model: the checkpoint's own VAE
written as a file gives the same picture; another VAE changes it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from kd_server.engine import Engine
from kd_server.generation import EngineError, EngineErrorCode, Task
from kd_server.library import ModelLibrary
from modelkit.vaes import embedded_vae, write_vae
from support.jobs import make_request


@pytest.fixture(scope="module")
def webui(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("webui")
    write_vae(root / "models" / "VAE" / "same.safetensors", embedded_vae())
    write_vae(root / "models" / "VAE" / "other.safetensors", embedded_vae(1))
    write_vae(
        root / "models" / "VAE" / "sub" / "diffusers-style.safetensors",
        embedded_vae(1),
        "diffusers",
    )
    (root / "models" / "VAE" / "old.pt").write_bytes(b"\x80\x02}q\x00.")
    save_file(
        {
            "decoder.conv_in.weight": torch.zeros(8, 16, 3, 3),
            "encoder.down.0.block.0.conv1.weight": torch.zeros(1),
        },
        str(root / "models" / "VAE" / "flux.safetensors"),
    )
    return root


@pytest.fixture(scope="module")
def engine(webui) -> Engine:
    return Engine(ModelLibrary([webui]), device="cpu")


def test_vae_files_are_listed_with_their_layout_or_reason(engine):
    found = {v.name: v for v in engine.library.vaes()}
    assert sorted(found) == ["flux", "old", "other", "same", "sub/diffusers-style"]
    assert (found["same"].layout, found["sub/diffusers-style"].layout) == ("ldm", "diffusers")
    assert not found["old"].usable and "safetensors" in (found["old"].reason or "")
    assert not found["flux"].usable and "16-channel" in (found["flux"].reason or "")
    assert "Flux or SD 3.5 VAE" in (found["flux"].reason or "")
    # listed apart, never as a checkpoint
    assert [e.name for e in engine.library.checkpoints()] == ["tiny-sd15-embedded"]


def picture(engine: Engine, task: Task = Task.TXT2IMG, **fields) -> tuple[np.ndarray, str]:
    request = make_request(
        task=task, prompt="a cup", steps=2, seed=4, width=64, height=64, **fields
    )
    result = engine.generate(request)[0]
    return np.asarray(result.image), result.parameters


def test_the_chosen_vae_decodes(engine):
    own, plain_text = picture(engine)
    same, _ = picture(engine, vae="same")
    other, other_text = picture(engine, vae="other")
    assert np.array_equal(own, same)  # the checkpoint's VAE from a file: nothing changes
    assert not np.array_equal(own, other)
    assert np.array_equal(other, picture(engine, vae="sub/diffusers-style")[0])
    assert "VAE: other" in other_text and "VAE" not in plain_text
    # the checkpoint's own VAE is back for the next job
    assert np.array_equal(own, picture(engine)[0])


def test_img2img_encodes_with_the_chosen_vae(engine):
    from PIL import Image

    start = Image.new("RGB", (64, 64), (200, 80, 40))
    own, _ = picture(engine, Task.IMG2IMG, image=start, strength=0.5)
    other, _ = picture(engine, Task.IMG2IMG, image=start, strength=0.5, vae="other")
    assert not np.array_equal(own, other)


@pytest.mark.parametrize(
    ("name", "code"),
    [("missing", EngineErrorCode.MODEL_NOT_FOUND), ("old", EngineErrorCode.MODEL_UNUSABLE)],
)
def test_unknown_or_unusable_vae_is_refused_before_running(engine, name, code):
    with pytest.raises(EngineError) as caught:
        engine.check(make_request(prompt="x", vae=name))
    assert caught.value.code is code and name in caught.value.message


def test_sdxl_takes_a_vae_file_too(tmp_path):
    from modelkit import ldm_layout

    root = tmp_path / "ComfyUI"
    pipe = ldm_layout.build_tiny_components("sdxl", seed=3)
    checkpoint = root / "models" / "checkpoints" / "tiny-sdxl.safetensors"
    ldm_layout.write_ldm_checkpoint(pipe, checkpoint, dtype=torch.float32)  # exact weights
    ldm_layout.save_config_folder(pipe, checkpoint.with_suffix(".config"))
    write_vae(root / "models" / "vae" / "own.safetensors", pipe.vae, "diffusers")
    nudged = ldm_layout.build_tiny_components("sdxl", seed=4).vae
    write_vae(root / "models" / "vae" / "other.safetensors", nudged)
    engine = Engine(ModelLibrary([root], include_embedded=False), device="cpu")
    plain, _ = picture(engine, model="tiny-sdxl")
    assert np.array_equal(plain, picture(engine, model="tiny-sdxl", vae="own")[0])
    assert not np.array_equal(plain, picture(engine, model="tiny-sdxl", vae="other")[0])
