"""Each task end to end on the embedded model: sizes, seeds, determinism, metadata."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kd_server.generation import EngineError, EngineErrorCode, GenerationRequest, Task
from kd_server.pngmeta import encode_png, read_parameters
from support.images import painted
from support.jobs import make_request


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)


def txt2img(**overrides) -> GenerationRequest:
    fields = {"task": Task.TXT2IMG, "prompt": "a red fox", "steps": 4, "width": 64, "height": 64}
    fields.update(overrides)
    return make_request(**fields)


def test_txt2img_gives_requested_size_and_reports_seed(embedded_engine):
    images = embedded_engine.generate(txt2img(width=96, height=64, seed=42))
    assert len(images) == 1
    assert images[0].image.size == (96, 64)
    assert images[0].image.mode == "RGB"
    assert images[0].seed == 42


def test_same_seed_same_image_other_seed_other_image(embedded_engine):
    first = embedded_engine.generate(txt2img(seed=7))[0].image
    again = embedded_engine.generate(txt2img(seed=7))[0].image
    other = embedded_engine.generate(txt2img(seed=8))[0].image
    assert np.abs(pixels(first) - pixels(again)).max() <= 1
    assert np.abs(pixels(first) - pixels(other)).mean() > 5


def test_batch_uses_consecutive_seeds_matching_single_runs(embedded_engine):
    batch = embedded_engine.generate(txt2img(seed=100, batch_size=2))
    assert [image.seed for image in batch] == [100, 101]
    single = embedded_engine.generate(txt2img(seed=101))[0]
    assert np.abs(pixels(batch[1].image) - pixels(single.image)).max() <= 2


def test_random_seed_when_none_or_minus_one(embedded_engine):
    seeds = {embedded_engine.generate(txt2img(seed=s, steps=1))[0].seed for s in (None, -1, None)}
    assert len(seeds) == 3
    assert all(0 <= seed < 2**32 for seed in seeds)


def test_negative_prompt_and_cfg_change_the_image(embedded_engine):
    base = embedded_engine.generate(txt2img(seed=3))[0].image
    negative = embedded_engine.generate(txt2img(seed=3, negative_prompt="blurry, dark"))[0].image
    low_cfg = embedded_engine.generate(txt2img(seed=3, cfg_scale=1.0))[0].image
    assert np.abs(pixels(base) - pixels(negative)).mean() > 0.5
    assert np.abs(pixels(base) - pixels(low_cfg)).mean() > 0.5


def test_img2img_keeps_input_size_and_strength_controls_change(embedded_engine):
    source = painted(75, 50)  # neither a multiple of 8 nor square

    def run(strength: float) -> Image.Image:
        request = make_request(
            task=Task.IMG2IMG, prompt="x", image=source, strength=strength, steps=8, seed=1
        )
        return embedded_engine.generate(request)[0].image

    light, heavy = run(0.25), run(1.0)
    assert light.size == heavy.size == (75, 50)
    assert (
        np.abs(pixels(light) - pixels(source)).mean()
        < np.abs(pixels(heavy) - pixels(source)).mean()
    )


def test_png_carries_a1111_parameters(embedded_engine):
    result = embedded_engine.generate(txt2img(seed=9, negative_prompt="ugly", sampler="Euler a"))[0]
    text = read_parameters(encode_png(result.image, result.parameters))
    assert text is not None
    prompt, negative, details = text.split("\n")
    assert prompt == "a red fox"
    assert negative == "Negative prompt: ugly"
    for part in ("Steps: 4", "Sampler: Euler a", "CFG scale: 7", "Seed: 9", "Size: 64x64"):
        assert part in details
    assert "Model: tiny-sd15-embedded" in details


def test_previews_follow_preview_every(embedded_engine):
    seen, previews = [], []
    embedded_engine.generate(
        txt2img(steps=6, preview_every=2), on_progress=seen.append, on_preview=previews.append
    )
    assert [p.step for p in seen] == [1, 2, 3, 4, 5, 6]
    assert all(p.total == 6 for p in seen)
    steps = [p.step for p in previews]
    # in step order; one may be skipped when a newer one is due first, never the last
    assert steps == sorted(set(steps)) and set(steps) <= {2, 4, 6} and steps[-1] == 6
    assert all(p.total == 6 for p in previews)
    assert previews[-1].image.mode == "RGB" and max(previews[-1].image.size) == 256


def test_no_previews_when_zero(embedded_engine):
    seen, previews = [], []
    embedded_engine.generate(
        txt2img(preview_every=0), on_progress=seen.append, on_preview=previews.append
    )
    assert seen and not previews


@pytest.mark.parametrize(
    ("request_fields", "code"),
    [
        ({"model": "no-such-model"}, EngineErrorCode.MODEL_NOT_FOUND),
        ({"model": "../../etc/passwd"}, EngineErrorCode.MODEL_NOT_FOUND),
        ({"sampler": "Euler z"}, EngineErrorCode.SAMPLER_NOT_FOUND),
        ({"task": Task.IMG2IMG}, EngineErrorCode.INVALID_INPUT),
        (
            {"task": Task.INPAINT, "image": Image.new("RGB", (64, 64))},
            EngineErrorCode.INVALID_INPUT,
        ),
    ],
)
def test_bad_requests_are_refused_with_a_reason(embedded_engine, request_fields, code):
    with pytest.raises(EngineError) as info:
        embedded_engine.check(txt2img(**request_fields))
    assert info.value.code is code
    assert len(info.value.message) > 20
