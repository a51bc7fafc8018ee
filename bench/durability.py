"""Benchmark 7: what durability costs a job.

The same txt2img job through HTTP + WebSocket (submit -> result -> PNG downloaded) on
two live servers around one engine, interleaved: one keeps everything in memory, the
other records the job in its SQLite journal before acknowledging it, records each
state change and writes the result atomically (fsync) to its outputs folder.

Target: durable / in-memory job wall time <= 1.02. Run: `python -m bench.durability
[--quick]`.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from bench.common import (
    Profile,
    Report,
    at_most,
    interleaved,
    live_server,
    make_engine,
    median,
    reporting,
    run_http_job,
    standard_main,
    txt2img_body,
    warm_up,
)

TARGET = 1.02


def run(profile: Profile, json_path: Path | None = None) -> Report:
    engine = make_engine()
    warm_up(engine, profile)
    with (
        tempfile.TemporaryDirectory() as state,
        reporting("7. Cost of durability", profile, json_path) as report,
        live_server(engine) as memory,
        live_server(engine, state_dir=Path(state)) as durable,
    ):
        for live in (memory, durable):
            run_http_job(live, txt2img_body(Profile(64, 2, 1)))  # first-request costs
        in_memory, on_disk = interleaved(
            profile.repeats,
            lambda: run_http_job(memory, txt2img_body(profile)).total,
            lambda: run_http_job(durable, txt2img_body(profile)).total,
        )
        pairs = [disk / memory_s for disk, memory_s in zip(on_disk, in_memory, strict=True)]
        report.ms("in memory only: submit -> PNG downloaded", median(in_memory))
        report.ms("durable: submit -> PNG downloaded", median(on_disk))
        report.add(
            at_most("durable / in memory (median of back-to-back pairs)", median(pairs), TARGET)
        )
    return report


def main(argv: list[str] | None = None) -> int:
    standard_main(__doc__ or "", run, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
