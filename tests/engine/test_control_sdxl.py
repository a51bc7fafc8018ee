"""SDXL control: a plain ControlNet and a union ControlNet (one network, a control type
per image) on a tiny SDXL checkpoint, each loaded from its file (issue 16)."""

from __future__ import annotations

import numpy as np
import pytest

from kd_server.engine import Engine
from kd_server.generation import ControlInput, ControlMode, EngineError
from kd_server.library import ModelLibrary
from modelkit import control_models, ldm_layout
from support.control import disc, outline
from support.jobs import make_request

COMMON = {"model": "tiny-sdxl", "prompt": "a vase", "steps": 2, "seed": 9, "sampler": "Euler"}


@pytest.fixture(scope="module")
def sdxl_engine(tmp_path_factory):
    root = tmp_path_factory.mktemp("comfyui") / "models"
    pipe = ldm_layout.build_tiny_components("sdxl", seed=3)
    checkpoint = root / "checkpoints" / "tiny-sdxl.safetensors"
    ldm_layout.write_ldm_checkpoint(pipe, checkpoint)
    ldm_layout.save_config_folder(pipe, checkpoint.with_suffix(".config"))
    controlnet = root / "controlnet"
    control_models.write_controlnet(controlnet, "xl-depth", pipe.unet, seed=4, layout="diffusers")
    control_models.write_union_controlnet(controlnet, "xl-union", pipe.unet, seed=5)
    return Engine(ModelLibrary([root.parent]), device="cpu")


def run(engine: Engine, **fields) -> np.ndarray:
    request = make_request(**{**COMMON, "width": 64, "height": 64, **fields})
    return np.asarray(engine.generate(request)[0].image, dtype=np.float32)


def union(mode: ControlMode | None, **fields) -> ControlInput:
    return ControlInput(**{"model": "xl-union", "image": disc(), "mode": mode, **fields})


def test_plain_and_union_controlnets_steer_an_sdxl_picture(sdxl_engine):
    plain = run(sdxl_engine)
    depth = run(sdxl_engine, control=[ControlInput(model="xl-depth", image=disc())])
    as_depth = run(sdxl_engine, control=[union(ControlMode.DEPTH)])
    as_lines = run(sdxl_engine, control=[union(ControlMode.LINEART, image=outline())])
    two = run(
        sdxl_engine, control=[union(ControlMode.DEPTH), union(ControlMode.POSE, strength=0.5)]
    )
    for steered in (depth, as_depth, as_lines, two):
        assert np.abs(steered - plain).mean() > 1
    assert np.abs(as_depth - as_lines).mean() > 1  # the control type matters
    assert np.abs(two - as_depth).mean() > 0.5


@pytest.mark.parametrize(
    ("control", "words"),
    [
        ([union(None)], "needs to know what the image shows: give a mode"),
        (
            [union(ControlMode.DEPTH), ControlInput(model="xl-depth", image=disc())],
            "cannot be combined",
        ),
    ],
)
def test_union_needs_a_mode_and_stays_among_its_kind(sdxl_engine, control, words):
    with pytest.raises(EngineError) as caught:
        sdxl_engine.check(make_request(**COMMON, width=64, height=64, control=control))
    assert words in caught.value.message
