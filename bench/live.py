"""Benchmark 9: live painting, the server's part.

A scripted painter changes the canvas faster than frames can be made: every
`interval` it sends the region as a new `live: true` img2img frame (an LCM LoRA
stand-in, `sampling: "auto"`, locked seed, a preview every step), as the Krita
plugin's live mode does after a pause in painting. Newer frames replace the waiting
one and stop the running one at its next step (`superseded`). Reported:

- each finished frame's wall time from its submit to its PNG downloaded, against that
  same frame's engine time (the server's share of the live latency, waiting for a
  stale frame's step included; the plugin adds its polling, encoding and layer
  update on top, measured in real Krita);
- the last canvas state's frame: what the artist waits for after the last stroke;
- frames dropped as stale: replaced while waiting, stopped while running.

Two paces, against one frame's engine time (measured first): a canvas state every
1.5 frames (slower than frames: each one finishes) and every 0.5 frame (faster:
frames go stale).
Run: `python -m bench.live [--quick]`.
"""

from __future__ import annotations

import base64
import io
import json
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from bench.common import (
    Figure,
    Profile,
    Report,
    TimedEngine,
    live_server,
    make_engine,
    median,
    now,
    reporting,
    standard_main,
    warm_up,
)

LORA = "lcm-lora-sdv1-5"  # named as the real one is: the server recognises it as LCM
FRAMES = 8
STRENGTH = 0.5


@dataclass
class Frame:
    job_id: str
    submitted: float
    started_order: int | None = None
    downloaded: float | None = None
    ended: str | None = None  # finished / cancelled
    reason: str | None = None
    engine_seconds: float | None = None
    last: bool = False  # the last canvas state of a painting session


def canvas(size: int, stroke: int) -> str:
    """The region after `stroke` strokes, as the plugin sends it (base64 PNG)."""
    image = Image.new("RGB", (size, size), (200, 190, 170))
    draw = ImageDraw.Draw(image)
    for index in range(stroke + 1):
        x = (index * 37) % size
        draw.line([(x, 0), (size - x, size)], fill=(40 + index * 20, 60, 120), width=9)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def body(profile: Profile, stroke: int, client_id: str) -> dict[str, Any]:
    return {
        "task": "img2img",
        "prompt": "a castle on a hill, oil painting",
        "image": canvas(profile.size, stroke),
        "strength": STRENGTH,
        "seed": 1234,
        "loras": [{"name": LORA, "weight": 1.0}],
        "sampling": "auto",
        "live": True,
        "preview_every": 1,
        "client_id": client_id,
    }


def paint(live: Any, profile: Profile, interval: float, count: int = FRAMES) -> list[Frame]:
    """Send `count` canvas states `interval` apart; follow every frame to its end."""
    import requests
    from websockets.sync.client import connect

    client_id = uuid.uuid4().hex
    events_url = live.url.replace("http://", "ws://") + f"/v1/events?client_id={client_id}"
    frames: dict[str, Frame] = {}
    order: list[str] = []
    with connect(events_url, open_timeout=10) as ws:
        next_at = now()
        for stroke in range(count):
            while now() < next_at:
                _read(ws, frames, order, live, timeout=max(0.001, next_at - now()))
            response = requests.post(
                live.url + "/v1/jobs", json=body(profile, stroke, client_id), timeout=60
            )
            response.raise_for_status()
            job_id = response.json()["job_id"]
            frames[job_id] = Frame(job_id, submitted=now())
            next_at += interval
        while any(frame.ended is None for frame in frames.values()):
            _read(ws, frames, order, live, timeout=600)
    for position, job_id in enumerate(order):
        frames[job_id].started_order = position
    painted = list(frames.values())
    painted[-1].last = True  # dicts keep the submit order
    return painted


def _read(ws: Any, frames: dict[str, Frame], order: list[str], live: Any, timeout: float) -> None:
    import requests

    try:
        event = json.loads(ws.recv(timeout=timeout))
    except TimeoutError:
        return
    frame = frames.get(event.get("job_id"))
    if frame is None:
        return
    kind = event["type"]
    if kind == "started" and event["loading_model"] is None:
        order.append(frame.job_id)
    elif kind == "result":
        requests.get(live.url + event["url"], timeout=60).raise_for_status()
        frame.downloaded = now()
    elif kind in ("finished", "cancelled", "failed"):
        frame.ended = kind
        frame.reason = event.get("reason")


#: Painting pace against one frame's engine time: slower than frames (every frame
#: finishes), and faster (frames go stale and are superseded).
PACES = {"slower": 1.5, "faster": 0.5}


def run(profile: Profile, json_path: Path | None = None) -> Report:
    from modelkit.loras import write_test_lora

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_test_lora(root / "loras", LORA, seed=1, scale=0.2)
        engine = TimedEngine(make_engine([root]))
        warm_up(engine.engine, profile)
        with (
            reporting("9. Live painting", profile, json_path) as report,
            live_server(engine) as live,
        ):
            paint(live, profile, interval=0.0, count=1)  # one frame alone
            frame_time = engine.last_call().seconds
            report.ms("one frame's engine time (img2img, LCM, 4 of 8 steps)", frame_time)
            for pace, factor in PACES.items():
                frames: list[Frame] = []
                for _ in range(profile.repeats):
                    engine.calls.clear()
                    painted = paint(live, profile, interval=frame_time * factor)
                    _match_calls(painted, engine)
                    frames += painted
                _report(report, pace, factor, frames)
    return report


def _match_calls(frames: list[Frame], engine: TimedEngine) -> None:
    """Each started frame's engine time (frames start in the order engine calls do)."""
    for frame in frames:
        if frame.started_order is not None:
            frame.engine_seconds = engine.calls[frame.started_order].seconds


def _report(report: Report, pace: str, factor: float, frames: list[Frame]) -> None:
    ratios = [
        (frame.downloaded - frame.submitted) / frame.engine_seconds
        for frame in frames
        if frame.ended == "finished" and frame.downloaded is not None and frame.engine_seconds
    ]
    lasts = [
        frame.downloaded - frame.submitted
        for frame in frames
        if frame.last and frame.downloaded is not None
    ]
    replaced = sum(f.reason == "superseded" and f.started_order is None for f in frames)
    stopped = sum(f.reason == "superseded" and f.started_order is not None for f in frames)
    title = f"{pace} ({factor:g} frame apart)"
    report.add(
        Figure(
            f"{title}: finished, submit -> PNG / engine time",
            median(ratios),
            note=f"median of {len(ratios)}",
        )
    )
    report.ms(f"{title}: last state, submit -> PNG", median(lasts))
    report.add(
        Figure(
            f"{title}: frames sent",
            float(len(frames)),
            "frames",
            note=f"{len(ratios)} finished, {replaced} replaced waiting, {stopped} stopped running",
        )
    )


def main(argv: list[str] | None = None) -> int:
    standard_main(__doc__ or "", run, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
