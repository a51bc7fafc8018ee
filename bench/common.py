"""What every benchmark shares: sizes, repetition, ratios, a timed engine and a live server.

Why ratios: this project's benchmarks run on shared, noisy machines, so absolute times
mean little. Every figure is a ratio of two things measured in the same process, in
the same run, with repetitions interleaved (A, B, A, B, ...) so that a burst of load
from a neighbour hits both sides alike; the median of a few repetitions is reported.

The server used here is the real one (uvicorn in a thread on loopback, the real engine
and the embedded tiny model), started by the product's own `serve_in_thread`, which
the tests use too, so the benchmarks and the tests exercise the same code.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Before diffusers is imported anywhere: a slip to the hub must fail at once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Idle OpenMP threads sleep instead of spinning: on a shared machine spinning threads
# fight the neighbours' and a job's time varies twentyfold (measured, see
# docs/performance.md). Only effective before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
# The plugin's pure-Python logic (bench.inpaint plans regions as the plugin does) is
# not an installed package: it runs inside Krita.
if str(REPO / "krita_plugin") not in sys.path:
    sys.path.insert(0, str(REPO / "krita_plugin"))

now = time.perf_counter


# ------------------------------------------------------------------ sizes and repeats


@dataclass(frozen=True)
class Profile:
    """How big each benchmark job is and how often it is repeated."""

    size: int  # txt2img width and height, pixels
    steps: int
    repeats: int


# The figures: the tiny model at 512x512, 20 steps.
FULL = Profile(size=512, steps=20, repeats=3)
# Same steps on the embedded model's own working size: a quarter of the pixels, so a
# whole run fits in minutes on a loaded 2-core machine. Overheads are fixed costs per
# job, so a smaller job gives a *larger* (more pessimistic) overhead ratio.
QUICK = Profile(size=256, steps=20, repeats=3)


def add_profile_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="256x256 jobs instead of 512x512")
    parser.add_argument("--size", type=int, help="job width and height in pixels")
    parser.add_argument("--steps", type=int, help="denoising steps per job")
    parser.add_argument("--repeats", type=int, help="repetitions of each measurement")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: stable timings on a shared machine)",
    )


def quiet_and_threads(threads: int) -> None:
    """One torch thread by default, and no progress bars or load chatter in the output.

    With as many threads as cores, on a machine shared with other work, a tiny-model
    job took 1.5-10 s where one thread took a steady 0.26 s: OpenMP threads wait for
    each other at every operation while a neighbour holds one of the cores.
    """
    import torch
    from diffusers.utils import logging as diffusers_logging

    torch.set_num_threads(max(1, threads))
    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
    except ImportError:
        pass


def profile_from(args: argparse.Namespace) -> Profile:
    base = QUICK if args.quick else FULL
    return Profile(
        size=args.size or base.size,
        steps=args.steps or base.steps,
        repeats=args.repeats or base.repeats,
    )


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def interleaved(repeats: int, *runs: Callable[[], float]) -> list[list[float]]:
    """Run each measurement `repeats` times in turn (A, B, A, B ...); their results."""
    results: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for index, run in enumerate(runs):
            results[index].append(run())
    return results


# ------------------------------------------------------------------ reporting


@dataclass
class Figure:
    """One reported number, with the target it is judged against (if any)."""

    name: str
    value: float
    unit: str = "x"
    target: str = ""  # e.g. "<= 1.05"
    met: bool | None = None
    note: str = ""

    def line(self) -> str:
        value = f"{self.value:.3f}" if self.unit == "x" else f"{self.value:.1f}"
        verdict = ""
        if self.target:
            verdict = f"  target {self.target}: {'met' if self.met else 'NOT met'}"
        note = f"  ({self.note})" if self.note else ""
        return f"  {self.name:<58} {value:>9} {self.unit}{verdict}{note}"


def at_most(name: str, value: float, limit: float, note: str = "") -> Figure:
    return Figure(name, value, "x", f"<= {limit:g}", value <= limit, note)


@dataclass
class Report:
    benchmark: str
    profile: Profile | None
    figures: list[Figure] = field(default_factory=list)
    load_before: float = 0.0
    load_after: float = 0.0

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        print(figure.line(), flush=True)
        return figure

    def ms(self, name: str, seconds: float, note: str = "") -> Figure:
        return self.add(Figure(name, seconds * 1000.0, "ms", note=note))

    def as_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "profile": asdict(self.profile) if self.profile else None,
            "load_average": [self.load_before, self.load_after],
            "figures": [asdict(f) for f in self.figures],
        }


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


@contextmanager
def reporting(title: str, profile: Profile | None, json_path: Path | None) -> Iterator[Report]:
    """Print a header, hand out the report, then print the machine's load around it."""
    report = Report(title, profile, load_before=load_average())
    header = f"\n== {title}"
    if profile is not None:
        header += f" ({profile.size}x{profile.size}, {profile.steps} steps, "
        header += f"median of {profile.repeats})"
    print(header, flush=True)
    yield report
    report.load_after = load_average()
    print(
        f"  load average {report.load_before:.1f} -> {report.load_after:.1f} "
        f"on {os.cpu_count()} CPUs",
        flush=True,
    )
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report.as_dict(), indent=2) + "\n")


