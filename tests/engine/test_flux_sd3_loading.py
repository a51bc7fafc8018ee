"""Flux.1 and SD 3.5 checkpoints load offline from every layout and generate.

The tiny files (tests/support/flux_sd3.py) are fp32 copies of in-memory pipelines, so
what `load_model` reads back must equal those pipelines tensor for tensor, and give the
same picture. fp8 and GGUF Q8_0 files round their weights: those are checked to load
in their own form (upcast / quantised layers) and to give nearly the same picture.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from support.flux_sd3 import EXTRA, TRANSFORMERS, session_models

SPLIT = [stem for stem, _ in TRANSFORMERS.values()]
WHOLE = ["flux1-dev-tiny-aio", "sd3.5_medium-tiny-aio"]
FOLDERS = ["flux1-schnell-tiny-diffusers", "sd3.5_large-tiny-diffusers"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return session_models(tmp_path_factory)


@pytest.fixture(scope="module")
def library(models):
    from kd_server.library import ModelLibrary

    return ModelLibrary([models.root], include_embedded=False)


@pytest.fixture(scope="module")
def cpu():
    from kd_server.devices import choose_device

    return choose_device("cpu")


def _entry(library, name):
    entry = library.get_checkpoint(name)
    assert entry.usable, entry.reason
    return entry


def _kind(name: str) -> str:
    if name in EXTRA:
        return EXTRA[name][0]
    return next(kind for kind, (stem, _) in TRANSFORMERS.items() if stem == name)


def _picture(pipe, kind: str) -> np.ndarray:
    from PIL import Image

    options = {
        "prompt": "a red fox in the snow",
        "height": 64,
        "width": 64,
        "num_inference_steps": 2,
        "generator": torch.Generator("cpu").manual_seed(7),
        "max_sequence_length": 32,
        "output_type": "np",
    }
    if kind == "fill":
        options["image"] = Image.new("RGB", (64, 64), (200, 40, 40))
        options["mask_image"] = Image.new("L", (64, 64), 255)
    return pipe(**options).images[0]


def _modules(pipe) -> dict[str, torch.nn.Module]:
    return {
        name: module
        for name, module in pipe.components.items()
        if isinstance(module, torch.nn.Module)
    }


def _assert_same_weights(loaded, reference) -> None:
    ours, theirs = _modules(loaded), _modules(reference)
    assert ours.keys() == theirs.keys()
    for name, module in theirs.items():
        expected, got = module.state_dict(), ours[name].state_dict()
        assert got.keys() == expected.keys(), name
        for key, tensor in expected.items():
            assert torch.equal(got[key], tensor), f"{name}.{key}"


@pytest.mark.parametrize("name", SPLIT + WHOLE + FOLDERS)
def test_loads_the_same_weights_and_picture(models, library, cpu, name):
    from kd_server.loading import load_model

    entry = _entry(library, name)
    loaded = load_model(entry, cpu)
    reference = models.pipe_of(name)
    assert type(loaded.base) is type(reference)
    assert loaded.family.value == TRANSFORMERS[_kind(name)][1]
    _assert_same_weights(loaded.base, reference)
    picture = _picture(loaded.base, _kind(name))
    assert picture.shape == (64, 64, 3)
    # same weights, same seed: the same picture up to float noise
    assert np.abs(picture - _picture(reference, _kind(name))).max() < 1e-4


def test_working_size_comes_from_the_loaded_config(library, cpu):
    from kd_server.loading import load_model

    # SD3: the transformer's sample size (32 latents) x 8; Flux: its VAE's sample size
    assert load_model(_entry(library, "sd3.5_large-tiny"), cpu).working_size == 256
    assert load_model(_entry(library, "flux1-schnell-tiny"), cpu).working_size == 256
    assert library.get_checkpoint("flux1-schnell-tiny").family.info.working_size == 1024


def test_fp8_transformer_is_upcast_and_runs(models, library, cpu):
    from kd_server.loading import load_model

    loaded = load_model(_entry(library, "flux1-dev-tiny-fp8"), cpu)
    reference = models.pipes["dev"]
    transformer = loaded.base.transformer
    assert transformer.dtype == torch.float32
    for key, tensor in reference.transformer.state_dict().items():
        got = transformer.state_dict()[key]
        # float8_e4m3fn keeps 3 mantissa bits: within 1/16 of the value, plus subnormals
        assert torch.allclose(got, tensor, rtol=1 / 16, atol=2e-3), key
    difference = np.abs(_picture(loaded.base, "dev") - _picture(reference, "dev"))
    assert 0 < difference.mean() < 0.05


def test_fp8_memory_mode_keeps_the_transformer_in_float8(library, cpu):
    from kd_server.loading import load_model
    from kd_server.memory_modes import MemoryMode

    loaded = load_model(_entry(library, "flux1-dev-tiny-fp8"), cpu, mode=MemoryMode.FP8)
    transformer = loaded.base.transformer
    assert transformer.x_embedder.weight.dtype == torch.float8_e4m3fn
    assert _picture(loaded.base, "dev").shape == (64, 64, 3)


@pytest.mark.parametrize("name", ["flux1-dev-tiny-Q8_0.gguf", "sd3.5_large-tiny-Q8_0.gguf"])
def test_gguf_transformer_stays_quantised_and_runs(models, library, cpu, name):
    from diffusers.quantizers.gguf.utils import GGUFLinear, GGUFParameter

    from kd_server.loading import load_model

    kind = EXTRA[name.removesuffix(".gguf")][0]
    loaded = load_model(_entry(library, name), cpu)
    transformer = loaded.base.transformer
    linears = [m for m in transformer.modules() if isinstance(m, GGUFLinear)]
    assert linears and all(isinstance(m.weight, GGUFParameter) for m in linears)
    # the text encoders and VAE are the shared fp32 files: exactly the reference's
    reference = models.pipes[kind]
    assert torch.equal(
        loaded.base.vae.decoder.conv_out.weight, reference.vae.decoder.conv_out.weight
    )
    difference = np.abs(_picture(loaded.base, kind) - _picture(reference, kind))
    assert 0 < difference.mean() < 0.05  # Q8_0: 8 bits per weight, one scale per 32


def test_a_missing_part_is_named(library, cpu):
    from kd_server.generation import EngineError
    from kd_server.loading import load_model

    entry = _entry(library, "sd3.5_medium-tiny")
    assert entry.parts is not None
    without_t5 = dataclasses.replace(entry, parts=dataclasses.replace(entry.parts, t5xxl=None))
    with pytest.raises(EngineError) as caught:
        load_model(without_t5, cpu)
    message = caught.value.message
    assert "T5 text encoder" in message and "'sd3.5_medium-tiny'" in message
    without_vae = dataclasses.replace(entry, parts=dataclasses.replace(entry.parts, vae=None))
    with pytest.raises(EngineError, match="needs its VAE"):
        load_model(without_vae, cpu)


def test_an_all_in_one_file_without_its_vae_is_refused(models, library, cpu, tmp_path):
    from safetensors.torch import load_file, save_file

    from kd_server.generation import EngineError
    from kd_server.loading import load_model

    entry = _entry(library, "flux1-dev-tiny-aio")
    tensors = load_file(str(entry.path))
    cut = tmp_path / "flux-no-vae.safetensors"
    save_file({k: v for k, v in tensors.items() if not k.startswith("vae.")}, str(cut))
    sidecar = entry.path.with_suffix(".config")
    cut.with_suffix(".config").symlink_to(sidecar, target_is_directory=True)
    with pytest.raises(EngineError, match="needs its VAE"):
        load_model(dataclasses.replace(entry, name="flux-no-vae", path=cut), cpu)


def test_a_transformer_of_another_architecture_is_refused(library, cpu, tmp_path):
    import shutil

    from kd_server.generation import EngineError
    from kd_server.loading import load_model

    entry = _entry(library, "flux1-schnell-tiny")
    sd3 = _entry(library, "sd3.5_large-tiny")
    assert entry.parts is not None and entry.path is not None and sd3.path is not None
    wrong = tmp_path / "wrong.safetensors"  # an SD 3.5 transformer where Flux's should be
    shutil.copy(sd3.path, wrong)
    wrong.with_suffix(".config").symlink_to(entry.path.with_suffix(".config"))
    mixed = dataclasses.replace(
        entry, path=wrong, parts=dataclasses.replace(entry.parts, transformer=wrong)
    )
    with pytest.raises(EngineError, match=r"wrong\.safetensors does not hold a Flux transformer"):
        load_model(mixed, cpu)


def test_fp8_and_scaled_fp8_files_are_upcast(models, tmp_path):
    """t5xxl_fp8_e4m3fn, ComfyUI's t5xxl_fp8_e4m3fn_scaled and scaled fp8 transformers:
    upcast, each scaled matrix multiplied back by its scale_weight (without, the weights
    would be ~1000x off)."""
    from kd_server import component_files as files
    from modelkit.flux_sd3_files import write_text_encoder, write_transformer

    pipe = models.pipes["dev"]
    config = models.files["flux1-dev-tiny"].with_suffix(".config")
    t5_file = write_text_encoder(pipe, "t5xxl", tmp_path / "t5_scaled.safetensors", scaled=True)
    t5 = files.load_t5(files.read_tensors(t5_file), config, "text_encoder_2", torch.float32, "t5")
    expected = pipe.text_encoder_2.state_dict()
    for key, tensor in t5.state_dict().items():
        assert torch.allclose(tensor, expected[key], rtol=1 / 8, atol=1e-3), key
    plain = write_text_encoder(pipe, "t5xxl", tmp_path / "t5_fp8.safetensors", fp8=True)
    t5 = files.load_t5(files.read_tensors(plain), config, "text_encoder_2", torch.float32, "t5")
    for key, tensor in t5.state_dict().items():
        assert torch.allclose(tensor, expected[key], rtol=1 / 8, atol=2e-3), key
    path = write_transformer(pipe, tmp_path / "flux_scaled.safetensors", scaled=True)
    transformer = files.load_transformer(path, "flux", config, torch.float32)
    expected = pipe.transformer.state_dict()
    for key, tensor in transformer.state_dict().items():
        assert torch.allclose(tensor, expected[key], rtol=1 / 8, atol=1e-3), key


def test_the_t5_tokenizer_comes_from_the_setting_when_the_model_has_none(models, cpu, tmp_path):
    """A sidecar without a T5 tokenizer (like the shipped configs): the configured
    folder is used; none anywhere is an EngineError saying how to get one."""
    from kd_server.generation import EngineError
    from kd_server.library import ModelLibrary
    from kd_server.loading import load_model
    from kd_server.t5_tokenizer import find_t5_tokenizer
    from modelkit.flux_sd3 import t5_tokenizer_dir

    pipe = models.pipes["schnell"]
    root = _bare_schnell(models, tmp_path)
    entry = ModelLibrary([root], include_embedded=False).get_checkpoint("bare")
    loaded = load_model(entry, cpu, t5_tokenizer=t5_tokenizer_dir())
    assert len(loaded.base.tokenizer_2) == len(pipe.tokenizer_2)
    if find_t5_tokenizer([], [root, root / "diffusion_models"]) is None:
        with pytest.raises(EngineError, match="t5-tokenizer"):
            load_model(entry, cpu)


@pytest.mark.parametrize("kind", ["dev", "medium"])
def test_a_transformer_file_in_diffusers_keys_loads_as_it_is(models, kind, tmp_path):
    """Some transformers are shared with diffusers' own key names: no conversion."""
    from safetensors.torch import save_file

    from kd_server import component_files as files

    pipe = models.pipes[kind]
    stem = TRANSFORMERS[kind][0]
    path = tmp_path / "diffusers-keys.safetensors"
    save_file({k: v.contiguous() for k, v in pipe.transformer.state_dict().items()}, str(path))
    config = models.files[stem].with_suffix(".config")
    architecture = "flux" if kind in ("dev", "schnell", "fill") else "sd3"
    loaded = files.load_transformer(path, architecture, config, torch.float32)
    for key, tensor in pipe.transformer.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key


