"""Benchmark 7: real model architectures on a GPU, our engine against plain diffusers.

SD1.5 at 512x512 (20 steps, CFG 7) and SDXL at 1024x1024 (30 steps, CFG 7), fp16,
with random weights built from the shipped configs (`resources/model-configs/`): the
same shapes cost the same time as the real models, and no download is needed.

For each model, in one run on one card:

- plain diffusers: the pipeline class with its default scheduler, `.to("cuda")`,
  `output_type="pil"`: what a user of diffusers gets without tuning;
- our engine: the same weights saved as a diffusers folder in a temporary models
  folder, scanned by `ModelLibrary` and run by `Engine.generate` with its defaults
  (sampler "DPM++ 2M Karras", no previews) -- the path every job of the server takes;
- our engine with a preview after every step (what the preview target is about);
- our server: the same job through HTTP + WebSocket on loopback, submit -> result PNG
  downloaded (what the server-overhead target is about, on a GPU);
- with `--compile`, `--channels-last`, `--fuse-qkv`: our engine with those speed-ups
  (`kd_server.speed`).

Reported: it/s of the denoising loop (CUDA events at each step's end, no extra
synchronisation), seconds per image (submit to PIL image), peak VRAM. Published H100
figures: SD1.5 ~105 it/s and SDXL ~21.6 it/s with the fastest stacks, ~55 and ~15 it/s
with plain diffusers.

GPU: `.venv/bin/python -m bench.gpu` (under 8 minutes on an H100 without --compile).
CPU check that the script works: `.venv/bin/python -m bench.gpu --smoke`.

`--memory-modes` runs the memory-mode benchmark instead (kd_server.memory_modes,
docs/memory.md): SD1.5 512x512, SDXL 1024x1024 and Flux.1 dev 1024x1024 (bf16, random
weights of the real size from `resources/model-configs/flux-dev`; its T5 tokenizer is
modelkit's tiny one, prompts are padded to 512 tokens either way), 20 steps, each
memory mode in turn on one pipeline (down the ladder in place, as the engine moves a
model down; sequential offload on a fresh one): peak VRAM (torch.cuda.max_memory_allocated
over the image), seconds per image, and the slowdown against full in the same run,
against the issue's targets (SD1.5 and SDXL within 6 GiB; Flux dev within 12 GiB with
fp8, within 8 GiB with offload). `--memory-modes --smoke`: the same code on the CPU
with tiny sizes (SD1.5's real UNet at 64x64, the tiny Flux of modelkit; sequential
offload skipped: it needs a GPU).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import median, quiet_and_threads

nan = float("nan")

PROMPT = "a lighthouse on a cliff at dusk, oil painting"
NEGATIVE = "blurry"


@dataclass(frozen=True)
class ModelCase:
    family: str  # "sd15" or "sdxl" (resources/model-configs/<family>)
    size: int
    steps: int
    cfg: float = 7.0


FULL_CASES = {"sd15": ModelCase("sd15", 512, 20), "sdxl": ModelCase("sdxl", 1024, 30)}
SMOKE_CASES = {"sd15": ModelCase("sd15", 64, 2), "sdxl": ModelCase("sdxl", 64, 2)}


@dataclass
class Row:
    model: str
    setup: str
    it_per_s: float
    s_per_image: float
    peak_vram_gib: float
    note: str = ""

    def line(self) -> str:
        vram = f"{self.peak_vram_gib:6.2f} GiB" if self.peak_vram_gib >= 0 else "     n/a"
        return (
            f"  {self.model:<5} {self.setup:<44} {self.it_per_s:8.2f} it/s "
            f"{self.s_per_image:8.3f} s/image  peak {vram}  {self.note}"
        )


# ------------------------------------------------------------------ clocks and memory


class StepClock:
    """Times of each step's end, without making the CPU wait for the GPU.

    On CUDA each step end records an event into the stream; the times are read after
    the image is done. On a CPU the wall clock is exact, since work is synchronous.
    """

    def __init__(self, device: Any) -> None:
        import torch

        self.cuda = device.type == "cuda"
        self.torch = torch
        self.marks: list[Any] = []

    def mark(self) -> None:
        if self.cuda:
            event = self.torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def it_per_s(self) -> float:
        """Steps per second between the first and the last step's end."""
        if len(self.marks) < 2:
            return float("nan")
        if self.cuda:
            self.torch.cuda.synchronize()
            seconds = self.marks[0].elapsed_time(self.marks[-1]) / 1000.0
        else:
            seconds = self.marks[-1] - self.marks[0]
        return (len(self.marks) - 1) / seconds


