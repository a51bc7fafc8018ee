"""Benchmark 1: what the server adds to a job.

The same txt2img job (tiny model, 512x512, 20 steps by default) is run as a direct
`Engine.generate` call and through HTTP + WebSocket (submit -> `result` event -> PNG
downloaded), interleaved, in one process. Two ratios are reported:

- medians of the two kinds of job (what the issue asks for; noisy on a shared CPU,
  since two different jobs are compared), and
- per HTTP job, its wall time over its own engine call's time (same job, so the
  neighbours' load cancels out): this is the server's overhead proper.

Target: <= 1.05. Run: `python -m bench.overhead [--quick]`.
"""

from __future__ import annotations

import sys
from pathlib import Path

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
    txt2img_body,
    txt2img_request,
    warm_up,
)

TARGET = 1.05


def run(profile: Profile, json_path: Path | None = None) -> Report:
    engine = TimedEngine(make_engine())
    warm_up(engine.engine, profile)
    with reporting("1. Server overhead", profile, json_path) as report, live_server(engine) as live:
        run_http_job(live, txt2img_body(Profile(64, 2, 1)))  # first-request costs
        own_ratio: list[float] = []
        queued: list[float] = []
        after_engine: list[float] = []

        def direct() -> float:
            start = now()
            engine.generate(txt2img_request(profile))
            return now() - start

        def http() -> float:
            timing = run_http_job(live, txt2img_body(profile))
            call = engine.last_call()
            assert call.ended is not None
            own_ratio.append(timing.total / call.seconds)
            queued.append(call.started - timing.submitted)
            after_engine.append(timing.submitted + timing.total - call.ended)
            return timing.total

        direct_s, http_s = interleaved(profile.repeats, direct, http)
        report.ms("direct engine call", median(direct_s))
        report.ms("HTTP + WebSocket job, submit -> PNG downloaded", median(http_s))
        report.add(
            at_most(
                "HTTP job / direct call (medians of separate jobs)",
                median(http_s) / median(direct_s),
                TARGET,
            )
        )
        report.add(
            at_most("HTTP job wall / its own engine time (same job)", median(own_ratio), TARGET)
        )
        report.ms("  of which: submit -> engine starts", median(queued))
        report.ms("  of which: engine returns -> PNG downloaded", median(after_engine))
    return report


def main(argv: list[str] | None = None) -> int:
    standard_main(__doc__ or "", run, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
