"""Benchmark: scale-out, several workers behind one server (docs/scale-out.md).

Servers measured in the same process, in the same run, interleaved:
- local, 1 worker: one engine, as every server before scale-out;
- local, 2 workers: `--device cpu --device cpu`, one worker process per device;
- with `--ray`: Ray Serve deployments of 1 and of 2 CPU replicas behind the same
  gateway code (a local Ray cluster; the whole benchmark then runs in a private
  network namespace, `unshare -rn`, so Ray is reachable on the loopback only).

Each worker computes with one torch thread (one CPU core each, as one GPU each).
Reported: throughput of 4 clients x 2 jobs with 2 workers against 1 (goal >= 1.8);
the Ray gateway's time for one job against the local server's (goal <= 1.05); the
worst wait before a job starts when 4 clients submit at once, against one job's time
(ideal: 3 with one worker, 1 with two).

Run: `python -m bench.scale [--quick] [--ray]`.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    Figure,
    HttpTiming,
    Profile,
    Report,
    add_profile_args,
    at_most,
    interleaved,
    make_engine,
    median,
    now,
    profile_from,
    quiet_and_threads,
    reporting,
    run_http_job,
    txt2img_body,
    warm_up,
)

CLIENTS = 4
JOBS_EACH = 2
_NETNS_ENV = "KD_BENCH_NETNS"


@dataclass(frozen=True)
class Crowd:
    """One round of clients submitting at once."""

    wall: float  # first submit -> last image downloaded
    worst_wait: float  # the longest a job waited before it started
    job_s: float  # median time a job ran (started -> result), in this same round

    @property
    def waited_jobs(self) -> float:
        """The worst wait in jobs of this round: a loaded machine's jobs are slower
        for everyone, so the round's own job time is the yardstick."""
        return self.worst_wait / self.job_s


def crowd(live: Any, profile: Profile, clients: int, jobs_each: int) -> Crowd:
    """`clients` threads, each running `jobs_each` jobs one after the other."""
    barrier = threading.Barrier(clients)
    timings: list[HttpTiming] = []
    errors: list[BaseException] = []

    def client(index: int) -> None:
        try:
            barrier.wait()
            for job in range(jobs_each):
                body = txt2img_body(profile, seed=index * 100 + job)
                timings.append(run_http_job(live, body, f"scale-{index}"))
        except BaseException as exc:  # reported below, after the threads end
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = now()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    end = max(t.submitted + t.total for t in timings)
    ran = [(t.result_event or 0.0) - (t.started or 0.0) for t in timings]
    return Crowd(end - start, max(t.started or 0.0 for t in timings), median(ran))


def solo(live: Any, profile: Profile) -> float:
    """One job alone on an idle server, as its client sees it (submit -> image)."""
    return run_http_job(live, txt2img_body(profile, seed=7), "scale-solo").total


# ------------------------------------------------------------------ servers


@contextmanager
def local_server(workers: int) -> Iterator[Any]:
    """The real server as `serve --device cpu` (one engine in the server) or with
    the device repeated (one worker process per device), built by the product."""
    from kd_server.api.server import serve_in_thread
    from kd_server.config import Settings

    os.environ["OMP_NUM_THREADS"] = "1"  # the worker processes: one torch thread each
    engine = make_engine() if workers == 1 else None
    library = make_engine().library
    settings = Settings(device=",".join(["cpu"] * workers))
    running = serve_in_thread(settings, engine, library, start_timeout=120)
    try:
        yield running
    finally:
        running.stop()


@contextmanager
def ray_server(replicas: int, app_name: str) -> Iterator[Any]:
    """The real server whose jobs run on a Serve deployment of `replicas` replicas."""
    from kd_server.api.server import serve_in_thread
    from kd_server.config import Settings
    from kd_server.executors.ray_serve import RayExecutor

    checker = make_engine()
    settings = Settings(
        device="cpu", ray_address="auto", ray_replicas=f"{replicas}:{replicas}", ray_device="cpu"
    )
    executor = RayExecutor(settings, checker.check_model, app_name=app_name)
    running = serve_in_thread(
        settings, checker, checker.library, start_timeout=300, executor=executor
    )
    try:
        yield running
    finally:
        running.stop()


