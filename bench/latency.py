"""Benchmark 3: how soon an artist sees something.

For a job submitted over HTTP with previews every step: the time from submit to the
first `preview` event, and to the first byte of the first result PNG. Each is compared
with the engine's own time for the same job (to its first step, and to its return),
so the figures say what the server adds to what the diffusion itself needs.
A direct engine call's time to first step is reported too, for reference.

No target in the issue; the server should add little to either. Run:
`python -m bench.latency [--quick]`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench.common import (
    EngineCall,
    Figure,
    Profile,
    Report,
    TimedEngine,
    interleaved,
    live_server,
    make_engine,
    median,
    reporting,
    run_http_job,
    standard_main,
    txt2img_body,
    txt2img_request,
    warm_up,
)


def _first_step(call: EngineCall) -> float:
    assert call.first_step is not None
    return call.first_step - call.started


def run(profile: Profile, json_path: Path | None = None) -> Report:
    engine = TimedEngine(make_engine())
    warm_up(engine.engine, profile)
    with reporting("3. Latency", profile, json_path) as report, live_server(engine) as live:
        run_http_job(live, txt2img_body(Profile(64, 2, 1), preview_every=1))
        preview_over_step: list[float] = []
        byte_over_engine: list[float] = []
        preview_s: list[float] = []
        byte_s: list[float] = []
        engine_step_in_http: list[float] = []

        def served() -> float:
            timing = run_http_job(live, txt2img_body(profile, preview_every=1))
            call = engine.last_call()
            assert timing.first_preview is not None and timing.first_byte is not None
            # Engine times measured from the submit, to compare like with like.
            to_step = call.first_step - timing.submitted if call.first_step else float("nan")
            to_end = call.seconds + (call.started - timing.submitted)
            preview_s.append(timing.first_preview)
            byte_s.append(timing.first_byte)
            engine_step_in_http.append(_first_step(call))
            preview_over_step.append(timing.first_preview / to_step)
            byte_over_engine.append(timing.first_byte / to_end)
            return timing.total

        def direct() -> float:
            engine.generate(txt2img_request(profile, preview_every=1))
            return _first_step(engine.last_call())

        _, direct_first_step = interleaved(profile.repeats, served, direct)
        report.ms("direct engine call: start -> first step done", median(direct_first_step))
        report.ms("HTTP: submit -> first preview received", median(preview_s))
        report.ms("HTTP: submit -> first byte of the result PNG", median(byte_s))
        report.add(
            Figure(
                "first preview / engine's first step (same job, from submit)",
                median(preview_over_step),
            )
        )
        report.add(
            Figure(
                "first result byte / engine's return (same job, from submit)",
                median(byte_over_engine),
            )
        )
        report.add(
            Figure(
                "first preview (HTTP) / direct call's first step",
                median(preview_s) / median(direct_first_step),
                note="separate jobs: noisier",
            )
        )
    return report


def main(argv: list[str] | None = None) -> int:
    standard_main(__doc__ or "", run, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