def synchronize(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def reset_peak(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: Any) -> float:
    import torch

    if device.type != "cuda":
        return -1.0
    return torch.cuda.max_memory_allocated() / 2**30


def free(device: Any) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------ random-weight models


def build_random_pipeline(family: str, device: Any, dtype: Any) -> Any:
    """The real architecture from the shipped configs, random weights, on `device`.

    Weights are created directly on the device (fast on a GPU) and then cast; the
    tokenizers are the shipped ones, so prompts cost what they cost for real models.
    """
    import diffusers
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from kd_server.assembly import Components, assemble_pipeline
    from kd_server.families import Family
    from kd_server.tokenizer import load_tokenizer

    config_dir = Family(family).info.config_dir
    scheduler_config = json.loads((config_dir / "scheduler" / "scheduler_config.json").read_text())
    scheduler = getattr(diffusers, scheduler_config["_class_name"]).from_config(scheduler_config)
    with torch.device(device), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DConditionModel.from_config(
            UNet2DConditionModel.load_config(config_dir / "unet")
        )
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(config_dir / "vae"))
        text_encoder = CLIPTextModel(
            CLIPTextConfig.from_pretrained(config_dir / "text_encoder", local_files_only=True)
        )
        text_encoder_2 = None
        if family == "sdxl":
            text_encoder_2 = CLIPTextModelWithProjection(
                CLIPTextConfig.from_pretrained(config_dir / "text_encoder_2", local_files_only=True)
            )
    modules: list[Any] = [m for m in (unet, vae, text_encoder, text_encoder_2) if m is not None]
    for module in modules:
        module.to(dtype=dtype).eval().requires_grad_(False)
    parts = Components(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=load_tokenizer(config_dir / "tokenizer"),
        scheduler=scheduler,
    )
    if text_encoder_2 is not None:
        parts.text_encoder_2 = text_encoder_2
        parts.tokenizer_2 = load_tokenizer(config_dir / "tokenizer_2")
    return assemble_pipeline(Family(family), parts)


# ------------------------------------------------------------------ the two ways to run


def time_plain(pipe: Any, case: ModelCase, device: Any, repeats: int) -> tuple[float, float]:
    """Median it/s and seconds per image of plain `pipe(...)` calls (after one warm-up)."""
    import torch

    def once() -> tuple[float, float]:
        clock = StepClock(device)

        def on_step(_pipe: Any, _index: int, _t: Any, tensors: dict) -> dict:
            clock.mark()
            return tensors

        synchronize(device)
        start = time.perf_counter()
        pipe(
            prompt=PROMPT,
            negative_prompt=NEGATIVE,
            num_inference_steps=case.steps,
            guidance_scale=case.cfg,
            width=case.size,
            height=case.size,
            generator=torch.Generator("cpu").manual_seed(1),
            callback_on_step_end=on_step,
            output_type="pil",
        )
        return clock.it_per_s(), time.perf_counter() - start

    return _repeat(once, repeats)


def time_engine(
    engine: Any, model: str, case: ModelCase, device: Any, repeats: int, preview_every: int = 0
) -> tuple[float, float]:
    """The same through `Engine.generate` (previews made but not sent anywhere)."""
    from kd_server.generation import Conditioning, GenerationRequest, Sampling, Task

    request = GenerationRequest(
        task=Task.TXT2IMG,
        conditioning=Conditioning(prompt=PROMPT, negative_prompt=NEGATIVE),
        sampling=Sampling(steps=case.steps, cfg_scale=case.cfg, seed=1),
        model=model,
        width=case.size,
        height=case.size,
        preview_every=preview_every,
    )

    def once() -> tuple[float, float]:
        clock = StepClock(device)
        synchronize(device)
        start = time.perf_counter()
        engine.generate(request, on_progress=lambda _progress: clock.mark())
        return clock.it_per_s(), time.perf_counter() - start

    return _repeat(once, repeats)


