"""The client's event-stream thread against the real server: resuming on every
(re)connection, and behind a proxy that does not pass WebSockets (a common
reverse-proxy misconfiguration)."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from krita_diffusers.client import ConnectionState, ServerClient
from krita_diffusers.protocol import Event, EventType, JobRequest, Task

WAIT_MS = 60_000


class NoWebSocketProxy:
    """Forwards plain GETs to `upstream`; answers 502 to every WebSocket upgrade."""

    def __init__(self, upstream: str) -> None:
        self.upgrades = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                if self.headers.get("Upgrade", "").lower() == "websocket":
                    proxy.upgrades += 1
                    self._answer(502, b"Bad Gateway")
                    return
                try:
                    with urllib.request.urlopen(upstream + self.path, timeout=10) as reply:
                        self._answer(reply.status, reply.read(), "application/json")
                except urllib.error.HTTPError as exc:
                    self._answer(exc.code, exc.read(), "application/json")

            def _answer(self, status: int, body: bytes, kind: str = "text/plain") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(live_server):
    proxy = NoWebSocketProxy(live_server.url)
    yield proxy
    proxy.close()


def test_a_refused_event_stream_is_reported_and_retried(qtbot, proxy):
    client = ServerClient()
    states: list[tuple[ConnectionState, str]] = []
    client.state_changed.connect(lambda state, text: states.append((state, text)))
    client.configure(proxy.url, "")
    client.start()
    try:
        qtbot.waitUntil(lambda: client.state is ConnectionState.UNREACHABLE, timeout=WAIT_MS)
        # the thread lives on and tries again, rather than dying and going deaf
        qtbot.waitUntil(lambda: proxy.upgrades >= 2, timeout=WAIT_MS)
    finally:
        client.stop()
    text = next(text for state, text in states if state is ConnectionState.UNREACHABLE)
    assert "502" in text and "WebSocket" in text


def test_callback_errors_are_logged_but_closed_widgets_are_not(caplog):
    from krita_diffusers.background import call_unless_closed

    def deleted(_value):
        raise RuntimeError("wrapped C/C++ object of type QLabel has been deleted")

    def buggy(_value):
        raise ValueError("a real bug")

    with caplog.at_level("ERROR"):
        call_unless_closed(deleted, 1)
        assert caplog.records == []
        call_unless_closed(buggy, 1)  # must not raise into Qt's event loop
    assert "callback failed" in caplog.text and "a real bug" in caplog.text


def test_every_connection_resumes_with_the_state_of_this_clients_jobs(qtbot, live_server):
    """The stream asks to resume (`resume=true`): after a reconnection the real server
    first sends a `state` of each job this client sent, results included."""
    client = ServerClient()
    events: list[Event] = []
    client.event_received.connect(events.append)
    client.configure(live_server.url, "")
    client.start()
    try:
        qtbot.waitUntil(lambda: client.state is ConnectionState.CONNECTED, timeout=WAIT_MS)
        assert client.resumes  # the server's protocol is 2 or later
        accepted: list[dict] = []
        request = JobRequest(Task.TXT2IMG, "resumed", steps=1, width=64, height=64)
        client.submit(lambda: request, accepted.append, pytest.fail)
        qtbot.waitUntil(lambda: any(e.type is EventType.FINISHED for e in events), timeout=WAIT_MS)
        job_id = accepted[0]["job_id"]
        events.clear()
        client.reconnect_now()
        qtbot.waitUntil(lambda: any(e.type is EventType.STATE for e in events), timeout=WAIT_MS)
    finally:
        client.stop()
    state = next(event for event in events if event.type is EventType.STATE)
    assert state.job_id == job_id and state.record is not None
    assert state.record["status"] == "finished"
    assert [image["index"] for image in state.record["images"]] == [0]
