"""The plugin's only network code: REST calls on daemon threads and the event stream
in its own thread, both handing results to the GUI thread through Qt signals.

Why this shape: Krita freezes if its GUI thread waits on a socket, so nothing here
blocks the caller. Every call takes plain callbacks that run later on the GUI thread.
The event stream reconnects by itself with a growing pause (0.5 s up to 5 s) and
announces each fresh connection. It always asks to resume, so a server of protocol 2
or later first sends the state of each job of this client (`state` events), and the
docker reconciles the jobs whose events it missed (`resume.py`; `GET /v1/jobs/{id}`
for an older server).
"""

from __future__ import annotations

import base64
import enum
import threading
import uuid
from collections.abc import Callable
from typing import Any

import requests
from websockets.exceptions import InvalidStatus, WebSocketException
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from .background import Background, ErrorCallback, OkCallback
from .protocol import (
    RESUMING_PROTOCOL,
    JobRequest,
    ServerError,
    auth_headers,
    error_from_response,
    events_url,
    friendly_message,
    join_url,
    lost_job_status,
    parse_event,
    parse_models,
    server_protocol,
    unreachable_message,
)
from .qt import QObject, pyqtSignal, pyqtSlot

REQUEST_TIMEOUT = 30.0  # seconds; a POST with a large region can take a while
HEALTH_TIMEOUT = 5.0
PREPROCESS_TIMEOUT = 180.0  # a depth estimate of a large region on a CPU server
FIRST_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 5.0
MAX_FRAME_BYTES = 32 * 1024 * 1024