def time_server(engine: Any, model: str, case: ModelCase, repeats: int) -> float:
    """Median seconds from `POST /v1/jobs` to the result PNG downloaded (no previews)."""
    from bench.common import live_server, run_http_job

    body = {
        "task": "txt2img",
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE,
        "model": model,
        "steps": case.steps,
        "cfg_scale": case.cfg,
        "width": case.size,
        "height": case.size,
        "seed": 1,
        "preview_every": 0,
    }
    with live_server(engine) as live:
        run_http_job(live, body)
        return median([run_http_job(live, body).total for _ in range(repeats)])


def _repeat(once: Callable[[], tuple[float, float]], repeats: int) -> tuple[float, float]:
    once()  # warm-up: kernels chosen, caches filled (and compilation, if any)
    runs = [once() for _ in range(repeats)]
    return median([r[0] for r in runs]), median([r[1] for r in runs])


# ------------------------------------------------------------------ one model


def bench_model(case: ModelCase, args: argparse.Namespace, device: Any, dtype: Any) -> list[Row]:
    from kd_server.engine import Engine
    from kd_server.library import ModelLibrary
    from kd_server.speed import SpeedOptions

    rows: list[Row] = []
    label = f"{case.family} {case.size}x{case.size} {case.steps} steps"
    print(f"\n== {label}: building random weights", flush=True)
    models = Path(tempfile.mkdtemp(prefix="kd-gpu-bench-"))
    try:
        pipe = build_random_pipeline(case.family, device, dtype)
        pipe.to(device)
        reset_peak(device)
        it_s, s_img = time_plain(pipe, case, device, args.repeats)
        rows.append(_row(case, "plain diffusers (defaults)", it_s, s_img, device))
        print("   saving it as a diffusers folder for the engine", flush=True)
        name = f"{case.family}-random"
        pipe.save_pretrained(models / "checkpoints" / name, safe_serialization=True)
        del pipe
        free(device)

        library = ModelLibrary([models])
        setups: list[tuple[str, SpeedOptions | None]] = [("our engine (defaults)", None)]
        speed = SpeedOptions(
            channels_last=args.channels_last,
            compile=args.compile,
            compile_mode=args.compile_mode,
            fuse_qkv=args.fuse_qkv,
        )
        if speed.any:
            setups.append((f"our engine + {speed.describe()}", speed))
        for setup, options in setups:
            engine = Engine(library, device=str(device), cache_size=1, speed=options)
            engine.preload(name)
            reset_peak(device)
            it_s, s_img = time_engine(engine, name, case, device, args.repeats)
            rows.append(_row(case, setup, it_s, s_img, device))
            if options is None:
                reset_peak(device)
                it_s, s_img = time_engine(engine, name, case, device, args.repeats, 1)
                rows.append(_row(case, "our engine, preview every step", it_s, s_img, device))
                reset_peak(device)
                s_img = time_server(engine, name, case, args.repeats)
                rows.append(_row(case, "our server: HTTP+WS, submit -> PNG", nan, s_img, device))
            engine.unload()
            del engine
            free(device)
    finally:
        shutil.rmtree(models, ignore_errors=True)
    _ratios(rows)
    return rows


def _ratios(rows: list[Row]) -> None:
    """Our engine against plain diffusers, and what previews cost, on this card."""
    plain, engine, previews = rows[0], rows[1], rows[2]
    print(
        f"   engine / plain diffusers: {engine.it_per_s / plain.it_per_s:.3f}x it/s, "
        f"{engine.s_per_image / plain.s_per_image:.3f}x s/image"
    )
    print(
        f"   previews every step / none (engine): "
        f"{previews.s_per_image / engine.s_per_image:.3f}x s/image (target <= 1.03)"
    )
    server = rows[3]
    print(
        f"   server (HTTP+WS) / engine call: {server.s_per_image / engine.s_per_image:.3f}x "
        "s/image (target <= 1.05)"
    )
    for row in rows[4:]:
        print(f"   {row.setup} / engine defaults: {row.it_per_s / engine.it_per_s:.3f}x it/s")


