"""Memory modes (kd_server.memory_modes, docs/memory.md): the auto choice over a table of
cards and models, the ladder, and every mode's code path on the tiny models.

On the CPU every mode runs for real except sequential offload: accelerate's
layer-by-layer hooks fail when the CPU is their execution device (the forward of a
tiny model raises inside accelerate), so there the test checks the refusal, and that
the hooks are installed (the weights leave for the meta device); the run itself needs a
GPU (bench/gpu.py --memory-modes).
"""

from __future__ import annotations

import pytest
import torch

from kd_server.memory_modes import (
    GIB,
    LADDER,
    MemoryMode,
    ModelSize,
    UnknownMemoryMode,
    applicable,
    apply,
    choose,
    estimate,
    lower,
    parse,
    retry_mode,
    transition,
)

M = MemoryMode


def _gib(value: float) -> int:
    return int(value * GIB)


# fp16 components, sizes of the real files (GiB)
SD15 = ModelSize(_gib(2.0), _gib(1.6), _gib(0.23), working_size=512)
SDXL = ModelSize(_gib(6.5), _gib(4.8), _gib(1.3), working_size=1024)
_FLUX_OTHERS = 8.9 + 0.23 + 0.31  # T5-XXL fp16, CLIP-L, VAE
FLUX_FP16 = ModelSize(_gib(22.2 + _FLUX_OTHERS), _gib(22.2), _gib(8.9))
FLUX_FP8 = ModelSize(_gib(11.1 + _FLUX_OTHERS), _gib(11.1), _gib(8.9), quantisation="fp8-e4m3fn")
FLUX_Q8 = ModelSize(_gib(11.8 + _FLUX_OTHERS), _gib(11.8), _gib(8.9), quantisation="gguf-q8_0")
FLUX_Q4 = ModelSize(_gib(6.3 + _FLUX_OTHERS), _gib(6.3), _gib(8.9), quantisation="gguf-q4_k")

# free memory of cards with a desktop on them
CARD_6, CARD_8, CARD_12, CARD_24 = _gib(5.5), _gib(7.5), _gib(11.5), _gib(23.0)


@pytest.mark.parametrize(
    ("free", "size", "expected"),
    [
        (CARD_6, SD15, M.FULL),
        (CARD_6, SDXL, M.FP8),
        (CARD_8, SDXL, M.VAE_TILING),
        (CARD_24, SDXL, M.FULL),
        (CARD_24, FLUX_FP16, M.FP8),
        (CARD_24, FLUX_FP8, M.FP8),
        (CARD_24, FLUX_Q8, M.VAE_TILING),
        (CARD_12, FLUX_FP16, M.SEQUENTIAL_OFFLOAD),
        (CARD_12, FLUX_FP8, M.SEQUENTIAL_OFFLOAD),
        (CARD_12, FLUX_Q8, M.SEQUENTIAL_OFFLOAD),
        (CARD_12, FLUX_Q4, M.MODEL_OFFLOAD),
        (_gib(13.0), FLUX_FP16, M.MODEL_OFFLOAD),
        (CARD_8, FLUX_FP16, M.SEQUENTIAL_OFFLOAD),
        (CARD_8, FLUX_Q4, M.SEQUENTIAL_OFFLOAD),
        (_gib(79.0), FLUX_FP16, M.FULL),
    ],
)
def test_the_auto_choice_over_cards_and_models(free, size, expected):
    choice = choose(free, size, "cuda")
    assert choice.mode is expected, choice.reason
    assert choice.reason.startswith(expected.value)
    if expected is not M.SEQUENTIAL_OFFLOAD:
        assert estimate(size, expected) <= free  # what it says fits, fits
    higher = LADDER[: expected.rank]
    for mode in higher:  # every higher mode that could run was too big
        if applicable(mode, size, "cuda") is None:
            assert estimate(size, mode) > free
            assert f"{mode.value} would need" in choice.reason


