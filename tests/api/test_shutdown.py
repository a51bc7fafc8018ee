"""SIGTERM on a real `serve` process: the running job is cancelled, the client is
told (a `cancelled` event, then a 1001 close), and the process exits cleanly."""

from __future__ import annotations

import requests
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from api.live import recv_event
from support import event_schemas
from support.servers import ProcessServer


def test_sigterm_cancels_running_job_and_tells_clients(tmp_path) -> None:
    server = ProcessServer(tmp_path)
    server.start()
    try:
        event_schemas.load(requests.get(server.url + "/openapi.json", timeout=30).json())
        events_url = f"ws://127.0.0.1:{server.port}/v1/events?client_id=term"
        with connect(events_url, open_timeout=10) as ws:
            body = {"task": "txt2img", "prompt": "x", "steps": 150, "width": 256, "height": 256}
            submit = server.url + "/v1/jobs"
            running = requests.post(submit, json={**body, "client_id": "term"}, timeout=30)
            waiting = requests.post(submit, json={**body, "client_id": "term"}, timeout=30)
            events = []
            while not any(e["type"] == "progress" for e in events):
                events.append(recv_event(ws, 120))
            assert server.proc is not None
            server.proc.terminate()  # SIGTERM to the server process alone
            try:
                while True:
                    events.append(recv_event(ws, 60))
            except ConnectionClosed as closed:
                assert closed.rcvd is not None and closed.rcvd.code == 1001
        cancelled = {e["job_id"] for e in events if e["type"] == "cancelled"}
        assert cancelled == {running.json()["job_id"], waiting.json()["job_id"]}
        assert server.proc.wait(timeout=60) == 0
    finally:
        server.kill()
    assert "Traceback" not in server.log_text(), server.log_text()