def _row(case: ModelCase, setup: str, it_s: float, s_img: float, device: Any) -> Row:
    row = Row(case.family, setup, it_s, s_img, peak_gib(device))
    print(row.line(), flush=True)
    return row


# ------------------------------------------------------------------ memory modes


MODE_CASES = {
    "sd15": ModelCase("sd15", 512, 20),
    "sdxl": ModelCase("sdxl", 1024, 20),
    "flux-dev": ModelCase("flux-dev", 1024, 20, cfg=3.5),
}
MODE_SMOKE_CASES = {
    "sd15": ModelCase("sd15", 64, 2),
    "sdxl": ModelCase("sdxl", 64, 2),
    "flux-dev": ModelCase("flux-dev", 64, 2, cfg=3.5),
}
#: the issue's targets, GiB of peak VRAM: (model, modes it applies to) -> limit
MODE_TARGETS: dict[tuple[str, tuple[str, ...]], float] = {
    ("sd15", ("full", "vae-tiling", "fp8", "model-offload", "sequential-offload")): 6.0,
    ("sdxl", ("fp8", "model-offload", "sequential-offload")): 6.0,
    ("flux-dev", ("fp8", "model-offload")): 12.0,
    ("flux-dev", ("model-offload", "sequential-offload")): 8.0,
}


def build_random_flux(device: Any, dtype: Any, smoke: bool) -> Any:
    """Flux.1 dev of the real size (random weights, built on `device`), or with
    `smoke` modelkit's tiny Flux of the same classes."""
    import torch

    if smoke:
        from modelkit.flux_sd3 import build_tiny_flux

        return build_tiny_flux("dev").to(device=device, dtype=dtype)
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from kd_server.families import Family
    from kd_server.tokenizer import load_tokenizer
    from modelkit.flux_sd3 import make_t5_tokenizer

    config_dir = Family("flux-dev").info.config_dir
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(
        json.loads((config_dir / "scheduler" / "scheduler_config.json").read_text())
    )
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # 12B parameters: never materialised in fp32
    try:
        with torch.device(device), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            transformer = FluxTransformer2DModel.from_config(
                FluxTransformer2DModel.load_config(config_dir / "transformer")
            )
            vae = AutoencoderKL.from_config(AutoencoderKL.load_config(config_dir / "vae"))
            clip = CLIPTextModel(
                CLIPTextConfig.from_pretrained(config_dir / "text_encoder", local_files_only=True)
            )
            t5 = T5EncoderModel(
                T5Config.from_pretrained(config_dir / "text_encoder_2", local_files_only=True)
            )
    finally:
        torch.set_default_dtype(default_dtype)
    modules: list[Any] = [transformer, vae, clip, t5]
    for module in modules:
        module.to(dtype=dtype).eval().requires_grad_(False)
    return FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=clip,
        tokenizer=load_tokenizer(Family("sd15").info.config_dir / "tokenizer"),  # CLIP-L's
        text_encoder_2=t5,
        tokenizer_2=make_t5_tokenizer(),
        transformer=transformer,
    )


def time_mode(pipe: Any, case: ModelCase, device: Any) -> tuple[float, float, float]:
    """(it/s, seconds per image, peak VRAM GiB) of one image after a 2-step warm-up."""
    import torch

    flux = hasattr(pipe, "transformer")

    def once(steps: int) -> tuple[float, float]:
        clock = StepClock(device)

        def on_step(_pipe: Any, _index: int, _t: Any, tensors: dict) -> dict:
            clock.mark()
            return tensors

        extra: dict[str, Any] = {} if flux else {"negative_prompt": NEGATIVE}
        synchronize(device)
        start = time.perf_counter()
        pipe(
            prompt=PROMPT,
            num_inference_steps=steps,
            guidance_scale=case.cfg,
            width=case.size,
            height=case.size,
            generator=torch.Generator("cpu").manual_seed(1),
            callback_on_step_end=on_step,
            output_type="pil",
            **extra,
        )
        synchronize(device)
        return clock.it_per_s(), time.perf_counter() - start

    once(2)
    free(device)
    reset_peak(device)
    it_s, s_img = once(case.steps)
    return it_s, s_img, peak_gib(device)