def test_the_table_in_docs_memory():
    """docs/memory.md, "The auto choice": the same grid, cell by cell."""
    grid = {
        CARD_6: "full fp8 sequential-offload sequential-offload sequential-offload "
        "sequential-offload",
        CARD_8: "full vae-tiling sequential-offload sequential-offload sequential-offload "
        "sequential-offload",
        CARD_12: "full full sequential-offload sequential-offload sequential-offload model-offload",
        CARD_24: "full full fp8 fp8 vae-tiling full",
    }
    models = (SD15, SDXL, FLUX_FP16, FLUX_FP8, FLUX_Q8, FLUX_Q4)
    for free, row in grid.items():
        assert [choose(free, size, "cuda").mode.value for size in models] == row.split()


def test_the_choice_off_cuda_and_without_facts():
    assert choose(None, SDXL, "cpu").mode is M.FULL
    assert "CPU" in choose(None, SDXL, "cpu").reason
    assert choose(None, SDXL, "mps").mode is M.FULL
    assert choose(None, SDXL, "cuda").mode is M.FULL  # free memory unknown
    assert "not known" in choose(CARD_6, ModelSize(0, 0, 0), "cuda").reason


def test_the_ladder_names_and_what_each_mode_refuses():
    assert [m.value for m in LADDER] == [
        "full",
        "vae-tiling",
        "fp8",
        "model-offload",
        "sequential-offload",
    ]
    assert parse(None) is None and parse("auto") is None and parse(" Auto ") is None
    assert parse("model-offload") is M.MODEL_OFFLOAD
    with pytest.raises(UnknownMemoryMode, match="Unknown memory mode 'turbo'"):
        parse("turbo")
    assert [lower(m) for m in LADDER] == [*LADDER[1:], None]
    assert applicable(M.FP8, FLUX_Q8, "cuda") is not None  # GGUF: quantised by its file
    assert applicable(M.FP8, SDXL, "mps") is not None  # no float8 on MPS
    assert applicable(M.SEQUENTIAL_OFFLOAD, SD15, "cpu") is not None
    assert applicable(M.MODEL_OFFLOAD, SD15, "cpu") is None  # runs (a no-op) on the CPU


def test_the_retry_goes_below_to_what_fits():
    # 24 GiB card, Flux fp16 in fp8 mode ran out: model offload fits what is free
    assert retry_mode(M.FP8, FLUX_FP16, "cuda", _gib(20)) is M.MODEL_OFFLOAD
    assert retry_mode(M.FULL, SD15, "cuda", _gib(3)) is M.VAE_TILING
    assert retry_mode(M.FULL, FLUX_Q8, "cuda", _gib(13)) is M.MODEL_OFFLOAD  # skips fp8
    assert retry_mode(M.FULL, FLUX_FP16, "cuda", _gib(1)) is M.SEQUENTIAL_OFFLOAD
    assert retry_mode(M.FULL, None, "cpu", None) is M.VAE_TILING  # no facts: one step down
    assert retry_mode(M.MODEL_OFFLOAD, SD15, "cpu", None) is None  # nothing runs below
    assert retry_mode(M.SEQUENTIAL_OFFLOAD, SD15, "cuda", None) is None


def test_moving_between_modes_reloads_only_what_cannot_be_undone():
    assert transition(M.FULL, M.FULL) == "none"
    assert transition(M.FULL, M.VAE_TILING) == "in-place"
    assert transition(M.VAE_TILING, M.FULL) == "in-place"
    assert transition(M.FULL, M.FP8) == "in-place"
    assert transition(M.FP8, M.MODEL_OFFLOAD) == "in-place"
    assert transition(M.FULL, M.SEQUENTIAL_OFFLOAD) == "in-place"
    assert transition(M.FP8, M.SEQUENTIAL_OFFLOAD) == "reload"  # float8 weights
    assert transition(M.MODEL_OFFLOAD, M.FULL) == "reload"
    assert transition(M.FP8, M.VAE_TILING) == "reload"


# -- each mode on the tiny models ---------------------------------------------------


