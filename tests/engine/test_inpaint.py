"""The inpaint contract (docs/architecture.md): an RGBA result of exactly the region's size whose
alpha is the grown and feathered selection."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kd_server.generation import Task
from kd_server.masks import prepare_mask, working_size
from support.images import painted, rect_mask
from support.jobs import make_request


@pytest.mark.parametrize(
    ("size", "box"),
    [((77, 45), (20, 10, 50, 35)), ((45, 120), (5, 30, 40, 90)), ((64, 64), (0, 0, 30, 64))],
)
@pytest.mark.parametrize(("grow", "feather"), [(0, 0), (3, 6)])
def test_inpaint_result_matches_region_and_mask(embedded_engine, size, box, grow, feather):
    request = make_request(
        task=Task.INPAINT,
        prompt="a window",
        image=painted(*size),
        mask=rect_mask(size, box),
        mask_grow=grow,
        mask_feather=feather,
        strength=1.0,
        steps=3,
        seed=5,
    )
    result = embedded_engine.generate(request)[0].image
    assert result.size == size
    assert result.mode == "RGBA"
    alpha = np.asarray(result.getchannel("A"))
    left, top, right, bottom = box
    reach = grow + feather
    outside = np.ones_like(alpha, dtype=bool)
    outside[max(0, top - reach) : bottom + reach, max(0, left - reach) : right + reach] = False
    assert (alpha[outside] == 0).all()
    inner = reach + 1
    deep_inside = alpha[top + inner : bottom - inner, left + inner : right - inner]
    assert deep_inside.size > 0 and (deep_inside == 255).all()
    if feather:
        row = alpha[(top + bottom) // 2, :]
        edge_values = set(row[right - inner : right + reach].tolist())
        assert len(edge_values - {0, 255}) >= 3  # a gradient, not a hard step
    else:
        assert set(np.unique(alpha).tolist()) <= {0, 255}
    rgb = np.asarray(result.convert("RGB"), dtype=np.float32)
    assert rgb[alpha > 0].std() > 0  # pixels were actually painted


def test_soft_selection_keeps_grey_levels():
    mask = rect_mask((40, 40), (10, 10, 30, 30), level=128)
    alpha = np.asarray(prepare_mask(mask, 0, 0))
    assert alpha[20, 20] == 128 and alpha[0, 0] == 0


def test_region_scales_to_working_size_keeping_aspect():
    assert working_size(512, 512, 512) == (512, 512)
    width, height = working_size(300, 100, 512)
    assert width % 8 == 0 and height % 8 == 0
    assert abs(width / height - 3) < 0.1
    assert abs(width * height - 512 * 512) / (512 * 512) < 0.05
    assert working_size(4096, 4096, 1024) == (1024, 1024)


def test_low_strength_keeps_the_masked_content_recognisable(embedded_engine):
    size, box = (64, 64), (16, 16, 48, 48)
    source = painted(*size)

    def change(strength: float) -> float:
        request = make_request(
            task=Task.INPAINT,
            prompt="x",
            image=source,
            mask=rect_mask(size, box),
            strength=strength,
            steps=10,
            seed=2,
        )
        result = embedded_engine.generate(request)[0].image
        assert result.size == size
        left, top, right, bottom = box
        inside = (slice(top, bottom), slice(left, right))
        new = np.asarray(result.convert("RGB"), dtype=np.float32)[inside]
        old = np.asarray(source.convert("RGB"), dtype=np.float32)[inside]
        return float(np.abs(new - old).mean())

    assert change(0.3) < change(1.0)  # (about 62 against 73 with the tiny model)


def test_empty_mask_is_refused(embedded_engine):
    from kd_server.generation import EngineError

    request = make_request(
        task=Task.INPAINT, prompt="x", image=painted(32, 32), mask=Image.new("L", (32, 32), 0)
    )
    with pytest.raises(EngineError, match="selects nothing"):
        embedded_engine.check(request)
