"""Benchmark 2: what step previews cost.

The same job through the server with a preview after every step (latent -> RGB map,
JPEG, base64, WebSocket frame, client decode of the JSON) and with none, interleaved.
Also the engine alone (previews made but not sent) against none, to tell the engine's
share from the server's. Both compare separate jobs, which on a shared CPU differ by
more than the previews cost; so the time the denoising (worker) thread spends on
reporting (handing each preview's latents over, and the progress callbacks) is also
measured inside each job and set against the rest of that same job. The preview
thread's own work (latent -> RGB, JPEG, event) runs beside the denoising; its time
per preview is reported too, and how many previews reached the client.

Target: <= 3% extra (ratio <= 1.03). Run: `python -m bench.previews [--quick]`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench.common import (
    Figure,
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
    txt2img_body,
    txt2img_request,
    warm_up,
)

TARGET = 1.03


def run(profile: Profile, json_path: Path | None = None) -> Report:
    engine = TimedEngine(make_engine())
    warm_up(engine.engine, profile)
    with reporting("2. Preview cost", profile, json_path) as report, live_server(engine) as live:
        run_http_job(live, txt2img_body(Profile(64, 2, 1), preview_every=1))
        counts: list[int] = []
        shares: list[float] = []
        beside: list[float] = []
        handover: list[float] = []

        def served(every: int) -> float:
            timing = run_http_job(live, txt2img_body(profile, preview_every=every))
            call = engine.last_call()
            if every:
                counts.append(timing.previews)
                on_worker = call.in_preview_snapshot + call.in_callbacks
                shares.append(1.0 + on_worker / (call.seconds - on_worker))
                beside.append(call.in_preview_thread / max(1, timing.previews))
                handover.append(call.in_preview_snapshot / profile.steps)
            return timing.total

        def engine_only(every: int) -> float:
            start = now()
            engine.engine.generate(
                txt2img_request(profile, preview_every=every), on_progress=lambda _: None
            )
            return now() - start

        with_previews, without = interleaved(profile.repeats, lambda: served(1), lambda: served(0))
        engine_with, engine_without = interleaved(
            profile.repeats, lambda: engine_only(1), lambda: engine_only(0)
        )
        report.ms("server job, no previews", median(without))
        report.ms(
            "server job, preview every step",
            median(with_previews),
            note=f"{median([float(c) for c in counts]):.0f} of {profile.steps} previews received",
        )
        report.ms("preview thread, per preview (map, JPEG, event)", median(beside))
        report.add(
            Figure(
                "denoising thread, per preview (latents handed over)",
                median(handover) * 1e6,
                "us",
            )
        )
        report.add(
            at_most(
                "server job: previews every step / none",
                median(with_previews) / median(without),
                TARGET,
            )
        )
        report.add(
            at_most(
                "same job: 1 + worker time reporting steps / the rest",
                median(shares),
                TARGET,
            )
        )
        report.add(
            at_most(
                "engine alone: previews every step / none",
                median(engine_with) / median(engine_without),
                TARGET,
            )
        )
    return report


def main(argv: list[str] | None = None) -> int:
    standard_main(__doc__ or "", run, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