# ------------------------------------------------------------------ engine and server


@dataclass
class EngineCall:
    """When one `generate` call started, reported its first step, and returned."""

    started: float
    first_step: float | None = None
    ended: float | None = None
    in_callbacks: float = 0.0  # seconds in the caller's on_progress (worker thread)
    in_preview_snapshot: float = 0.0  # seconds the worker spent handing previews over
    in_preview_thread: float = 0.0  # seconds the preview thread spent (image, JPEG, event)

    @property
    def seconds(self) -> float:
        assert self.ended is not None
        return self.ended - self.started


class TimedEngine:
    """The real engine, with the time of each call recorded (for the server benchmarks).

    It lets a benchmark split an HTTP job's wall time into the engine's own part and
    the server's, for the very same job, which is far less noisy than comparing two
    separate jobs on a busy machine.
    """

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.calls: list[EngineCall] = []
        self._lock = threading.Lock()

    @property
    def device_name(self) -> str:
        return str(self.engine.device_name)

    @property
    def dtype_name(self) -> str:
        return str(self.engine.dtype_name)

    def samplers(self) -> list[str]:
        return list(self.engine.samplers())

    def check(self, request: Any) -> Any:
        return self.engine.check(request)

    def loaded_models(self) -> list[str]:
        return list(self.engine.loaded_models())

    def generate(
        self,
        request: Any,
        on_progress: Any = None,
        should_cancel: Any = None,
        on_loading: Any = None,
        on_preview: Any = None,
        on_warning: Any = None,
    ) -> Any:
        call = EngineCall(started=now())
        with self._lock:
            self.calls.append(call)

        def progress(update: Any) -> None:
            start = now()
            if call.first_step is None:
                call.first_step = start
            if on_progress is not None:
                on_progress(update)
            call.in_callbacks += now() - start

        def preview(update: Any) -> None:
            start = now()
            if on_preview is not None:
                on_preview(update)
            call.in_preview_thread += now() - start

        try:
            with _timed_previews(call):
                return self.engine.generate(
                    request, progress, should_cancel, on_loading, preview, on_warning
                )
        finally:
            call.ended = now()

    def last_call(self) -> EngineCall:
        with self._lock:
            return self.calls[-1]


@contextmanager
def _timed_previews(call: EngineCall) -> Iterator[None]:
    """Add to `call` the time the denoising thread spends handing each preview over
    (`snapshot`) and the time the preview thread spends making its image (`render`);
    one engine call at a time, so the module attributes are swapped for its duration."""
    from kd_server import engine as engine_module

    originals = engine_module.snapshot, engine_module.render

    def timed_snapshot(*args: Any, **kwargs: Any) -> Any:
        start = now()
        try:
            return originals[0](*args, **kwargs)
        finally:
            call.in_preview_snapshot += now() - start

    def timed_render(*args: Any, **kwargs: Any) -> Any:
        start = now()
        try:
            return originals[1](*args, **kwargs)
        finally:
            call.in_preview_thread += now() - start

    engine_module.snapshot, engine_module.render = timed_snapshot, timed_render
    try:
        yield
    finally:
        engine_module.snapshot, engine_module.render = originals


def make_engine(folders: list[Path] | None = None, cache_size: int = 2) -> Any:
    from kd_server.engine import Engine
    from kd_server.library import ModelLibrary

    return Engine(ModelLibrary(folders or []), device="cpu", cache_size=cache_size)


@contextmanager
def live_server(engine: Any, **settings: Any) -> Iterator[Any]:
    """The real server on a free loopback port around `engine`, in a thread."""
    from kd_server.api.server import serve_in_thread
    from kd_server.config import Settings

    running = serve_in_thread(Settings(device="cpu", **settings), engine, engine_library(engine))
    try:
        yield running
    finally:
        running.stop()


