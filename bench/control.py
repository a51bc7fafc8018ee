"""Benchmark 8: what a control layer costs: a job with one ControlNet (and with two, and
with a reference image) against the same job without, in the same run.

The embedded model with a tiny ControlNet derived from its UNet and a tiny IP-Adapter,
loaded from files as downloaded ones are (modelkit/control_models.py). A ControlNet is
a copy of the UNet's encoder and runs beside the UNet at every step, so a job with
one is expected to cost more: about half a UNet more per ControlNet. The sanity bound
(2x for one control) catches a ControlNet reloaded per job or a UNet copied per job.

Run: `python -m bench.control [--quick]` (or `python -m bench --only control`).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import (
    Profile,
    Report,
    at_most,
    interleaved,
    make_engine,
    median,
    now,
    reporting,
    standard_main,
    txt2img_request,
    warm_up,
)

ONE_CONTROL_LIMIT = 2.0


def control_folder(root: Path) -> Path:
    """Two tiny ControlNets, an IP-Adapter and its encoder in ComfyUI's folders."""
    from modelkit import control_models

    unet = control_models.embedded_unet()
    controlnet = root / "models" / "controlnet"
    control_models.write_controlnet(controlnet, "depth", unet, seed=1)
    control_models.write_controlnet(controlnet, "lines", unet, seed=2, layout="diffusers")
    control_models.write_ip_adapter(root / "models" / "ipadapter", "style", unet, seed=3)
    control_models.write_image_encoder(root / "models" / "clip_vision", "clip", seed=4)
    return root


def requests(profile: Profile) -> dict[str, Any]:
    from dataclasses import replace

    from PIL import Image, ImageDraw

    from kd_server.generation import ControlInput, ControlMode, ReferenceInput

    side = profile.size
    hint = Image.new("RGB", (side, side), "black")
    ImageDraw.Draw(hint).ellipse((side // 5, side // 5, 4 * side // 5, 4 * side // 5), "white")
    depth = ControlInput(model="depth", image=hint, mode=ControlMode.DEPTH)
    lines = ControlInput(model="lines", image=hint, mode=ControlMode.LINEART)
    plain = txt2img_request(profile)

    def with_(**conditioning: Any) -> Any:
        return replace(plain, conditioning=replace(plain.conditioning, **conditioning))

    return {
        "none": plain,
        "one": with_(control=[depth]),
        "two": with_(control=[depth, lines]),
        "reference": with_(reference=ReferenceInput("style", hint, 0.6)),
    }


def run(profile: Profile, json_path: Path | None = None) -> Report:
    with tempfile.TemporaryDirectory(prefix="bench-control-") as folder:
        engine = make_engine([control_folder(Path(folder))])
        warm_up(engine, profile)
        jobs = requests(profile)
        for request in jobs.values():  # load each module once, outside the timing
            engine.generate(request)

        def timed(name: str) -> Any:
            def once() -> float:
                start = now()
                engine.generate(jobs[name])
                return now() - start

            return once

        with reporting(
            "8. Control layers: job with control / without", profile, json_path
        ) as report:
            none, one, two, reference = interleaved(
                profile.repeats, timed("none"), timed("one"), timed("two"), timed("reference")
            )
            report.ms("job without control", median(none))
            report.ms("job with one ControlNet", median(one))
            report.add(
                at_most(
                    "one ControlNet / none",
                    median(one) / median(none),
                    ONE_CONTROL_LIMIT,
                    "a ControlNet is about half a UNet, run at every step",
                )
            )
            ratio = median(two) / median(none)
            report.add(at_most("two ControlNets / none", ratio, 2 * ONE_CONTROL_LIMIT - 1))
            report.add(
                at_most(
                    "reference image (IP-Adapter) / none", median(reference) / median(none), 1.5
                )
            )
    return report


def main(argv: list[str] | None = None) -> int:
    standard_main(__doc__ or "", run, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
