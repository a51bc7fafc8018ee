"""A loopback HTTP file server with Range support and a switch to cut connections.

Python's http.server ignores Range; downloads must be tested against a server that
resumes, and one that drops the connection mid-body, as real mirrors do.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Behaviour:
    files: dict[str, bytes] = field(default_factory=dict)
    cut_after: int | None = None  # send this many body bytes of the next response, then close
    ranges_seen: list[str | None] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    behaviour: Behaviour

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        data = self.behaviour.files.get(self.path)
        header = self.headers.get("Range")
        self.behaviour.ranges_seen.append(header)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = int(header.split("=")[1].split("-")[0]) if header else 0
        if start >= len(data):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.end_headers()
            return
        body = data[start:]
        self.send_response(206 if header else 200)
        if header:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut, self.behaviour.cut_after = self.behaviour.cut_after, None
        self.wfile.write(body if cut is None else body[:cut])
        self.wfile.flush()
        if cut is not None:
            self.close_connection = True


class RangeServer:
    def __init__(self) -> None:
        self.behaviour = Behaviour()
        handler = type("Handler", (_Handler,), {"behaviour": self.behaviour})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> RangeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