def _headers(live: Any) -> dict[str, str]:
    token = live.settings.token
    return {"Authorization": f"Bearer {token}"} if token else {}


def engine_library(engine: Any) -> Any:
    inner = getattr(engine, "engine", engine)
    return inner.library


def txt2img_request(profile: Profile, preview_every: int = 0, **overrides: Any) -> Any:
    """The engine's request for the same job as `txt2img_body` (built from it)."""
    from kd_server.api.v1.convert import to_generation_request
    from kd_server.api.v1.schemas import JobRequest
    from kd_server.config import Settings

    body = JobRequest(**txt2img_body(profile, preview_every, **overrides))
    return to_generation_request(body, Settings())


def txt2img_body(profile: Profile, preview_every: int = 0, **overrides: Any) -> dict[str, Any]:
    """The wire body of the benchmarks' standard job."""
    body: dict[str, Any] = {
        "task": "txt2img",
        "prompt": "a lighthouse on a cliff at dusk",
        "steps": profile.steps,
        "width": profile.size,
        "height": profile.size,
        "seed": 1234,
        "sampler": "DPM++ 2M Karras",
        "cfg_scale": 7.0,
        "preview_every": preview_every,
    }
    body.update(overrides)
    return body


# ------------------------------------------------------------------ one job over HTTP


@dataclass
class HttpTiming:
    """Seconds after `POST /v1/jobs` was sent, as a client sees them."""

    submitted: float  # perf_counter at the POST
    accepted: float = 0.0  # 202 received
    started: float | None = None
    first_preview: float | None = None
    result_event: float | None = None
    first_byte: float | None = None  # of the first result image
    downloaded: float | None = None  # the whole first image
    previews: int = 0
    png_bytes: int = 0

    @property
    def total(self) -> float:
        assert self.downloaded is not None
        return self.downloaded


def run_http_job(live: Any, body: dict[str, Any], client_id: str | None = None) -> HttpTiming:
    """Submit one job, follow its events, download its first image; client-side times."""
    import requests

    client_id = client_id or uuid.uuid4().hex
    from websockets.sync.client import connect

    events_url = live.url.replace("http://", "ws://") + f"/v1/events?client_id={client_id}"
    with connect(events_url, additional_headers=_headers(live), open_timeout=10) as ws:
        timing = HttpTiming(submitted=now())
        response = requests.post(
            live.url + "/v1/jobs",
            json={**body, "client_id": client_id},
            headers=_headers(live),
            timeout=60,
        )
        timing.accepted = now() - timing.submitted
        if response.status_code != 202:
            raise RuntimeError(f"job refused: {response.status_code} {response.text}")
        job_id = response.json()["job_id"]
        url = _follow_events(ws, job_id, timing)
    _download(live, url, timing)
    return timing


def _follow_events(ws: Any, job_id: str, timing: HttpTiming) -> str:
    """Read events until this job's first `result`; returns the image URL."""
    while True:
        event = json.loads(ws.recv(timeout=600))
        if event.get("job_id") != job_id:
            continue
        elapsed = now() - timing.submitted
        kind = event["type"]
        if kind == "started" and timing.started is None:
            timing.started = elapsed
        elif kind == "preview":
            timing.previews += 1
            if timing.first_preview is None:
                timing.first_preview = elapsed
        elif kind == "result":
            timing.result_event = elapsed
            return str(event["url"])
        elif kind in ("failed", "cancelled"):
            raise RuntimeError(f"job {job_id} {kind}: {event}")


def _download(live: Any, url: str, timing: HttpTiming) -> None:
    import requests

    with requests.get(live.url + url, headers=_headers(live), stream=True, timeout=60) as response:
        response.raise_for_status()
        size = 0
        for chunk in response.iter_content(chunk_size=64 * 1024):
            if timing.first_byte is None:
                timing.first_byte = now() - timing.submitted
            size += len(chunk)
    timing.downloaded = now() - timing.submitted
    timing.png_bytes = size


def warm_up(engine: Any, profile: Profile) -> None:
    """One small job so that imports, model building and first-call costs are paid."""
    small = Profile(size=min(profile.size, 64), steps=2, repeats=1)
    engine.generate(txt2img_request(small, preview_every=1))


def standard_main(
    description: str,
    run: Callable[[Profile, Path | None], Report],
    argv: list[str] | None = None,
) -> Report:
    parser = argparse.ArgumentParser(description=description)
    add_profile_args(parser)
    args = parser.parse_args(argv)
    quiet_and_threads(args.threads)
    return run(profile_from(args), args.json)
