"""Benchmark 6: four artists on one server.

Four clients (each its own WebSocket and client id) submit one job each at the same
moment; against that, one client runs the same four jobs one after the other. Reported:
throughput (jobs per second of wall time) of the four against the one, and the worst
time a job waited before it started, as a multiple of one job's own duration (with
one GPU and fair round-robin, the last of four waits for about three jobs).

Run: `python -m bench.queue [--quick]`.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

from bench.common import (
    Figure,
    HttpTiming,
    Profile,
    Report,
    TimedEngine,
    interleaved,
    live_server,
    make_engine,
    median,
    now,
    reporting,
    run_http_job,
    standard_main,
    txt2img_body,
    warm_up,
)

CLIENTS = 4


def one_client(live: Any, profile: Profile) -> float:
    start = now()
    for index in range(CLIENTS):
        run_http_job(live, txt2img_body(profile, seed=index), client_id="solo")
    return now() - start


def four_clients(live: Any, profile: Profile, waits: list[float]) -> float:
    barrier = threading.Barrier(CLIENTS)
    timings: list[HttpTiming] = []
    errors: list[BaseException] = []

    def client(index: int) -> None:
        try:
            barrier.wait()
            timings.append(run_http_job(live, txt2img_body(profile, seed=index), f"c{index}"))
        except BaseException as exc:  # reported below, after the threads end
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    start = now()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    end = max(t.submitted + t.total for t in timings)
    waits.append(max(t.started or 0.0 for t in timings))
    return end - start


def run(profile: Profile, json_path: Path | None = None) -> Report:
    engine = TimedEngine(make_engine())
    warm_up(engine.engine, profile)
    with reporting("6. Queue with 4 clients", profile, json_path) as report:
        with live_server(engine) as live:
            run_http_job(live, txt2img_body(Profile(64, 2, 1)))
            waits: list[float] = []
            calls_before = len(engine.calls)
            solo, crowd = interleaved(
                profile.repeats,
                lambda: one_client(live, profile),
                lambda: four_clients(live, profile, waits),
            )
            job_s = median([c.seconds for c in engine.calls[calls_before:]])
        report.ms("one client, 4 jobs in a row", median(solo))
        report.ms("4 clients, 1 job each at once", median(crowd))
        report.add(
            Figure(
                "throughput: 4 clients / 1 client",
                median(solo) / median(crowd),
                target=">= 1",
                met=median(solo) / median(crowd) >= 0.98,
                note="2% noise allowance",
            )
        )
        report.ms("worst wait before start (4 clients)", median(waits))
        report.add(
            Figure(
                "worst wait / one job's engine time",
                median(waits) / job_s,
                note=f"ideal {CLIENTS - 1} (waits for the others' jobs)",
            )
        )
    return report


def main(argv: list[str] | None = None) -> int:
    standard_main(__doc__ or "", run, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
