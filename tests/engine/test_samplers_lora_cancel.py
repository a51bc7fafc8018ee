"""Samplers, LoRAs, cancellation and out-of-memory recovery on the embedded model."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from kd_server.engine import Engine
from kd_server.generation import (
    Cancelled,
    EngineError,
    EngineErrorCode,
    GenerationRequest,
    LoraSpec,
    Task,
)
from kd_server.library import ModelLibrary
from kd_server.samplers import canonical_name, sampler_names
from modelkit.loras import write_test_lora
from support.jobs import make_request


def small(**overrides) -> GenerationRequest:
    fields = {"task": Task.TXT2IMG, "prompt": "a tree", "steps": 3, "width": 64, "height": 64}
    fields.update(overrides)
    return make_request(**fields)


REQUIRED = [
    "Euler",
    "Euler a",
    "DPM++ 2M",
    "DPM++ 2M Karras",
    "DPM++ 2M SDE Karras",
    "DPM++ SDE Karras",
    "DDIM",
    "UniPC",
    "LCM",
]


def test_required_samplers_are_listed():
    names = sampler_names()
    for name in REQUIRED:
        assert name in names


@pytest.mark.parametrize("name", sampler_names())
def test_every_listed_sampler_runs(embedded_engine, name):
    result = embedded_engine.generate(small(sampler=name, seed=1))[0]
    values = np.asarray(result.image, dtype=np.float32)
    assert np.isfinite(values).all() and values.std() > 0
    assert f"Sampler: {name}," in result.parameters


def test_sampler_and_schedule_spellings_agree():
    assert canonical_name("DPM++ 2M", "Karras") == "DPM++ 2M Karras"
    assert canonical_name("dpm++ 2m karras") == "DPM++ 2M Karras"
    assert canonical_name("Euler a", "Automatic") == "Euler a"


def test_samplers_give_different_images(embedded_engine):
    euler = embedded_engine.generate(small(sampler="Euler", seed=4, steps=6))[0].image
    ddim = embedded_engine.generate(small(sampler="DDIM", seed=4, steps=6))[0].image
    diff = np.abs(np.asarray(euler, dtype=np.float32) - np.asarray(ddim, dtype=np.float32))
    assert diff.mean() > 0.5


@pytest.fixture(scope="module")
def lora_engine(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    write_test_lora(root / "loras", "bright", seed=1)
    write_test_lora(root / "loras", "dark", seed=2)
    return Engine(ModelLibrary([root]), device="cpu")


def _image(engine: Engine, loras: list[LoraSpec]) -> np.ndarray:
    result = engine.generate(small(seed=11, steps=4, loras=loras))[0]
    return np.asarray(result.image, dtype=np.float32)


def test_lora_changes_the_image_and_never_leaks(lora_engine):
    names = [entry.name for entry in lora_engine.library.loras() if entry.usable]
    assert names == ["bright", "dark"]
    base = _image(lora_engine, [])
    with_bright = _image(lora_engine, [LoraSpec("bright", 1.0)])
    assert np.abs(with_bright - base).mean() > 1.0
    after = _image(lora_engine, [])
    assert np.abs(after - base).max() <= 1  # no leak into a job that did not ask for it
    both = _image(lora_engine, [LoraSpec("bright", 1.0), LoraSpec("dark", 0.5)])
    assert np.abs(both - with_bright).mean() > 0.5
    zero = _image(lora_engine, [LoraSpec("bright", 0.0)])
    assert np.abs(zero - base).max() <= 1


def test_lora_gone_after_unload(lora_engine):
    base = _image(lora_engine, [])
    _image(lora_engine, [LoraSpec("dark", 1.0)])
    lora_engine.unload()
    assert lora_engine.loaded_models() == []
    assert np.abs(_image(lora_engine, []) - base).max() <= 1


def test_a_replaced_lora_file_is_loaded_again(tmp_path):
    write_test_lora(tmp_path / "loras", "style", seed=5)
    engine = Engine(ModelLibrary([tmp_path]), device="cpu")
    first = _image(engine, [LoraSpec("style", 1.0)])
    write_test_lora(tmp_path / "loras", "style", seed=6)  # same name, new weights
    engine.library.refresh()
    second = _image(engine, [LoraSpec("style", 1.0)])
    assert np.abs(first - second).mean() > 0.5


def test_the_same_lora_twice_is_refused(lora_engine):
    with pytest.raises(EngineError) as info:
        lora_engine.check(small(loras=[LoraSpec("bright", 1.0), LoraSpec("bright", 0.2)]))
    assert info.value.code is EngineErrorCode.INVALID_INPUT


def test_unknown_lora_is_refused(lora_engine):
    with pytest.raises(EngineError) as info:
        lora_engine.check(small(loras=[LoraSpec("nope")]))
    assert info.value.code is EngineErrorCode.LORA_NOT_FOUND


def test_cancel_mid_run_returns_promptly_and_pipeline_is_reusable(embedded_engine):
    steps_seen: list[int] = []
    stop = threading.Event()

    def on_progress(progress) -> None:
        steps_seen.append(progress.step)
        if progress.step == 3:
            stop.set()

    with pytest.raises(Cancelled):
        embedded_engine.generate(
            small(steps=50), on_progress=on_progress, should_cancel=stop.is_set
        )
    assert steps_seen == [1, 2, 3]  # stopped at the next step boundary
    again = embedded_engine.generate(small(seed=1))
    assert again[0].image.size == (64, 64)


def test_out_of_memory_fails_the_job_and_the_engine_keeps_working(embedded_engine):
    def exhaust(progress) -> None:
        if progress.step == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(EngineError) as info:
        embedded_engine.generate(small(steps=5), on_progress=exhaust)
    assert info.value.code is EngineErrorCode.OUT_OF_MEMORY
    assert "smaller" in info.value.message
    assert embedded_engine.generate(small(seed=2))[0].image.size == (64, 64)


def test_preload_warms_the_default_model_and_unload_drops_it():
    engine = Engine(ModelLibrary([]), device="cpu")
    loading: list[str] = []
    assert engine.preload() == "tiny-sd15-embedded"
    assert engine.loaded_models() == ["tiny-sd15-embedded"]
    engine.generate(small(), on_loading=loading.append)
    assert loading == []  # already warm: nothing to load
    engine.unload("tiny-sd15-embedded")
    engine.generate(small(), on_loading=loading.append)
    assert loading == ["tiny-sd15-embedded"]


def test_loras_whose_names_differ_only_in_punctuation_are_kept_apart(tmp_path):
    write_test_lora(tmp_path / "loras", "ink-style", seed=3)
    write_test_lora(tmp_path / "loras", "ink_style", seed=4)
    engine = Engine(ModelLibrary([tmp_path]), device="cpu")
    hyphen = _image(engine, [LoraSpec("ink-style", 1.0)])
    underscore = _image(engine, [LoraSpec("ink_style", 1.0)])
    assert np.abs(hyphen - underscore).mean() > 0.5  # two files, two different results
    assert np.abs(_image(engine, [LoraSpec("ink-style", 1.0)]) - hyphen).max() <= 1


def test_warm_adapters_are_not_dropped_for_loras_already_loaded(tmp_path):
    names = [f"l{i}" for i in range(6)]
    for seed, name in enumerate(names):
        write_test_lora(tmp_path / "loras", name, seed=seed)
    engine = Engine(ModelLibrary([tmp_path]), device="cpu")
    for name in names:
        engine.generate(small(steps=1, loras=[LoraSpec(name, 1.0)]))
    model = engine._cache["tiny-sd15-embedded"]
    assert set(model.adapters) == set(names)
    engine.generate(small(steps=1, loras=[LoraSpec(n, 0.5) for n in names[:4]]))
    assert set(model.adapters) == set(names)  # nothing new to load: no reason to unload