def test_t5_keeps_its_feed_forward_outputs_in_float32_under_float16(models):
    """GPUs without bfloat16 run Flux / SD 3.5 in float16: T5's `wo` layers stay fp32,
    as transformers' own loader keeps them."""
    from kd_server import component_files as files

    config = models.files["flux1-dev-tiny"].with_suffix(".config")
    tensors = files.read_tensors(models.files["t5xxl"])
    t5 = files.load_t5(tensors, config, "text_encoder_2", torch.float16, "t5xxl")
    assert t5.encoder.block[0].layer[1].DenseReluDense.wo.weight.dtype == torch.float32
    assert t5.encoder.block[0].layer[0].SelfAttention.q.weight.dtype == torch.float16


def test_task_pipelines_share_the_transformer_as_loaded(library, cpu):
    """img2img / inpaint pipelines reuse the loaded modules without casting them: a GGUF
    transformer stays quantised, a float8-stored one stays float8 (from_pipe would cast)."""
    from diffusers.quantizers.gguf.utils import GGUFParameter
    from PIL import Image

    from kd_server.generation import Task
    from kd_server.loading import load_model
    from kd_server.memory_modes import MemoryMode

    gguf = load_model(_entry(library, "flux1-dev-tiny-Q8_0.gguf"), cpu)
    fp8 = load_model(_entry(library, "sd3.5_medium-tiny"), cpu, mode=MemoryMode.FP8)
    for loaded in (gguf, fp8):
        for task in (Task.IMG2IMG, Task.INPAINT):
            pipe = loaded.pipeline_for(task)
            assert pipe is not loaded.base and pipe.transformer is loaded.base.transformer
    assert isinstance(gguf.base.transformer.transformer_blocks[0].attn.to_q.weight, GGUFParameter)
    weight = fp8.base.transformer.transformer_blocks[0].attn.to_q.weight
    assert weight.dtype == torch.float8_e4m3fn
    picture = fp8.pipeline_for(Task.IMG2IMG)(
        prompt="a fox",
        image=Image.new("RGB", (64, 64), (30, 120, 60)),
        strength=0.6,
        height=64,
        width=64,
        num_inference_steps=2,
        max_sequence_length=32,
        output_type="np",
    ).images[0]
    assert picture.shape == (64, 64, 3) and weight.dtype == torch.float8_e4m3fn