def bench_memory_modes(case: ModelCase, args: argparse.Namespace, device: Any) -> list[Row]:
    import torch

    from kd_server.memory_modes import LADDER, MemoryMode, applicable, apply

    dtype = torch.float32 if device.type == "cpu" else torch.float16
    if case.family == "flux-dev" and device.type != "cpu":
        dtype = torch.bfloat16  # Flux overflows in fp16

    def build() -> Any:
        if case.family == "flux-dev":
            pipe = build_random_flux(device, dtype, args.smoke)
        else:
            pipe = build_random_pipeline(case.family, device, dtype)
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    rows: list[Row] = []
    label = f"{case.family} {case.size}x{case.size} {case.steps} steps"
    print(f"\n== memory modes, {label}: building random weights", flush=True)
    pipe = build()
    full_s = nan
    for mode in LADDER:
        why = applicable(mode, None, device.type)
        if why is not None:
            print(f"  {case.family:<8} {mode.value:<20} skipped: {why}", flush=True)
            continue
        if mode is MemoryMode.SEQUENTIAL_OFFLOAD:  # from float8 it needs fresh weights
            del pipe
            free(device)
            pipe = build()
        apply(pipe, mode, device)
        free(device)
        try:
            it_s, s_img, peak = time_mode(pipe, case, device)
        except torch.OutOfMemoryError:
            print(f"  {case.family:<8} {mode.value:<20} out of memory", flush=True)
            free(device)
            continue
        if mode is MemoryMode.FULL:
            full_s = s_img
        notes = [f"{s_img / full_s:.2f}x full's s/image"]
        for (model, modes), limit in MODE_TARGETS.items():
            if model == case.family and mode.value in modes and peak >= 0:
                notes.append(f"target <= {limit:g} GiB {'met' if peak <= limit else 'MISSED'}")
        row = Row(case.family, f"memory mode {mode.value}", it_s, s_img, peak, "; ".join(notes))
        print(row.line(), flush=True)
        rows.append(row)
    del pipe
    free(device)
    return rows


# ------------------------------------------------------------------ main


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, 2 steps")
    parser.add_argument("--models", default=None, help="comma list of sd15,sdxl")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per setup")
    parser.add_argument("--compile", action="store_true", help="also: torch.compile the UNet")
    parser.add_argument("--compile-mode", default="default", help="torch.compile mode")
    parser.add_argument("--channels-last", action="store_true", help="also: channels_last")
    parser.add_argument("--fuse-qkv", action="store_true", help="also: fused QKV projections")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --smoke")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (smoke)")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument(
        "--memory-modes",
        action="store_true",
        help="the memory-mode benchmark (models: sd15,sdxl,flux-dev) instead",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    quiet_and_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*invalid value encountered.*")
    import torch

    device = torch.device(args.device or ("cpu" if args.smoke else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("No CUDA GPU here: run with --smoke to check the script on a CPU.")
        return 2
    # fp16 as users run on GPUs; fp32 on a CPU, where fp16 is ~35x slower.
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    cases = SMOKE_CASES if args.smoke else FULL_CASES
    names = (args.models or ("sd15" if args.smoke else "sd15,sdxl")).split(",")
    args.repeats = args.repeats or (1 if args.smoke else 3)
    started = time.monotonic()
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {card}, torch {torch.__version__}, dtype {dtype}, repeats {args.repeats}")
    rows: list[Row] = []
    if args.memory_modes:
        cases = MODE_SMOKE_CASES if args.smoke else MODE_CASES
        names = (args.models or "sd15,sdxl,flux-dev").split(",")
    for name in names:
        if args.memory_modes:
            rows.extend(bench_memory_modes(cases[name.strip()], args, device))
        else:
            rows.extend(bench_model(cases[name.strip()], args, device, dtype))
    elapsed = time.monotonic() - started
    print(f"\nDone in {elapsed:.0f} s.")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        data = {"device": card, "torch": torch.__version__, "elapsed_s": elapsed}
        data["rows"] = [asdict(r) for r in rows]
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
