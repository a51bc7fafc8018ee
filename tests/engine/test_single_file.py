"""Single-file checkpoints in the original (A1111) key layout, for every family: the
library detects them, the engine loads them offline and runs each task on them.

The tiny checkpoints carry a sidecar `<name>.config/` folder because their shapes are
not the full-size architectures of the shipped configs.
"""

from __future__ import annotations

import numpy as np
import pytest

from kd_server.engine import Engine
from kd_server.families import Family
from kd_server.generation import Task
from kd_server.library import ModelLibrary
from modelkit import ldm_layout
from support.images import painted, rect_mask
from support.jobs import make_request

FAMILIES = ["sd15", "sd15-inpaint", "sdxl", "sdxl-inpaint"]


@pytest.fixture(scope="module")
def single_file_engine(tmp_path_factory):
    root = tmp_path_factory.mktemp("a1111") / "models" / "Stable-diffusion"
    root.mkdir(parents=True)
    for family in FAMILIES:
        pipe = ldm_layout.build_tiny_components(family, seed=3)
        path = root / f"tiny-{family}.safetensors"
        ldm_layout.write_ldm_checkpoint(pipe, path)
        ldm_layout.save_config_folder(pipe, path.with_suffix(".config"))
    return Engine(ModelLibrary([root.parent.parent]), device="cpu", cache_size=2)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_is_detected_and_every_task_runs(single_file_engine, family):
    entry = single_file_engine.library.get_checkpoint(f"tiny-{family}")
    assert entry.usable and entry.family is Family(family)
    common = {"model": entry.name, "prompt": "a boat", "steps": 2, "seed": 1}
    txt = single_file_engine.generate(
        make_request(task=Task.TXT2IMG, width=64, height=48, **common)
    )[0]
    assert txt.image.size == (64, 48)
    source = painted(40, 56)
    img = single_file_engine.generate(
        make_request(task=Task.IMG2IMG, image=source, strength=1.0, **common)
    )[0]
    assert img.image.size == (40, 56)
    inpainted = single_file_engine.generate(
        make_request(
            task=Task.INPAINT,
            image=source,
            mask=rect_mask((40, 56), (10, 10, 30, 40)),
            strength=1.0,
            **common,
        )
    )[0].image
    alpha = np.asarray(inpainted.getchannel("A"))
    assert inpainted.size == (40, 56) and alpha[0, 0] == 0 and alpha[25, 20] == 255


def test_cache_keeps_the_most_recently_used_models(single_file_engine):
    for name in ("tiny-sd15", "tiny-sdxl", "tiny-sd15-inpaint", "tiny-sdxl"):
        single_file_engine.generate(
            make_request(task=Task.TXT2IMG, model=name, prompt="x", steps=1, width=64, height=64)
        )
    assert single_file_engine.loaded_models() == ["tiny-sd15-inpaint", "tiny-sdxl"]


def test_tasks_share_one_set_of_weights(single_file_engine):

    single_file_engine.generate(
        make_request(task=Task.TXT2IMG, model="tiny-sdxl", prompt="x", steps=1, width=64, height=64)
    )
    model = single_file_engine._cache["tiny-sdxl"]
    img2img, inpaint = model.pipeline_for(Task.IMG2IMG), model.pipeline_for(Task.INPAINT)
    assert img2img.unet is model.base.unet is inpaint.unet
    assert img2img.vae is model.base.vae and img2img.text_encoder_2 is model.base.text_encoder_2


def test_sdxl_previews_use_the_sdxl_map(single_file_engine):
    seen = []
    single_file_engine.generate(
        make_request(
            task=Task.TXT2IMG,
            model="tiny-sdxl",
            prompt="x",
            steps=2,
            width=64,
            height=32,
            preview_every=1,
        ),
        on_preview=seen.append,
    )
    assert seen and seen[-1].step == 2 and seen[-1].image.size == (256, 128)