def _tiny_sd():
    from kd_server.tiny_model import build_embedded_pipeline

    pipe = build_embedded_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _tiny_flux():
    from modelkit.flux_sd3 import build_tiny_flux

    pipe = build_tiny_flux("dev")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _tiny_sd35():
    from modelkit.flux_sd3 import build_tiny_sd35

    pipe = build_tiny_sd35("medium")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _run(pipe, size):
    generator = torch.Generator("cpu").manual_seed(3)
    kwargs = {"guidance_scale": 3.5} if hasattr(pipe, "transformer") else {}
    return pipe(
        "a red fox",
        num_inference_steps=2,
        height=size,
        width=size,
        generator=generator,
        output_type="np",
        **kwargs,
    ).images


@pytest.mark.parametrize(
    "build", [_tiny_sd, _tiny_flux, _tiny_sd35], ids=["sd15", "flux-dev", "sd35-medium"]
)
def test_every_mode_but_sequential_runs_on_the_cpu(build):
    """Down the ladder on one loaded pipeline, in place (as the engine moves a model
    down after running out of memory), each mode's picture close to full's."""
    cpu = torch.device("cpu")
    size = 96 if build is _tiny_sd else 64
    pipe = build()
    if build is _tiny_sd:  # tiles of 64 pixels (8 latents), so 96x96 decodes in tiles
        pipe.vae.tile_sample_min_size, pipe.vae.tile_latent_min_size = 64, 8
    reference = _run(pipe, size)
    for mode in LADDER[1:-1]:
        apply(pipe, mode, cpu)
        assert pipe.vae.use_tiling and pipe.vae.use_slicing
        denoiser = getattr(pipe, "transformer", None) or pipe.unet
        weights = [p.dtype for p in denoiser.parameters()]
        if mode.casts_fp8:
            assert weights.count(torch.float8_e4m3fn) > len(weights) // 2
        else:
            assert torch.float8_e4m3fn not in weights
        if mode is M.MODEL_OFFLOAD:
            assert hasattr(denoiser, "_hf_hook") and len(pipe._all_hooks) >= 3
        images = _run(pipe, size)
        assert images.shape == reference.shape
        assert abs(images - reference).mean() < 0.1, mode  # the same picture, near enough
    apply(pipe, M.FULL, cpu)  # back up: tiling off (the engine reloads for the rest)
    assert not pipe.vae.use_tiling


def test_sequential_offload_hooks_go_on_but_only_a_gpu_runs_them():
    pipe = _tiny_sd()
    apply(pipe, M.SEQUENTIAL_OFFLOAD, torch.device("cpu"))
    assert pipe.unet.conv_in.weight.device.type == "meta"  # weights wait in CPU memory
    assert hasattr(pipe.unet, "_hf_hook")
    with pytest.raises(TypeError):  # accelerate's CPU-as-accelerator limit (see top)
        _run(pipe, 64)


# -- the engine: modes per job, the retry after running out of memory ---------------


class _SmallCard:
    """A stand-in for a GPU too small for the higher modes: while installed, every
    forward of a UNet that is not in a low enough mode raises torch's own
    OutOfMemoryError, as CUDA's allocator would (a torch forward pre-hook on every
    module; the engine's code is not touched)."""

    def __init__(self, fits) -> None:
        self.fits = fits  # UNet -> bool: does it fit in this mode
        self.refused = 0

    def __enter__(self):
        from diffusers import UNet2DConditionModel

        def hook(module, args):
            if isinstance(module, UNet2DConditionModel) and not self.fits(module):
                self.refused += 1
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        self.handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def _in_fp8(unet) -> bool:
    return unet.conv_in.weight.dtype == torch.float8_e4m3fn


def _offloaded(unet) -> bool:
    return hasattr(unet, "_hf_hook")


@pytest.fixture
def engine():
    from kd_server.engine import Engine
    from kd_server.library import ModelLibrary

    return Engine(ModelLibrary([]), device="cpu", cache_size=1)


def _job(**fields):
    from support.jobs import make_request

    base = {"prompt": "a red fox", "steps": 2, "width": 64, "height": 64, "seed": 5}
    return make_request(**{**base, **fields})


def _modes(engine):
    return {name: (mode, reason) for name, mode, reason in engine.loaded_memory_modes()}


