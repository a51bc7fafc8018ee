"""Benchmark 4: the warm-model cache and LoRA switching.

Two tiny single-file SD1.5 checkpoints (original LDM layout, with their `<stem>.config/`
sidecars, written by `modelkit.ldm_layout`) and two LoRAs go into a
temporary models folder, read by the real `ModelLibrary`. Measured, as ratios to a job
on a model that is already loaded:

- the first job on a checkpoint (it loads with `from_single_file`);
- switching between the two checkpoints with a cache of 2 (both stay warm) and with a
  cache of 1 (every switch reloads);
- a LoRA job on a warm model: the first use of an adapter (file load), and switching
  between two adapters that are already loaded.

Run: `python -m bench.cache [--quick]`.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import (
    Figure,
    Profile,
    Report,
    interleaved,
    make_engine,
    median,
    now,
    reporting,
    standard_main,
    txt2img_request,
)


def write_models(root: Path, loras: int) -> None:
    """Checkpoints `a` and `b` and LoRAs `lora0..` in our own `checkpoints/` layout."""
    from modelkit.ldm_layout import build_tiny_components, save_config_folder, write_ldm_checkpoint
    from modelkit.loras import write_test_lora

    folder = root / "checkpoints"
    for seed, name in enumerate(("a", "b"), start=1):
        pipe = build_tiny_components("sd15", seed=seed)
        write_ldm_checkpoint(pipe, folder / f"{name}.safetensors")
        save_config_folder(pipe, folder / f"{name}.config")
    unet = build_tiny_components("sd15", seed=1).unet
    for index in range(loras):
        write_test_lora(root / "loras", f"lora{index}", seed=index, unet=unet, scale=0.1)


def _job(engine: Any, profile: Profile, model: str, loras: list[str] | None = None) -> float:
    from kd_server.generation import LoraSpec

    request = txt2img_request(
        profile, model=model, loras=[LoraSpec(name, 0.8) for name in loras or []]
    )
    start = now()
    engine.generate(request)
    return now() - start


def run(profile: Profile, json_path: Path | None = None) -> Report:
    with (
        tempfile.TemporaryDirectory(prefix="kd-bench-models-") as tmp,
        reporting("4. Model cache and LoRAs", profile, json_path) as report,
    ):
        root = Path(tmp)
        write_models(root, loras=profile.repeats + 2)
        _checkpoints(root, profile, report)
        _loras(root, profile, report)
    return report


def _checkpoints(root: Path, profile: Profile, report: Report) -> None:
    engine = make_engine([root], cache_size=2)
    _job(engine, Profile(64, 2, 1), "a")  # first-use costs of the code paths

    def cold() -> float:
        engine.unload("a")
        return _job(engine, profile, "a")

    def warm() -> float:
        return _job(engine, profile, "a")

    cold_s, warm_s = interleaved(profile.repeats, cold, warm)
    report.ms("job on a loaded model (warm)", median(warm_s))
    report.add(
        Figure("first job on a model (loads it) / warm job", median(cold_s) / median(warm_s))
    )
    report.ms("  loading a tiny single-file checkpoint", median(cold_s) - median(warm_s))
    _job(engine, profile, "b")  # both warm now
    switch_warm, same_warm = _alternating(engine, profile)
    report.add(
        Figure("switching a<->b, cache of 2 (both warm) / same model", switch_warm / same_warm)
    )
    engine.cache_size = 1
    engine.unload("b")
    switch_cold, same_cold = _alternating(engine, profile)
    report.add(Figure("switching a<->b, cache of 1 (reload) / same model", switch_cold / same_cold))


def _alternating(engine: Any, profile: Profile) -> tuple[float, float]:
    """Median job time when the model changes every job, and when it stays."""
    switched: list[float] = []
    same: list[float] = []
    for _ in range(profile.repeats):
        switched.append(_job(engine, profile, "b"))
        switched.append(_job(engine, profile, "a"))
        same.append(_job(engine, profile, "a"))
    return median(switched), median(same)


def _loras(root: Path, profile: Profile, report: Report) -> None:
    engine = make_engine([root], cache_size=2)
    _job(engine, Profile(64, 2, 1), "a")
    base = [_job(engine, profile, "a") for _ in range(profile.repeats)]
    first_use = [_job(engine, profile, "a", [f"lora{i + 2}"]) for i in range(profile.repeats)]
    _job(engine, profile, "a", ["lora0"])
    _job(engine, profile, "a", ["lora1"])
    switch = interleaved(
        profile.repeats,
        lambda: _job(engine, profile, "a", ["lora0"]),
        lambda: _job(engine, profile, "a", ["lora1"]),
    )
    off = [_job(engine, profile, "a") for _ in range(profile.repeats)]
    report.add(
        Figure("first use of a LoRA (loads it) / no-LoRA job", median(first_use) / median(base))
    )
    report.add(
        Figure(
            "switching between two loaded LoRAs / no-LoRA job",
            median(switch[0] + switch[1]) / median(base),
        )
    )
    report.add(
        Figure(
            "no-LoRA job after LoRAs (adapters off) / before",
            median(off) / median(base),
            note="adapters stay loaded but disabled",
        )
    )


def main(argv: list[str] | None = None) -> int:
    standard_main(__doc__ or "", run, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