class ConnectionState(str, enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    UNREACHABLE = "unreachable"
    REFUSED = "refused"  # reachable, but the token was not accepted


class Unreachable(Exception):
    """No answer from the server; the message says where it was looked for."""


def describe_failure(exc: Exception) -> str:
    """A request's failure in words for the artist."""
    if isinstance(exc, ServerError):
        return friendly_message(exc)
    if isinstance(exc, Unreachable):
        return str(exc)
    return f"Something went wrong: {exc}"


class ServerClient(QObject):
    """Talks to one server (URL + token) for every docker of this Krita: one client id,
    one event stream (see `core.PluginCore`). Implements `client_api.JobClient`."""

    state_changed = pyqtSignal(object, str)  # ConnectionState, a sentence for the artist
    health_changed = pyqtSignal(object)  # the /v1/health dict
    models_changed = pyqtSignal(object)  # protocol.ModelList
    samplers_changed = pyqtSignal(list)
    event_received = pyqtSignal(object)  # protocol.Event
    reconnected = pyqtSignal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.client_id = uuid.uuid4().hex
        self.url = ""
        self.token = ""
        self.state = ConnectionState.CONNECTING
        self.state_text = "Connecting…"
        self.health: dict[str, Any] = {}
        self.network_threads: set[threading.Thread] = set()  # who ran network code (tests)
        self._requests = Background(slots=4, describe=describe_failure)
        self._stop: threading.Event | None = None
        self.state_changed.connect(self._remember_state)
        self.health_changed.connect(self._remember_health)

    # configuration and the event stream

    def configure(self, url: str, token: str) -> None:
        """Point at a server; restarts the event stream when anything changed."""
        url = url.strip().rstrip("/")
        if (url, token) == (self.url, self.token) and self._stop is not None:
            return
        self.url, self.token = url, token
        if self._stop is not None:
            self.start()

    def start(self) -> None:
        self.stop()
        stop = threading.Event()
        self._stop = stop
        thread = threading.Thread(
            target=self._stream,
            args=(self.url, self.token, stop),
            name="krita-diffusers-events",
            daemon=True,
        )
        thread.start()

    def stop(self) -> None:
        """Ends the event stream; its thread notices within half a second."""
        if self._stop is not None:
            self._stop.set()
            self._stop = None

    def reconnect_now(self) -> None:
        if self._stop is not None:
            self.start()

    @property
    def resumes(self) -> bool:
        """The connected server sends the state of this client's jobs each time the
        event stream (re)connects (protocol 2 and later)."""
        return server_protocol(self.health) >= RESUMING_PROTOCOL

    @property
    def protocol(self) -> int:
        """The connected server's protocol version (1 before the first answer): what
        decides which optional fields a request may carry."""
        return server_protocol(self.health)

    @pyqtSlot(object, str)
    def _remember_state(self, state: ConnectionState, text: str) -> None:
        self.state = state
        self.state_text = text

    @pyqtSlot(object)
    def _remember_health(self, health: dict[str, Any]) -> None:
        self.health = health

    def _emit(self, stop: threading.Event, signal: str, *args: object) -> None:
        """Emit by name: even looking a signal up fails once Qt deleted the client."""
        if stop.is_set():
            return
        try:
            getattr(self, signal).emit(*args)
        except RuntimeError:  # the client was deleted while Krita closes
            stop.set()

    def _stream(self, url: str, token: str, stop: threading.Event) -> None:
        """Event-stream thread: health, models, samplers, then frames until the
        connection drops; then wait and try again until stopped."""
        delay = FIRST_RETRY_DELAY
        while not stop.is_set():
            self._emit(stop, "state_changed", ConnectionState.CONNECTING, f"Connecting to {url}…")
            try:
                health = self._request(url, token, "GET", "/v1/health", timeout=HEALTH_TIMEOUT)
                models = parse_models(self._request(url, token, "GET", "/v1/models"))
                samplers = self._request(url, token, "GET", "/v1/samplers")
                with self._open_events(url, token) as socket:
                    delay = FIRST_RETRY_DELAY  # connected: the next drop retries quickly
                    self._emit(stop, "health_changed", health if isinstance(health, dict) else {})
                    self._emit(stop, "models_changed", models)
                    self._emit(stop, "samplers_changed", [str(s) for s in samplers or []])
                    text = describe_server(health)
                    self._emit(stop, "state_changed", ConnectionState.CONNECTED, text)
                    self._emit(stop, "reconnected")
                    self._receive(socket, stop)
            except ServerError as exc:
                state = (
                    ConnectionState.REFUSED
                    if exc.status in (401, 403)
                    else ConnectionState.UNREACHABLE
                )
                self._emit(stop, "state_changed", state, friendly_message(exc))
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in (401, 403):
                    text = "The server refused the token. Put the server's token in the settings."
                    self._emit(stop, "state_changed", ConnectionState.REFUSED, text)
                else:
                    self._emit(
                        stop,
                        "state_changed",
                        ConnectionState.UNREACHABLE,
                        refused_stream(url, status),
                    )
            except (Unreachable, OSError, WebSocketException, TimeoutError):
                self._emit(
                    stop, "state_changed", ConnectionState.UNREACHABLE, unreachable_message(url)
                )
            except Exception as exc:  # never let the thread die: the plugin would go deaf
                text = f"Lost the server's event stream ({exc}); retrying."
                self._emit(stop, "state_changed", ConnectionState.UNREACHABLE, text)
            stop.wait(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY)

    def _open_events(self, url: str, token: str) -> ClientConnection:
        self.network_threads.add(threading.current_thread())
        return ws_connect(
            events_url(url, self.client_id),
            additional_headers=auth_headers(token),
            open_timeout=HEALTH_TIMEOUT,
            close_timeout=1,
            max_size=MAX_FRAME_BYTES,
        )

    def _receive(self, socket: ClientConnection, stop: threading.Event) -> None:
        """Frames until stopped; a dropped connection raises out of here."""
        while not stop.is_set():
            try:
                frame = socket.recv(timeout=0.5)
            except TimeoutError:
                continue
            event = parse_event(frame)
            if event is not None:
                self._emit(stop, "event_received", event)

    # REST calls, each on a daemon thread (background.py)

    def _request(
        self,
        url: str,
        token: str,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        timeout: float = REQUEST_TIMEOUT,
        raw: bool = False,
    ) -> Any:
        """One HTTP call; runs only in worker threads (recorded so tests can check)."""
        self.network_threads.add(threading.current_thread())
        target = join_url(url, path)
        try:
            response = requests.request(
                method, target, json=body, headers=auth_headers(token), timeout=timeout
            )
        except requests.RequestException as exc:
            raise Unreachable(unreachable_message(url)) from exc
        if response.status_code >= 400:
            raise error_from_response(response.status_code, response.text)
        if raw:
            return response.content
        try:
            return response.json()
        except ValueError as exc:
            raise ServerError(
                response.status_code,
                "bad_response",
                "The server sent an answer the plugin cannot read.",
            ) from exc

    def _run(
        self, work: Callable[[], object], on_ok: OkCallback | None, on_error: ErrorCallback | None
    ) -> None:
        self._requests.run(work, on_ok, on_error)

    def submit(
        self, prepare: Callable[[], JobRequest], on_ok: OkCallback, on_error: ErrorCallback
    ) -> None:
        """POST a job. `prepare` builds the request in the worker (PNG encoding of a
        large region should not stall the GUI either); `on_ok` gets the 202 body."""
        url, token, client_id = self.url, self.token, self.client_id

        def work() -> object:
            request = prepare()
            request.client_id = client_id
            return self._request(url, token, "POST", "/v1/jobs", request.body())

        self._run(work, on_ok, on_error)

    def cancel(
        self, job_id: str, on_ok: OkCallback | None = None, on_error: ErrorCallback | None = None
    ) -> None:
        url, token = self.url, self.token
        self._run(
            lambda: self._request(url, token, "DELETE", f"/v1/jobs/{job_id}", raw=True),
            on_ok,
            on_error,
        )

    def job_status(
        self, job_id: str, on_ok: OkCallback, on_error: ErrorCallback | None = None
    ) -> None:
        url, token = self.url, self.token

        def work() -> object:
            try:
                return self._request(url, token, "GET", f"/v1/jobs/{job_id}")
            except ServerError as exc:
                if exc.code != "job_not_found":
                    raise
                # a restarted server forgot the job: report it failed, not pending forever
                return lost_job_status(job_id)

        self._run(work, on_ok, on_error)

    def fetch(self, path: str, on_ok: OkCallback, on_error: ErrorCallback | None = None) -> None:
        """GET a result (a URL relative to the server root) as bytes."""
        url, token = self.url, self.token
        self._run(lambda: self._request(url, token, "GET", path, raw=True), on_ok, on_error)

    def preprocess(
        self,
        mode: str,
        prepare: Callable[[], bytes],
        on_ok: OkCallback,
        on_error: ErrorCallback,
    ) -> None:
        """A control image made from a picture (`POST /v1/preprocess`), at the
        picture's own size, so it lands exactly where the picture came from."""
        url, token = self.url, self.token

        def work() -> object:
            picture = base64.b64encode(prepare()).decode("ascii")
            body = {"mode": mode, "image": picture}
            path = "/v1/preprocess"
            return self._request(url, token, "POST", path, body, timeout=PREPROCESS_TIMEOUT)

        self._run(work, on_ok, on_error)

    def probe_health(
        self, url: str, token: str, on_ok: OkCallback, on_error: ErrorCallback
    ) -> None:
        """One health check against any URL (the managed server waits with this)."""
        self._run(
            lambda: self._request(url, token, "GET", "/v1/health", timeout=HEALTH_TIMEOUT),
            on_ok,
            on_error,
        )


def refused_stream(url: str, status: int) -> str:
    """The server answers HTTP but its event stream was refused (a proxy that does not
    pass WebSockets, or something else on that port)."""
    return (
        f"The server at {url} answered, but its event stream (WebSocket /v1/events) was "
        f"refused with HTTP {status}. If it is behind a proxy, let WebSockets through; "
        "the plugin keeps trying."
    )


def describe_server(health: object) -> str:
    """ "Connected: cuda (float16)" from the health answer."""
    if not isinstance(health, dict):
        return "Connected"
    device = health.get("device") or "unknown device"
    dtype = health.get("dtype")
    return f"Connected: {device} ({dtype})" if dtype else f"Connected: {device}"