def test_an_out_of_memory_job_runs_again_one_mode_lower_and_says_so(engine):
    warnings = []
    with _SmallCard(fits=_in_fp8) as card:
        images = engine.generate(
            _job(memory_mode="vae-tiling"), on_warning=lambda *w: warnings.append(w)
        )
    assert card.refused == 1 and len(images) == 1
    assert warnings == [
        (
            "memory_mode_lowered",
            "Ran out of GPU memory in vae-tiling mode; retrying in fp8 mode (slower, less memory).",
        )
    ]
    [(_name, (mode, reason))] = _modes(engine).items()
    assert mode == "fp8" and "ran out of memory in vae-tiling mode" in reason
    # the lowered mode stays for the next jobs that do not ask for one
    with _SmallCard(fits=_in_fp8) as card:
        engine.generate(_job(), on_warning=lambda *w: warnings.append(w))
    assert card.refused == 0 and len(warnings) == 1


def test_the_modes_are_read_while_a_job_holds_the_engine(engine):
    """/v1/health reads them: it must not wait for the running job (which holds the
    engine for its whole length)."""
    import threading

    engine.generate(_job())  # loaded
    running, release = threading.Event(), threading.Event()

    def hold() -> bool:
        running.set()
        release.wait(30)
        return False

    job = threading.Thread(target=engine.generate, args=(_job(),), kwargs={"should_cancel": hold})
    job.start()
    try:
        assert running.wait(30)
        answered: list = []
        reader = threading.Thread(target=lambda: answered.append(_modes(engine)))
        reader.start()
        reader.join(5)
        assert answered and [mode for mode, _ in answered[0].values()] == ["full"]
    finally:
        release.set()
        job.join(30)


def test_a_second_out_of_memory_fails_the_job(engine):
    from kd_server.generation import EngineError, EngineErrorCode

    warnings = []
    with _SmallCard(fits=_offloaded) as card, pytest.raises(EngineError) as caught:
        engine.generate(_job(memory_mode="full"), on_warning=lambda *w: warnings.append(w))
    assert card.refused == 2
    assert caught.value.code is EngineErrorCode.OUT_OF_MEMORY
    assert "(in full mode, and again in vae-tiling mode)" in caught.value.message
    assert [code for code, _ in warnings] == ["memory_mode_lowered"]
    assert engine.loaded_models() == []  # dropped: the next job starts clean
    with _SmallCard(fits=_offloaded) as card:  # a job asking low enough runs
        engine.generate(_job(memory_mode="model-offload"))
    assert card.refused == 0
    assert _modes(engine)[engine.loaded_models()[0]][0] == "model-offload"


def test_jobs_move_a_loaded_model_between_modes(engine):
    name = engine.preload()
    model = engine._cache[name]
    assert _modes(engine)[name] == ("full", "runs on the CPU, in system memory")
    engine.generate(_job(memory_mode="fp8"))  # down: the loaded weights are cast
    assert engine._cache[name] is model and _in_fp8(model.base.unet)
    assert _modes(engine)[name] == ("fp8", "asked for by the job")
    engine.generate(_job(memory_mode="full"))  # up: float8 cannot be undone, reloaded
    assert engine._cache[name] is not model
    assert not _in_fp8(engine._cache[name].base.unet)


def test_modes_that_cannot_run_are_refused_before_the_job():
    from kd_server.engine import Engine
    from kd_server.generation import EngineError
    from kd_server.library import ModelLibrary

    cpu = Engine(ModelLibrary([]), device="cpu")
    for mode, words in (("sequential-offload", "needs a GPU"), ("turbo", "Unknown memory")):
        with pytest.raises(EngineError, match=words):
            cpu.generate(_job(memory_mode=mode))
    with pytest.raises(UnknownMemoryMode):
        Engine(ModelLibrary([]), device="cpu", memory_mode="fast")
    with pytest.raises(UnknownMemoryMode, match="sequential-offload cannot run on cpu"):
        Engine(ModelLibrary([]), device="cpu", memory_mode="sequential-offload")
    assert Engine(ModelLibrary([]), device="cpu", memory_mode="fp8").memory_mode is M.FP8


