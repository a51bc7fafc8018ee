"""Fast-model detection from names and safetensors metadata, on real files, and the
`auto` sampling rules (which model decides, what the body keeps, steps per strength)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from test_library import kohya_lora, sd15_tensors, write, write_diffusers

from kd_server.fast_modes import FastKind, auto_sampling, detect_fast_mode, fast_mode_of
from kd_server.generation import (
    Conditioning,
    GenerationRequest,
    ImageInputs,
    LoraSpec,
    Sampling,
    Task,
)
from kd_server.library import ModelLibrary

# Names as the files are published (model cards, Civitai), and what they are.
REAL_NAMES = [
    ("lcm-lora-sdv1-5", FastKind.LCM, 4, 1.0),
    ("lcm_lora_sdxl", FastKind.LCM, 4, 1.0),
    ("dreamshaper_8LCM", FastKind.LCM, 4, 1.0),
    ("sdxl_lightning_4step_lora", FastKind.LIGHTNING, 4, 1.0),
    ("sdxl_lightning_8step", FastKind.LIGHTNING, 8, 1.0),
    ("realvisxlV40_v40LightningBakedvae", FastKind.LIGHTNING, 4, 1.0),
    ("Hyper-SD15-1step-lora", FastKind.HYPER, 1, 1.0),
    ("Hyper-SDXL-8steps-lora", FastKind.HYPER, 8, 1.0),
    ("Hyper-SDXL-12steps-CFG-lora", FastKind.HYPER, 12, 5.0),
    ("HyperSDXL1StepUnet", FastKind.HYPER, 1, 1.0),
    ("sd_xl_turbo_1.0_fp16", FastKind.TURBO, 4, 1.0),
    ("dreamshaperXL_v21TurboDPMSDE", FastKind.TURBO, 4, 1.0),
    ("sdxl/SDXLTurbo", FastKind.TURBO, 4, 1.0),
    ("lcm-lora-sdv1-5/pytorch_lora_weights", FastKind.LCM, 4, 1.0),
]
ORDINARY_NAMES = [
    "v1-5-pruned-emaonly",
    "hyperrealism_v3",  # "hyper" alone is not Hyper-SD
    "calcmodel_lcmless",  # "lcm" only as a word of its own
    "pytorch_lora_weights",
    "juggernautXL_v9Rdphoto2",
    "sdxl/refined-4steps-details",  # a step count without a kind says nothing
]


@pytest.mark.parametrize(("name", "kind", "steps", "cfg"), REAL_NAMES)
def test_published_names_are_recognised(name: str, kind: FastKind, steps: int, cfg: float) -> None:
    mode = detect_fast_mode(name, {})
    assert mode is not None
    assert (mode.kind, mode.steps, mode.cfg_scale, mode.found_in) == (kind, steps, cfg, "name")


@pytest.mark.parametrize("name", ORDINARY_NAMES)
def test_ordinary_names_are_not_fast(name: str) -> None:
    assert detect_fast_mode(name, {}) is None


def test_metadata_names_a_renamed_file_and_the_file_name_wins() -> None:
    titled = detect_fast_mode("my-favourite", {"modelspec.title": "SDXL Lightning 2-step"})
    assert titled is not None and (titled.kind, titled.steps) == (FastKind.LIGHTNING, 2)
    assert titled.found_in == "modelspec.title"
    trained = detect_fast_mode("style", {"ss_output_name": "lcm_lora_anime"})
    assert trained is not None and trained.found_in == "ss_output_name"
    named = detect_fast_mode("sd_xl_turbo", {"modelspec.title": "Hyper-SD 8 steps"})
    assert named is not None and named.kind is FastKind.TURBO
    # Keys that do not name the model are not read (a description may mention anything).
    assert detect_fast_mode("style", {"modelspec.description": "faster than LCM"}) is None


@pytest.fixture
def library(tmp_path: Path) -> ModelLibrary:
    """Real files: LoRAs and checkpoints whose kind is in the name or in the header."""
    loras = tmp_path / "loras"
    write(loras / "sdxl_lightning_4step_lora.safetensors", kohya_lora(xl=True))
    write(loras / "style.safetensors", kohya_lora())
    save_file(
        kohya_lora(),
        str(loras / "renamed.safetensors"),
        metadata={"ss_output_name": "Hyper-SD15-2steps-lora", "ss_network_dim": "4"},
    )
    write(loras / "lcm-broken.safetensors", {"not_a_lora": torch.zeros(2)})
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    save_file(
        sd15_tensors(),
        str(checkpoints / "merge.safetensors"),
        metadata={"modelspec.title": "Merge LCM v2"},
    )
    write(checkpoints / "plain.safetensors", sd15_tensors())
    write_diffusers(checkpoints / "sdxl-turbo", "StableDiffusionXLPipeline", 4)
    return ModelLibrary([tmp_path], include_embedded=False, default_model="plain")


def test_the_library_reads_names_and_headers(library: ModelLibrary) -> None:
    loras = {entry.name: entry for entry in library.loras()}
    lightning = loras["sdxl_lightning_4step_lora"].fast
    assert lightning is not None and lightning.kind is FastKind.LIGHTNING
    renamed = loras["renamed"].fast
    assert renamed is not None and (renamed.kind, renamed.steps) == (FastKind.HYPER, 2)
    assert renamed.found_in == "ss_output_name"
    assert loras["style"].fast is None
    assert not loras["lcm-broken"].usable and loras["lcm-broken"].fast is None
    checkpoints = {entry.name: entry for entry in library.checkpoints()}
    merge = checkpoints["merge"].fast
    assert merge is not None and (merge.kind, merge.found_in) == (FastKind.LCM, "modelspec.title")
    turbo = checkpoints["sdxl-turbo"].fast
    assert turbo is not None and turbo.kind is FastKind.TURBO
    assert checkpoints["plain"].fast is None


def request(
    task: Task = Task.TXT2IMG,
    loras: tuple[tuple[str, float], ...] = (),
    model: str | None = None,
    strength: float = 0.75,
) -> GenerationRequest:
    return GenerationRequest(
        task=task,
        conditioning=Conditioning(loras=[LoraSpec(n, w) for n, w in loras]),
        sampling=Sampling(sampler="Euler a", steps=30, cfg_scale=6.0),
        inputs=ImageInputs(strength=strength),
        model=model,
    )


def test_which_model_decides(library: ModelLibrary) -> None:
    first_fast = fast_mode_of(request(loras=(("style", 1), ("renamed", 1))), library)
    assert first_fast is not None and first_fast.kind is FastKind.HYPER
    over_checkpoint = fast_mode_of(
        request(loras=(("sdxl_lightning_4step_lora", 0.7),), model="merge"), library
    )
    assert over_checkpoint is not None and over_checkpoint.kind is FastKind.LIGHTNING
    switched_off = fast_mode_of(
        request(loras=(("sdxl_lightning_4step_lora", 0.0),), model="merge"), library
    )
    assert switched_off is not None and switched_off.kind is FastKind.LCM
    assert fast_mode_of(request(loras=(("no-such-lora", 1),)), library) is None  # default: plain
    assert fast_mode_of(request(model="no-such-model"), library) is None


def test_auto_keeps_given_fields_and_divides_steps_by_strength(library: ModelLibrary) -> None:
    lightning = (("sdxl_lightning_4step_lora", 1.0),)
    txt = auto_sampling(request(loras=lightning), library).sampling
    assert (txt.sampler, txt.steps, txt.cfg_scale) == ("Euler SGM Uniform", 4, 1.0)
    kept = auto_sampling(request(loras=lightning), library, given={"sampler", "cfg_scale"})
    assert (kept.sampling.sampler, kept.sampling.steps, kept.sampling.cfg_scale) == (
        "Euler a",
        4,
        6.0,
    )
    img = auto_sampling(request(Task.IMG2IMG, lightning, strength=0.3), library).sampling
    assert img.steps == 14  # ceil(4 / 0.3): 4 of the 14 steps run
    full = auto_sampling(request(Task.IMG2IMG, lightning, strength=1.0), library).sampling
    assert full.steps == 4
    lcm = auto_sampling(request(Task.INPAINT, model="merge", strength=0.02), library).sampling
    assert (lcm.sampler, lcm.steps) == ("LCM", 50)  # LCM runs at most its 50 steps
    plain = request(loras=(("style", 1.0),))
    assert auto_sampling(plain, library) == plain