@contextmanager
def local_ray() -> Iterator[None]:
    import ray
    from ray import serve

    ray.init(
        address="local",  # a new cluster, never one `ray start` left on this machine
        num_cpus=4,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        namespace="krita-diffusers-bench",
        log_to_driver=False,
    )
    try:
        yield
    finally:
        serve.shutdown()
        ray.shutdown()


# ------------------------------------------------------------------ figures


def scaling(report: Report, label: str, one: Any, two: Any, profile: Profile) -> None:
    """Throughput of 4 clients x 2 jobs, and the worst wait of 4 clients x 1 job."""
    for live in (one, two):
        run_http_job(live, txt2img_body(Profile(64, 2, 1)))  # every worker warm
        crowd(live, Profile(64, 2, 1), CLIENTS, 1)
    walls = interleaved(
        profile.repeats,
        lambda: crowd(one, profile, CLIENTS, JOBS_EACH).wall,
        lambda: crowd(two, profile, CLIENTS, JOBS_EACH).wall,
    )
    jobs = CLIENTS * JOBS_EACH
    report.ms(f"{label}: 1 worker, {CLIENTS} clients x {JOBS_EACH} jobs", median(walls[0]))
    report.ms(f"{label}: 2 workers, the same", median(walls[1]))
    ratio = median(walls[0]) / median(walls[1])
    report.add(
        Figure(
            f"{label}: throughput 2 workers / 1",
            ratio,
            target=">= 1.8",
            met=ratio >= 1.8,
            note=f"{jobs} jobs per round",
        )
    )
    for workers, live in ((1, one), (2, two)):
        rounds = [crowd(live, profile, CLIENTS, 1) for _ in range(profile.repeats)]
        ideal = math.ceil(CLIENTS / workers) - 1
        report.add(
            Figure(
                f"{label}: worst wait of {CLIENTS} clients / one job, {workers} worker(s)",
                median([r.waited_jobs for r in rounds]),
                note=f"ideal {ideal}; one job {1000 * median([r.job_s for r in rounds]):.0f} ms",
            )
        )


def run(profile: Profile, json_path: Path | None = None, with_ray: bool = False) -> Report:
    warm_up(make_engine(), profile)
    title = "Scale-out: workers behind one server"
    with reporting(title, profile, json_path) as report, ExitStack() as stack:
        one = stack.enter_context(local_server(1))
        two = stack.enter_context(local_server(2))
        scaling(report, "local", one, two, profile)
        if with_ray:
            stack.enter_context(local_ray())
            ray_one = stack.enter_context(ray_server(1, "kd-bench-1"))
            ray_two = stack.enter_context(ray_server(2, "kd-bench-2"))
            scaling(report, "ray", ray_one, ray_two, profile)
            gateway_overhead(report, one, ray_one, profile)
    return report


def gateway_overhead(report: Report, local: Any, ray: Any, profile: Profile) -> None:
    """One job alone: through the Ray gateway against the local server."""
    local_s, ray_s = interleaved(
        profile.repeats * 2, lambda: solo(local, profile), lambda: solo(ray, profile)
    )
    report.ms("one job alone, local server", median(local_s))
    report.ms("one job alone, Ray gateway (1 replica)", median(ray_s))
    ratio = median(ray_s) / median(local_s)
    report.add(at_most("Ray gateway / local, one job", ratio, 1.05, "job time included"))


def _reexec_in_private_network(argv: list[str]) -> None:
    """Ray listens on every interface: run this benchmark where only the loopback is."""
    env = {
        **os.environ,
        _NETNS_ENV: "1",
        "HOME": tempfile.mkdtemp(prefix="kd-bench-ray-"),  # Ray's session token
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    script = 'ip link set lo up && exec "$0" -m bench.scale "$@"'
    os.execvpe("unshare", ["unshare", "-rn", "sh", "-c", script, sys.executable, *argv], env)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__)
    add_profile_args(parser)
    parser.add_argument("--ray", action="store_true", help="also measure the Ray executor")
    args = parser.parse_args(argv)
    if args.ray and os.environ.get(_NETNS_ENV) != "1":
        _reexec_in_private_network(argv)
    quiet_and_threads(args.threads)
    run(profile_from(args), args.json, with_ray=args.ray)
    return 0


if __name__ == "__main__":
    sys.exit(main())