def test_the_retry_and_the_modes_over_http(server_factory, engine):
    """/v1/health names each loaded model's mode and why; a retried job's client hears
    a `warning` event before its result."""
    from api.live import receive_until_done

    live = server_factory(engine=engine)
    health = live.get("/v1/health").json()
    assert health["memory_mode"] == "auto" and health["memory"] == []
    once = iter([False])  # a card that runs out of memory once, in full mode
    with _SmallCard(fits=lambda unet: next(once, True)), live.events("fox") as ws:
        job_id = live.submit(prompt="a fox", steps=2, width=64, height=64, client_id="fox")
        events = receive_until_done(ws, job_id)
    kinds = [event["type"] for event in events]
    assert kinds[-1] == "finished", events
    [warning] = [event for event in events if event["type"] == "warning"]
    assert warning["code"] == "memory_mode_lowered"
    assert warning["message"].startswith("Ran out of GPU memory in full mode; retrying in")
    assert kinds.index("warning") < kinds.index("result")
    body = {"task": "txt2img", "prompt": "a fox", "memory_mode": "turbo"}
    refused = live.post("/v1/jobs", json=body)
    assert refused.status_code == 422, refused.text
    assert "memory_mode: Unknown memory mode 'turbo'" in refused.text
    [memory] = live.get("/v1/health").json()["memory"]
    assert memory["model"] == "tiny-sd15-embedded" and memory["mode"] == "vae-tiling"
    assert memory["reason"] == "ran out of memory in full mode, lowered"


def test_the_setting_flag_and_environment(tmp_path, monkeypatch):
    from kd_server.cli import build_parser
    from kd_server.config import ConfigError, load_settings

    missing = tmp_path / "none.toml"
    assert load_settings(config_path=missing).memory_mode == "auto"
    monkeypatch.setenv("KD_MEMORY_MODE", "FP8")
    assert load_settings(config_path=missing).memory_mode == "fp8"
    flags = {"memory_mode": "model-offload"}
    assert load_settings(flags, config_path=missing).memory_mode == "model-offload"
    with pytest.raises(ConfigError, match="memory_mode in the command line: Unknown"):
        load_settings({"memory_mode": "tiny"}, config_path=missing)
    args = build_parser().parse_args(["serve", "--memory-mode", "sequential-offload"])
    assert args.memory_mode == "sequential-offload"


def test_a_server_setting_the_device_cannot_run_stops_it_with_the_reason():
    from kd_server.api.app import create_app
    from kd_server.config import ConfigError, Settings

    settings = Settings(device="cpu", memory_mode="sequential-offload", state_dir=None)
    with pytest.raises(ConfigError, match="sequential-offload cannot run on cpu"):
        create_app(settings)


# -- Flux through the library: split files, fp8 and GGUF transformers ---------------


@pytest.fixture(scope="module")
def flux_engine(tmp_path_factory):
    from kd_server.engine import Engine
    from kd_server.library import ModelLibrary
    from support.flux_sd3 import session_models

    library = ModelLibrary([session_models(tmp_path_factory).root], include_embedded=False)
    return Engine(library, device="cpu", cache_size=1)


def test_split_entries_are_sized_part_by_part(flux_engine):
    from kd_server.memory_modes import entry_size

    library = flux_engine.library
    plain = entry_size(library.get_checkpoint("flux1-dev-tiny"))
    parts = library.get_checkpoint("flux1-dev-tiny").parts
    assert plain.denoiser == parts.transformer.stat().st_size
    others = [p.stat().st_size for p in (parts.vae, parts.clip_l, parts.t5xxl)]
    assert plain.total == plain.denoiser + sum(others)
    assert plain.largest_other == max(others)
    assert plain.working_size == 1024 and plain.quantisation is None
    assert entry_size(library.get_checkpoint("flux1-dev-tiny-fp8")).fp8_file
    assert entry_size(library.get_checkpoint("flux1-dev-tiny-Q8_0.gguf")).gguf


def _flux_fits_in_fp8(transformer) -> bool:
    return transformer.transformer_blocks[0].attn.to_q.weight.dtype == torch.float8_e4m3fn