def test_sd_task_pipelines_keep_a_float8_unet_and_their_settings(cpu):
    """The same for SD 1.5 (the embedded model): the UNet stays float8 under the fp8
    memory mode, and the variant keeps the loaded pipeline's settings."""
    from kd_server.generation import Task
    from kd_server.library import EMBEDDED_ENTRY
    from kd_server.loading import load_model
    from kd_server.memory_modes import MemoryMode

    loaded = load_model(EMBEDDED_ENTRY, cpu, mode=MemoryMode.FP8)
    for task in (Task.IMG2IMG, Task.INPAINT):
        pipe = loaded.pipeline_for(task)
        assert pipe.unet is loaded.base.unet and pipe.scheduler is loaded.base.scheduler
        assert pipe.config.requires_safety_checker is False and pipe.safety_checker is None
    assert loaded.base.unet.conv_in.weight.dtype == torch.float8_e4m3fn


def test_a_bare_transformer_beside_its_vae_in_one_file_loads(models, tmp_path):
    """Partial files (SAI's: the transformer without prefix, the VAE under
    first_stage_model.): the transformer is read without the other part's tensors."""
    from safetensors.torch import load_file, save_file

    from kd_server import component_files as files

    pipe = models.pipes["dev"]
    transformer = load_file(str(models.files["flux1-dev-tiny"]))
    vae = load_file(str(models.files["flux-vae"]))
    path = tmp_path / "partial.safetensors"
    save_file({**transformer, **{f"vae.{k}": v for k, v in vae.items()}}, str(path))
    config = models.files["flux1-dev-tiny"].with_suffix(".config")
    loaded = files.load_transformer(path, "flux", config, torch.float32)
    assert torch.equal(loaded.x_embedder.weight, pipe.transformer.x_embedder.weight)


