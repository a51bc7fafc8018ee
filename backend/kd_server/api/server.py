"""`serve(settings)`: run the API under uvicorn until SIGTERM or Ctrl-C.

Refuses to listen beyond loopback without a token. On shutdown it stops the queue
first (the running job is cancelled, queued ones too), lets every WebSocket client
receive its `cancelled` events and a close frame (1001), and only then lets uvicorn
close connections and exit.

`serve_in_thread` runs the same server inside another program, on a free port.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import uvicorn
from fastapi import FastAPI

from kd_server.config import ConfigError, Settings

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and names that only resolve to them (localhost)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def check_exposure(settings: Settings) -> None:
    if not settings.token and not is_loopback(settings.host):
        raise ConfigError(
            f"Refusing to listen on {settings.host} without a token: anyone on the network "
            "could use this GPU. Set one with --token, KD_TOKEN or token_file, or listen "
            "on 127.0.0.1."
        )


class KdServer(uvicorn.Server):
    """uvicorn's server, with our job shutdown ahead of its connection shutdown."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.kd_app = app
        self.stopped_by: list[int] = []

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """As uvicorn's, but a SIGTERM/Ctrl-C that shut us down cleanly is not re-raised
        afterwards: the CLI then exits with status 0 instead of dying by the signal."""
        with super().capture_signals():
            try:
                yield
            finally:
                self.stopped_by = list(self._captured_signals)
                self._captured_signals.clear()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await self.kd_app.state.services.shutdown()
        except Exception:
            log.exception("Stopping jobs during shutdown failed")
        await super().shutdown(sockets)


class RedactToken(logging.Filter):
    """Replaces the server's token in every log line with `[token]`.

    The server itself never logs the token, but a client may put it where it does not
    belong (`?token=...` in a URL ends up in the access log); logs get shared in bug
    reports, so the secret is scrubbed on its way to any handler.
    """

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        # Arguments are scrubbed one by one: uvicorn's access formatter unpacks them.
        record.msg = self._scrub(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(self._scrub(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: self._scrub(arg) for key, arg in record.args.items()}
        if record.name != "uvicorn.access" and self.token in record.getMessage():
            record.msg, record.args = record.getMessage().replace(self.token, "[token]"), ()
        return True

    def _scrub(self, value: Any) -> Any:
        return value.replace(self.token, "[token]") if isinstance(value, str) else value


#: Loggers whose handlers get the filter: ours (via the root) and uvicorn's own.
_LOGGERS = ("", "uvicorn", "uvicorn.access", "uvicorn.error")


def redact_token_in_logs(token: str | None) -> None:
    """Install `RedactToken` on every handler that may write a request's details."""
    if not token:
        return
    for name in _LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactToken) and f.token == token for f in handler.filters):
                handler.addFilter(RedactToken(token))


def make_server(settings: Settings, app: FastAPI, **config: Any) -> KdServer:
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        # Named rather than "auto": the optional Ray extra installs uvloop and
        # httptools, and the server must not change its event loop with it.
        "loop": "asyncio",
        "http": "h11",
        "log_level": "info",
        "timeout_graceful_shutdown": 10,
        "ws_ping_interval": 20.0,
        "ws_ping_timeout": 20.0,
        **config,
    }
    server = KdServer(uvicorn.Config(app, **options), app)  # Config sets up logging
    redact_token_in_logs(settings.token)
    return server


def serve(settings: Settings, preload: bool = False) -> int:
    """Run until interrupted; returns the process exit status."""
    from kd_server.api.app import create_app

    check_exposure(settings)
    app = create_app(settings)
    if preload:
        _preload(app)
    server = make_server(settings, app)
    server.run()
    return 0 if server.started else 1


def _preload(app: FastAPI) -> None:
    """Load the default checkpoint before serving, on every engine that runs jobs
    here. Ray replicas load theirs with their first job: the gateway's engine only
    checks requests and must not hold a checkpoint."""
    executor = app.state.executor
    if executor is None:
        engines = [app.state.services.engine]
    else:
        engines = [w.engine for w in executor.workers() if hasattr(w, "engine")]
        if not engines:
            log.info("The workers load the model with their first job (no preload).")
    for engine in engines:
        preload = getattr(engine, "preload", None)
        if callable(preload):
            preload()
        else:
            log.warning("This engine cannot preload; the model loads with the first job.")


@dataclass
class ThreadedServer:
    """A server running in a thread of this process: for programs that embed it
    (the benchmarks, the tests) and need it on a free port without a subprocess."""

    url: str
    server: KdServer
    thread: threading.Thread
    settings: Settings

    def stop(self, timeout: float = 30) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def serve_in_thread(
    settings: Settings,
    engine: Any = None,
    library: Any = None,
    start_timeout: float = 30,
    workers: Any = None,
    executor: Any = None,
) -> ThreadedServer:
    """Start the app on a free loopback port (settings.port is ignored) in a thread;
    `workers` or an `executor` (`kd_server.executors`) run its jobs when given."""
    from kd_server.api.app import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = replace(settings, host="127.0.0.1", port=port)
    app = create_app(settings, engine=engine, library=library, workers=workers, executor=executor)
    server = make_server(settings, app, log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    return ThreadedServer(f"http://127.0.0.1:{port}", server, thread, settings)
