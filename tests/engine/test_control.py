"""Control layers end to end on the embedded model with tiny ControlNets, IP-Adapter and
depth estimator, loaded from files the way downloaded ones are (issue 16)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kd_server.engine import Engine
from kd_server.generation import (
    ControlInput,
    ControlMode,
    EngineError,
    EngineErrorCode,
    ReferenceInput,
    Task,
)
from kd_server.library import ModelLibrary
from modelkit import control_models
from support.control import DEPTH, IP_ADAPTER, LINES, disc, outline, write_control_models
from support.images import painted, rect_mask
from support.jobs import make_request

COMMON = {"prompt": "a ball on a table", "steps": 4, "seed": 5, "sampler": "Euler"}
SIZE = (64, 64)


def run(engine: Engine, **fields) -> np.ndarray:
    request = make_request(**{**COMMON, "width": SIZE[0], "height": SIZE[1], **fields})
    return np.asarray(engine.generate(request)[0].image, dtype=np.float32)


def depth(**fields) -> ControlInput:
    return ControlInput(
        **{"model": DEPTH, "image": disc(SIZE), "mode": ControlMode.DEPTH, **fields}
    )


def differ(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def test_a_control_changes_the_picture_and_strength_zero_is_none(control_engine):
    plain = run(control_engine)
    controlled = run(control_engine, control=[depth()])
    off = run(control_engine, control=[depth(strength=0)])
    assert differ(controlled, plain) > 3
    assert np.array_equal(off, plain)
    assert np.array_equal(run(control_engine), plain)  # nothing stays behind


def test_strength_scales_the_effect(control_engine):
    plain = run(control_engine)
    half = differ(run(control_engine, control=[depth(strength=0.5)]), plain)
    full = differ(run(control_engine, control=[depth(strength=1.0)]), plain)
    double = differ(run(control_engine, control=[depth(strength=2.0)]), plain)
    assert 0 < half < full < double


def test_start_and_end_bound_the_steps_it_acts_on(control_engine):
    """4 steps: step i acts when i/4 >= start and (i+1)/4 <= end (diffusers' rule)."""
    plain = run(control_engine)
    full = run(control_engine, control=[depth()])
    first_half = run(control_engine, control=[depth(end=0.5)])
    second_half = run(control_engine, control=[depth(start=0.5)])
    no_step = run(control_engine, control=[depth(start=0.9)])  # no step starts that late
    assert np.array_equal(no_step, plain)
    for partial in (first_half, second_half):
        assert differ(partial, plain) > 0.5 and differ(partial, full) > 0.5
    # the early steps set the composition: they carry most of the control's effect
    assert differ(first_half, plain) > 5 * differ(second_half, plain)


def test_two_controls_at_once(control_engine):
    lines = ControlInput(model=LINES, image=outline(SIZE), mode=ControlMode.LINEART)
    plain = run(control_engine)
    one = run(control_engine, control=[depth()])
    other = run(control_engine, control=[lines])
    both = run(control_engine, control=[depth(), lines])
    assert min(differ(both, one), differ(both, other), differ(both, plain)) > 1


def test_img2img_and_inpaint_take_controls(control_engine):
    source = painted(*SIZE)  # worked on at the model's size, 256: two steps suffice
    inputs = {"task": Task.IMG2IMG, "image": source, "strength": 0.7, "steps": 3}
    img_plain = run(control_engine, **inputs)
    img_ctl = run(control_engine, **inputs, control=[depth()])
    assert differ(img_ctl, img_plain) > 2
    mask = rect_mask(SIZE, (16, 16, 48, 48))
    inputs = {**inputs, "task": Task.INPAINT, "mask": mask}
    in_plain = run(control_engine, **inputs)
    in_ctl = run(control_engine, **inputs, control=[depth()])
    assert differ(in_ctl[..., :3], in_plain[..., :3]) > 1
    assert np.array_equal(in_ctl[..., 3], in_plain[..., 3])  # the mask still decides alpha
    assert in_ctl[0, 0, 3] == 0 and in_ctl[32, 32, 3] == 255


def test_preprocessed_pictures_steer_differently_from_raw_ones(control_engine):
    picture = painted(*SIZE)
    raw = run(control_engine, control=[depth(image=picture)])
    canny = run(
        control_engine, control=[depth(image=picture, mode=ControlMode.CANNY, preprocess=True)]
    )
    estimated = run(control_engine, control=[depth(image=picture, preprocess=True)])
    assert differ(canny, raw) > 1 and differ(estimated, raw) > 1


def test_a_reference_image_changes_the_picture_and_leaves_nothing_behind(control_engine):
    plain = run(control_engine)
    reference = ReferenceInput(IP_ADAPTER, painted(40, 30), weight=1.0)
    referenced = run(control_engine, reference=reference)
    weightless = run(control_engine, reference=ReferenceInput(IP_ADAPTER, painted(40, 30), 0.0))
    assert differ(referenced, plain) > 3
    assert np.abs(weightless - plain).max() <= 1
    assert np.array_equal(run(control_engine), plain)  # the adapter left the UNet
    with_control = run(control_engine, reference=reference, control=[depth()])
    assert differ(with_control, referenced) > 1


# ------------------------------------------------------------------- refused at check


def refused(engine: Engine, **fields) -> EngineError:
    request = make_request(**{**COMMON, "width": SIZE[0], "height": SIZE[1], **fields})
    with pytest.raises(EngineError) as caught:
        engine.check(request)
    return caught.value


def test_unknown_control_model_is_not_found_with_a_suggestion(control_engine):
    error = refused(control_engine, control=[depth(model="tiny-dept")])
    assert error.code is EngineErrorCode.MODEL_NOT_FOUND
    assert "no control model named 'tiny-dept'" in error.message
    assert f"Did you mean '{DEPTH}'" in error.message


def test_control_image_of_another_size_is_refused(control_engine):
    error = refused(control_engine, control=[depth(image=disc((64, 48)))])
    assert error.code is EngineErrorCode.INVALID_INPUT
    assert "control[0].image is 64x48 but the region being generated is 64x64" in error.message
    img2img = refused(control_engine, task=Task.IMG2IMG, image=painted(80, 40), control=[depth()])
    assert "region being generated is 80x40" in img2img.message


@pytest.mark.parametrize(
    ("control", "words"),
    [
        (
            ControlInput(model=IP_ADAPTER, image=disc(SIZE)),
            "is an IP-Adapter; send it as the reference",
        ),
        (ControlInput(model=DEPTH, image=disc(SIZE), start=0.6, end=0.4), "must be below end"),
        (ControlInput(model=DEPTH, image=disc(SIZE), strength=2.5), "between 0 and 2"),
    ],
)
def test_misused_controls_are_refused_with_a_sentence(control_engine, control, words):
    error = refused(control_engine, control=[control])
    assert error.code is EngineErrorCode.INVALID_INPUT and words in error.message


def test_a_controlnet_as_reference_is_refused(control_engine):
    error = refused(control_engine, reference=ReferenceInput(DEPTH, disc(SIZE)))
    assert "is a ControlNet; a reference image needs an IP-Adapter" in error.message


def test_depth_preprocessing_without_an_estimator_names_the_installer_command(tmp_path):
    root = write_control_models(tmp_path, estimator=False)
    engine = Engine(ModelLibrary([root]), device="cpu")
    error = refused(engine, control=[depth(preprocess=True)])
    assert error.code is EngineErrorCode.PREPROCESSOR_UNAVAILABLE
    assert "python3 -m installer download depth-anything-v2-small" in error.message
    refused_raw = None
    try:
        engine.check(make_request(**COMMON, width=64, height=64, control=[depth()]))
    except EngineError as exc:  # a painted depth map needs no estimator
        refused_raw = exc
    assert refused_raw is None


def test_a_control_model_of_another_family_is_refused_naming_both(tmp_path):
    from modelkit.ldm_layout import build_tiny_components

    xl_unet = build_tiny_components("sdxl", seed=1).unet
    control_models.write_controlnet(tmp_path / "controlnet", "xl-depth", xl_unet, 3, "diffusers")
    engine = Engine(ModelLibrary([tmp_path]), device="cpu")
    control = ControlInput(model="xl-depth", image=disc(SIZE))
    error = refused(engine, control=[control])
    assert error.code is EngineErrorCode.CONTROL_MISMATCH
    assert "'xl-depth' is made for SDXL" in error.message
    assert "'tiny-sd15-embedded' is SD 1.5" in error.message
    assert "choose a ControlNet made for SD 1.5" in error.message


def test_image_sizes_stay_as_asked(control_engine):
    request = make_request(**COMMON, width=96, height=64, control=[depth(image=disc((96, 64)))])
    image = control_engine.generate(request)[0].image
    assert image.size == (96, 64)
    assert isinstance(image, Image.Image)
