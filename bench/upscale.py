"""Benchmark 12: a tiled upscale's memory follows the tile, its time the pixels.

Each size runs in a fresh process (`--child`), so its peak resident memory
(`getrusage` maxrss: torch's allocations escape tracemalloc) is its own: the
embedded model and the tiny 4x ESRGAN (modelkit.upscalers) are loaded, a small
warm-up job runs, then one upscale job through the engine: a quarter-size picture
enlarged 4x by the model (tiles of 192 px), then refined with img2img at strength
0.5 in tiles of the model's working size (256 px), blended a strip at a time.

Figures: peak RSS of the 4096x4096 job / the 1024x1024 job (target <= 1.5: memory
bounded by the tile, not the picture); time of the 4096 job / the 2048 job, 4x the
pixels (target 3.2..4.8: linear in pixels); and one 8192x8192 job's time and peak
(skipped with --quick, where it would take most of the run).

The time ratio is of CPU time (`time.process_time`, one torch thread): the runs take
minutes each, one after another, so they cannot be interleaved as the other
benchmarks' repetitions are, and on a shared machine a neighbour's burst during one
of them moved the wall-clock ratio from 4x to 12x (measured). Wall times are
reported beside it.

Run: `python -m bench.upscale [--quick] [--threads N]`. Each job runs 2 steps at
strength 0.5 (1 refine step per tile), whatever `--steps` says.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Figure, Profile, Report, at_most, now, reporting, standard_main

MEMORY_TARGET = 1.5
TIME_RANGE = (3.2, 4.8)
REFINE_STRENGTH = 0.5
REFINE_STEPS = 2  # fixed, whatever --steps says: 1 refine step per tile
MARKER = "UPSCALE_RESULT "


def source_picture(side: int) -> Any:
    """A deterministic picture with smooth shapes and fine texture."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    rng = np.random.default_rng(side)
    texture = rng.normal(0, 12, (side, side)).astype(np.float32)
    planes = [
        255 * x + texture,
        255 * (0.5 + 0.5 * np.sin(6 * y + 3 * x)) + texture,
        255 * (1 - x * y),
    ]
    array = np.clip(np.stack(planes, axis=2), 0, 255).astype(np.uint8)
    return Image.fromarray(array, "RGB")


def child(side: int, steps: int) -> dict[str, float]:
    """One upscale to `side` x `side` in this process: its seconds and peak RSS."""
    from kd_server.engine import Engine
    from kd_server.generation import GenerationRequest, ImageInputs, Sampling, Task, Upscaling
    from kd_server.library import ModelLibrary
    from modelkit.upscalers import write_esrgan

    with tempfile.TemporaryDirectory(prefix="kd-bench-upscale-") as folder:
        write_esrgan(Path(folder) / "upscale_models" / "4x-tiny.safetensors")
        engine = Engine(ModelLibrary([Path(folder)]), device="cpu")

        def request(target: int) -> GenerationRequest:
            return GenerationRequest(
                task=Task.UPSCALE,
                sampling=Sampling(sampler="Euler", steps=steps, seed=1),
                inputs=ImageInputs(image=source_picture(target // 4)),
                upscaling=Upscaling(target, target, upscaler="4x-tiny", strength=REFINE_STRENGTH),
            )

        engine.generate(request(256))  # loads the model and the upscaler
        job = request(side)
        start, cpu_start = now(), time.process_time()
        (result,) = engine.generate(job)
        seconds, cpu_seconds = now() - start, time.process_time() - cpu_start
        assert result.image.size == (side, side)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_mb": peak_kb / 1024}


def measure(side: int, steps: int, threads: int) -> dict[str, float]:
    """`child` in a fresh interpreter."""
    command = [
        sys.executable,
        "-m",
        "bench.upscale",
        "--child",
        str(side),
        "--steps",
        str(steps),
        "--threads",
        str(threads),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith(MARKER):
            return dict(json.loads(line[len(MARKER) :]))
    raise RuntimeError(f"the {side} px run failed:\n{done.stderr[-2000:]}")


def within(name: str, value: float, low: float, high: float) -> Figure:
    return Figure(name, value, "x", f"{low:g}..{high:g}", low <= value <= high)


def run(profile: Profile, json_path: Path | None = None) -> Report:
    import torch

    steps, threads = REFINE_STEPS, torch.get_num_threads()  # threads: set by --threads
    huge = profile.size > 256  # the 8192 run only outside --quick
    with reporting("12. Tiled upscale: memory and time vs size", None, json_path) as report:
        runs = {side: measure(side, steps, threads) for side in (1024, 2048, 4096)}
        for side, figures in runs.items():
            report.add(Figure(f"{side}x{side}: peak RSS", figures["peak_mb"], "MB"))
            report.ms(f"{side}x{side}: upscale + refine (wall)", figures["seconds"])
            report.ms(f"{side}x{side}: upscale + refine (CPU)", figures["cpu_seconds"])
        memory = runs[4096]["peak_mb"] / runs[1024]["peak_mb"]
        report.add(at_most("peak RSS 4096 / 1024 (16x the pixels)", memory, MEMORY_TARGET))
        ratio = runs[4096]["cpu_seconds"] / runs[2048]["cpu_seconds"]
        report.add(within("CPU time 4096 / 2048 (4x the pixels)", ratio, *TIME_RANGE))
        if huge:
            biggest = measure(8192, steps, threads)
            report.add(Figure("8192x8192: peak RSS", biggest["peak_mb"], "MB"))
            report.ms("8192x8192: upscale + refine (wall)", biggest["seconds"])
            report.ms("8192x8192: upscale + refine (CPU)", biggest["cpu_seconds"])
            report.add(
                Figure(
                    "peak RSS 8192 / 1024 (64x the pixels)",
                    biggest["peak_mb"] / runs[1024]["peak_mb"],
                )
            )
    return report


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--child" in argv:
        from bench.common import quiet_and_threads

        side = int(argv[argv.index("--child") + 1])
        steps = int(argv[argv.index("--steps") + 1]) if "--steps" in argv else 2
        threads = int(argv[argv.index("--threads") + 1]) if "--threads" in argv else 1
        quiet_and_threads(threads)
        print(MARKER + json.dumps(child(side, steps)), flush=True)
        return 0
    standard_main(__doc__ or "", run, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
