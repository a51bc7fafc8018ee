"""Benchmark 5: inpainting cost follows the selection, not the canvas.

A 256x256 selection in the middle of a 512x512 canvas and of a 4096x4096 canvas goes
through the plugin's own code (`planning.make_plan` -> region with context margin,
reading the region's pixels and mask from an in-memory canvas, PNG encoding with
QImage as in Krita) and the real server (inpaint job, result PNG downloaded and
decoded back to RGBA for the layer). Click -> pixels ready for the layer, interleaved.

Target: 4096 canvas / 512 canvas <= 1.2. Run: `python -m bench.inpaint [--quick]`.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

from bench.common import (
    Profile,
    Report,
    TimedEngine,
    at_most,
    interleaved,
    live_server,
    make_engine,
    median,
    now,
    reporting,
    run_http_job,
    standard_main,
    warm_up,
)

TARGET = 1.2
SELECTION = 256
CONTEXT_MARGIN = 64  # the plugin's default setting


def make_canvas(side: int) -> Any:
    from plugin.memory_canvas import MemoryCanvas

    from krita_diffusers.geometry import Rect

    canvas = MemoryCanvas(side, side)
    corner = (side - SELECTION) // 2
    canvas.select(Rect(corner, corner, SELECTION, SELECTION))
    return canvas


def inpaint_once(live: Any, canvas: Any, profile: Profile) -> float:
    """The plugin's path for one click on Inpaint, timed to the RGBA layer pixels."""
    from krita_diffusers import images
    from krita_diffusers.planning import make_plan

    start = now()
    plan = make_plan(canvas.canvas_size(), canvas.selection_bounds(), 100, CONTEXT_MARGIN, 512)
    region = plan.region
    pixels = images.encode_rgba_png(canvas.read_pixels(region), region.width, region.height)
    mask = images.encode_mask_png(canvas.read_mask(region), region.width, region.height)
    body = {
        "task": "inpaint",
        "prompt": "a window with shutters",
        "steps": profile.steps,
        "strength": 1.0,
        "seed": 7,
        "sampler": "DPM++ 2M Karras",
        "image": base64.b64encode(pixels).decode("ascii"),
        "mask": base64.b64encode(mask).decode("ascii"),
        "mask_feather": 8,
        "preview_every": 2,  # the plugin's default
    }
    timing = run_http_job(live, body)
    assert timing.png_bytes > 0
    return now() - start


def run(profile: Profile, json_path: Path | None = None) -> Report:
    from PyQt5.QtGui import QGuiApplication

    app = QGuiApplication.instance() or QGuiApplication(["bench"])
    engine = TimedEngine(make_engine())
    warm_up(engine.engine, profile)
    small, large = make_canvas(512), make_canvas(4096)
    with reporting("5. Inpaint cost vs canvas size", profile, json_path) as report:
        with live_server(engine) as live:
            inpaint_once(live, small, Profile(64, 2, 1))
            small_s, large_s = interleaved(
                profile.repeats,
                lambda: inpaint_once(live, small, profile),
                lambda: inpaint_once(live, large, profile),
            )
        report.ms("256x256 selection on a 512x512 canvas", median(small_s))
        report.ms("256x256 selection on a 4096x4096 canvas", median(large_s))
        report.add(at_most("4096 canvas / 512 canvas", median(large_s) / median(small_s), TARGET))
    del app
    return report


def main(argv: list[str] | None = None) -> int:
    standard_main(__doc__ or "", run, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