class _SmallCardForFlux(_SmallCard):
    def __enter__(self):
        from diffusers import FluxTransformer2DModel

        def hook(module, args, kwargs=None):
            if isinstance(module, FluxTransformer2DModel) and not self.fits(module):
                self.refused += 1
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 24.00 GiB")

        self.handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
        return self


def test_flux_retries_in_fp8_then_moves_down_to_model_offload(flux_engine):
    warnings = []
    job = _job(model="flux1-dev-tiny", memory_mode="vae-tiling", sampler="Euler", cfg_scale=1)
    with _SmallCardForFlux(fits=_flux_fits_in_fp8) as card:
        images = flux_engine.generate(job, on_warning=lambda *w: warnings.append(w))
    assert card.refused == 1 and images[0].image.size == (64, 64)
    assert [message for _, message in warnings] == [
        "Ran out of GPU memory in vae-tiling mode; retrying in fp8 mode (slower, less memory)."
    ]
    model = flux_engine._cache["flux1-dev-tiny"]
    assert _flux_fits_in_fp8(model.base.transformer)
    flux_engine.generate(
        _job(model="flux1-dev-tiny", memory_mode="model-offload", sampler="Euler", cfg_scale=1)
    )
    assert flux_engine._cache["flux1-dev-tiny"] is model  # down in place
    assert hasattr(model.base.transformer, "_hf_hook")
    assert _modes(flux_engine)["flux1-dev-tiny"] == ("model-offload", "asked for by the job")


@pytest.mark.parametrize("name", ["flux1-dev-tiny-fp8", "flux1-dev-tiny-Q8_0.gguf"])
def test_quantised_files_run_in_every_mode_the_cpu_runs(flux_engine, name):
    for mode in ("fp8", "model-offload", "full"):
        [image] = flux_engine.generate(
            _job(model=name, memory_mode=mode, sampler="Euler", cfg_scale=1)
        )
        assert image.image.size == (64, 64)
        assert _modes(flux_engine)[name][0] == mode


def test_loras_in_float8_and_offload_modes(tmp_path):
    """peft gives a LoRA the float8 dtype of the layer it wraps, and diffusers puts
    offload hooks back for the default accelerator: the engine settles both."""
    import numpy as np

    from kd_server.engine import Engine
    from kd_server.generation import LoraSpec
    from kd_server.library import ModelLibrary
    from modelkit.loras import write_test_lora

    write_test_lora(tmp_path / "loras", "bright", seed=1)
    engine = Engine(ModelLibrary([tmp_path]), device="cpu", cache_size=1)

    def picture(mode, loras):
        [image] = engine.generate(_job(memory_mode=mode, loras=loras))
        return np.asarray(image.image).astype(float)

    mode = "model-offload"  # float8 storage and offload hooks both
    plain = picture(mode, [])
    bright = picture(mode, [LoraSpec("bright", 1.0)])
    assert np.abs(bright - plain).mean() > 5  # the LoRA acts
    assert np.abs(picture(mode, []) - plain).max() == 0  # and leaves no trace


def test_every_mode_runs_on_a_gpu(kd_device):
    """With `--kd-device cuda` (bench/gpu_run.sh): every mode, sequential offload
    included, on the tiny SD1.5 in fp16, the offload modes holding less on the GPU."""
    if not kd_device.startswith("cuda"):
        pytest.skip("needs --kd-device cuda (bench/gpu_run.sh)")
    device = torch.device(kd_device)
    peaks = {}
    for mode in LADDER:
        pipe = _tiny_sd().to(device=device, dtype=torch.float16)
        apply(pipe, mode, device)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)  # from what the mode keeps resident
        images = _run(pipe, 128)
        assert images.shape == (1, 128, 128, 3) and np_finite(images), mode
        peaks[mode] = torch.cuda.max_memory_allocated(device)
        del pipe
        torch.cuda.empty_cache()
    assert peaks[M.SEQUENTIAL_OFFLOAD] <= peaks[M.FULL]


def np_finite(images) -> bool:
    import numpy as np

    return bool(np.isfinite(images).all())
