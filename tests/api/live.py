"""Helpers for the API tests: a real uvicorn server on a free loopback port in a
thread, small job bodies, test images, and event collection from a real WebSocket."""

from __future__ import annotations

import base64
import io
import json
import time
from dataclasses import dataclass, field
from typing import Any

import requests
from PIL import Image
from websockets.sync.client import ClientConnection, connect

from kd_server.api.server import ThreadedServer, serve_in_thread
from kd_server.config import Settings
from support import event_schemas

TERMINAL = ("finished", "failed", "cancelled")


@dataclass
class LiveServer:
    """The real server in a thread of the test process (`serve_in_thread`), with
    request helpers that send its token."""

    running: ThreadedServer
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def settings(self) -> Settings:
        return self.running.settings

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/v1/events"

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return requests.get(self.url + path, headers=headers, timeout=30, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return requests.post(self.url + path, headers=headers, timeout=30, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return requests.delete(self.url + path, headers=headers, timeout=30, **kwargs)

    def submit(self, **body: Any) -> str:
        response = self.post("/v1/jobs", json=job(**body))
        assert response.status_code == 202, response.text
        return str(response.json()["job_id"])

    def events(self, client_id: str, resume: bool = False, **kwargs: Any) -> ClientConnection:
        """The event stream of `client_id`; with `resume`, the state of each of its
        jobs comes first."""
        query = f"client_id={client_id}" + ("&resume=true" if resume else "")
        return connect(
            f"{self.ws_url}?{query}",
            additional_headers=self.headers,
            open_timeout=10,
            **kwargs,
        )

    def wait(self, job_id: str, timeout: float = 120) -> dict[str, Any]:
        """Poll until the job ends; the timeout only guards against a hang."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.get(f"/v1/jobs/{job_id}").json()
            if state["status"] in TERMINAL:
                return dict(state)
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} did not end")


def job(**overrides: Any) -> dict[str, Any]:
    """A small, fast job: 64x64, 2 steps, previews at every step."""
    body: dict[str, Any] = {
        "task": "txt2img",
        "prompt": "a red apple",
        "steps": 2,
        "width": 64,
        "height": 64,
        "preview_every": 1,
        "sampler": "Euler",
        "seed": 1234,
    }
    body.update(overrides)
    return body


def png_b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def picture(width: int = 64, height: int = 64) -> Image.Image:
    ramp = Image.linear_gradient("L")
    across = ramp.transpose(Image.Transpose.ROTATE_90)
    bands = [band.resize((width, height)) for band in (ramp, across, ramp.rotate(45))]
    return Image.merge("RGB", bands)


def square_mask(width: int = 64, height: int = 64) -> Image.Image:
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
    return mask


def recv_event(ws: ClientConnection, timeout: float) -> dict[str, Any]:
    """The next event, checked against the schemas the server publishes."""
    event = json.loads(ws.recv(timeout=timeout))
    problem = event_schemas.problem(event)
    assert problem is None, problem
    return dict(event)


def receive_until_done(ws: ClientConnection, job_id: str, timeout: float = 120) -> list[dict]:
    """This job's events up to and including its terminal one."""
    events: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = recv_event(ws, timeout)
        if event["job_id"] != job_id:
            continue
        events.append(event)
        if event["type"] in TERMINAL:
            return events
    raise AssertionError(f"no terminal event for {job_id}: {events}")


def start_server(settings: Settings, engine: Any, library: Any) -> LiveServer:
    running = serve_in_thread(settings, engine, library)
    headers = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
    live = LiveServer(running, headers)
    event_schemas.load(live.get("/openapi.json").json())
    return live


def stop_server(live: LiveServer) -> None:
    live.running.stop()