def test_the_engine_passes_the_loaders_reason_on(models, tmp_path):
    """A split Flux whose T5 tokenizer is nowhere: the job fails with the loader's
    sentence (where to put one, how to download it), not a generic 'could not load'."""
    from kd_server.engine import Engine
    from kd_server.generation import EngineError, GenerationRequest, Sampling, Task
    from kd_server.library import ModelLibrary
    from kd_server.t5_tokenizer import find_t5_tokenizer

    root = _bare_schnell(models, tmp_path)
    if find_t5_tokenizer([], [root, root / "diffusion_models"]) is not None:
        pytest.skip("this machine has a T5 tokenizer where the server looks")
    engine = Engine(ModelLibrary([root], include_embedded=False), device="cpu")
    request = GenerationRequest(
        Task.TXT2IMG, sampling=Sampling(sampler="Euler", steps=1), model="bare", width=64, height=64
    )
    with pytest.raises(EngineError, match="t5-tokenizer") as caught:
        engine.generate(request)
    assert "could not be loaded" not in caught.value.message


def _bare_schnell(models, tmp_path) -> Path:
    """A models folder with the tiny schnell as split files whose sidecar config has
    no T5 tokenizer (like the shipped configs): its root."""
    from modelkit.flux_sd3_files import write_config_folder, write_transformer

    pipe = models.pipes["schnell"]
    root = tmp_path / "models"
    path = write_transformer(pipe, root / "diffusion_models" / "bare.safetensors", torch.float32)
    write_config_folder(pipe, path.with_suffix(".config"), t5_tokenizer=False)
    for part in ("clip_l", "t5xxl", "flux-vae"):
        target = root / ("vae" if part == "flux-vae" else "text_encoders") / models.files[part].name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(models.files[part])
    return root


def test_the_engine_loads_with_the_t5_tokenizer_setting(models, tmp_path):
    """The server's `t5_tokenizer` setting reaches the loader: a split Flux whose sidecar
    has no T5 tokenizer loads with it, and fails without it (when none is elsewhere)."""
    from kd_server.engine import Engine
    from kd_server.generation import EngineError
    from kd_server.library import ModelLibrary
    from kd_server.t5_tokenizer import find_t5_tokenizer
    from modelkit.flux_sd3 import t5_tokenizer_dir

    root = _bare_schnell(models, tmp_path)
    library = ModelLibrary([root], include_embedded=False)
    if find_t5_tokenizer([], [root, root / "diffusion_models"]) is None:
        with pytest.raises(EngineError, match="t5-tokenizer"):
            Engine(library, device="cpu").preload("bare")
    engine = Engine(library, device="cpu", t5_tokenizer=str(t5_tokenizer_dir()))
    assert engine.preload("bare") == "bare"
    assert len(engine._cache["bare"].base.tokenizer_2) == len(models.pipes["schnell"].tokenizer_2)
