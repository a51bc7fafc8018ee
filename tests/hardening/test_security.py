"""Security: the token guards every route and the WebSocket, whatever shape a bad
token takes; no route serves a file; a server beyond loopback needs a token; one
client cannot find another's jobs; the token never reaches the log."""

from __future__ import annotations

import base64
import re
import subprocess
import sys

import pytest
import requests
from starlette.routing import Mount
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from api.live import LiveServer
from hardening.figures import record
from hardening.support import HANG_GUARD_S, ROOT, TOKEN, ProcessServer, assert_error, wait_job
from kd_server.api.server import check_exposure
from kd_server.config import ConfigError, Settings

#: Every route of the app that a token guards, with a request that would otherwise work.
ROUTES = [
    ("GET", "/v1/health"),
    ("GET", "/v1/models"),
    ("GET", "/v1/samplers"),
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs/0123456789abcdef0123456789abcdef"),
    ("DELETE", "/v1/jobs/0123456789abcdef0123456789abcdef"),
    ("GET", "/v1/jobs/0123456789abcdef0123456789abcdef/images/0"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
]

BAD_HEADERS = {
    "missing": {},
    "wrong token": {"Authorization": "Bearer not-the-token"},
    "token prefix": {"Authorization": f"Bearer {TOKEN[:-1]}"},
    "token with suffix": {"Authorization": f"Bearer {TOKEN}x"},
    "scheme only": {"Authorization": "Bearer"},
    "scheme and space": {"Authorization": "Bearer   "},
    "no scheme": {"Authorization": TOKEN},
    "Basic": {"Authorization": "Basic " + base64.b64encode(f"user:{TOKEN}".encode()).decode()},
    "Token scheme": {"Authorization": f"Token {TOKEN}"},
    "two tokens": {"Authorization": f"Bearer not-it, Bearer {TOKEN}"},
    "latin-1 bytes": {"Authorization": "Bearer caf\xe9".encode("latin-1")},
    "other header": {"X-Api-Key": TOKEN},
    "cookie": {"Cookie": f"token={TOKEN}"},
}

_refused: list[str] = []


def _call(live: LiveServer, method: str, path: str, **kwargs) -> requests.Response:
    body = {"json": {"task": "txt2img", "steps": 1}} if method == "POST" else {}
    return requests.request(method, live.url + path, timeout=HANG_GUARD_S, **body, **kwargs)


@pytest.mark.parametrize("bad", sorted(BAD_HEADERS))
@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_refuses_a_bad_token(token_server: LiveServer, method, path, bad):
    reply = _call(token_server, method, path, headers=BAD_HEADERS[bad])
    assert_error(reply, 401, "unauthorized")
    assert reply.headers.get("WWW-Authenticate") == "Bearer"
    _refused.append(f"{method} {path}: {bad}")


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_token_in_the_query_string_is_not_accepted(token_server: LiveServer, method, path):
    for name in ("token", "access_token", "api_key"):
        reply = _call(token_server, method, f"{path}?{name}={TOKEN}")
        assert_error(reply, 401, "unauthorized")


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": f"Bearer {TOKEN}"},
        {"AUTHORIZATION": f"bearer {TOKEN}"},
        {"Authorization": f"BEARER {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}  "},
    ],
    ids=["lower-case header", "upper header, lower scheme", "upper scheme", "trailing space"],
)
def test_header_and_scheme_casing_follow_http(token_server: LiveServer, headers):
    """Header names and the auth scheme are case-insensitive in HTTP: these pass."""
    assert _call(token_server, "GET", "/v1/health", headers=headers).status_code == 200


def _ws_status(live: LiveServer, query: str, headers: dict[str, str]) -> int:
    url = live.url.replace("http://", "ws://") + "/v1/events" + query
    try:
        with connect(url, additional_headers=headers, open_timeout=HANG_GUARD_S):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


@pytest.mark.parametrize("bad", sorted(set(BAD_HEADERS) - {"latin-1 bytes"}))
def test_websocket_refuses_a_bad_token(token_server: LiveServer, bad):
    assert _ws_status(token_server, "?client_id=sec", BAD_HEADERS[bad]) == 401
    _refused.append(f"WS: {bad}")


def test_websocket_ignores_a_token_in_the_url(token_server: LiveServer):
    assert _ws_status(token_server, f"?client_id=sec&token={TOKEN}", {}) == 401
    headers = {"Authorization": f"bearer {TOKEN}"}
    assert _ws_status(token_server, "?client_id=sec", headers) == 101


# ------------------------------------------------------------- files and job ids

TRAVERSALS = [
    "/../../../../etc/passwd",
    "/v1/../../etc/passwd",
    "/v1/jobs/..%2f..%2f..%2fetc%2fpasswd",
    "/v1/jobs/%2e%2e/%2e%2e/etc/passwd/images/0",
    "/%2e%2e/%2e%2e/etc/passwd",
    "//etc/passwd",
    "/static/../../etc/passwd",
    "/docs/../../../etc/passwd",
    "/v1/jobs/x/images/0/../../../../../etc/passwd",
    "/etc/passwd",
    "/proc/self/environ",
    "/backend/kd_server/config.py",
    "/.git/config",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_no_route_serves_files(token_server: LiveServer, path):
    reply = token_server.get(path, allow_redirects=False)
    assert 400 <= reply.status_code < 500, (reply.status_code, reply.text[:200])
    assert "root:" not in reply.text and "KD_" not in reply.text and "[core]" not in reply.text


def test_the_app_mounts_no_file_directory(token_server: LiveServer):
    """Structural proof: every route is an API endpoint; nothing is a static mount."""
    app = token_server.running.server.kd_app
    assert not [route for route in app.routes if isinstance(route, Mount)]


def test_job_ids_are_random_and_jobs_are_not_listed(token_server: LiveServer):
    ids = []
    for _ in range(20):
        reply = token_server.post("/v1/jobs", json={"task": "txt2img", "steps": 1, "width": 64})
        if reply.status_code == 202:
            ids.append(reply.json()["job_id"])
            token_server.delete(f"/v1/jobs/{ids[-1]}")
    assert ids and len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) and i[12] == "4" for i in ids)  # uuid4
    assert_error(token_server.get("/v1/jobs"), 405)  # no listing route
    health = token_server.get("/v1/health").json()
    assert not any(i in str(health) for i in ids)


def test_another_client_cannot_see_a_job_without_its_id(token_server: LiveServer):
    job_id = token_server.submit(client_id="alice", steps=6)
    # bob is busy-polling everything a client can read while alice's job runs
    with token_server.events("bob") as bob:
        seen = []
        state = {"status": "queued"}
        while state["status"] not in ("finished", "failed", "cancelled"):
            seen.append(str(token_server.get("/v1/health").json()))
            seen.append(token_server.get("/v1/models").text)
            state = token_server.get(f"/v1/jobs/{job_id}").json()
        try:
            while True:
                seen.append(bob.recv(timeout=0.3))
        except TimeoutError:
            pass
    assert not any(job_id in text for text in seen)
    assert wait_job(token_server.url, token_server.headers, job_id)["status"] == "finished"


# ------------------------------------------------------------------- exposure


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "10.0.0.1", "example.com"])
def test_non_loopback_bind_without_a_token_is_refused(host):
    with pytest.raises(ConfigError, match="without a token"):
        check_exposure(Settings(host=host))
    check_exposure(Settings(host=host, token="t"))  # with a token it may


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.8.9.10"])
def test_loopback_bind_needs_no_token(host):
    check_exposure(Settings(host=host))


def test_cli_refuses_to_serve_on_all_interfaces_without_a_token(tmp_path):
    env = {"KD_CONFIG": str(tmp_path / "none.toml"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "kd_server.cli", "serve", "--host", "0.0.0.0", "--port", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "without a token" in result.stderr, result.stderr[-1000:]


# ----------------------------------------------------------------------- logs


def test_the_log_never_contains_the_token(process_server: ProcessServer):
    """Runs after the load test on the same process, so its log holds all that traffic;
    here a client also puts the token where it does not belong (URLs, a model name)."""
    server = process_server
    url = server.url
    requests.get(f"{url}/v1/health?token={TOKEN}", timeout=30)
    requests.get(f"{url}/v1/jobs/{TOKEN}", headers=server.headers, timeout=30)
    requests.post(
        f"{url}/v1/jobs", json={"task": "txt2img", "model": TOKEN}, headers=server.headers
    )
    requests.get(f"{url}/v1/{TOKEN}", headers={"Authorization": f"Token {TOKEN}"}, timeout=30)
    ws_url = url.replace("http://", "ws://") + f"/v1/events?client_id=x&token={TOKEN}"
    with pytest.raises(InvalidStatus):
        connect(ws_url, open_timeout=HANG_GUARD_S)
    with connect(
        url.replace("http://", "ws://") + "/v1/events?client_id=tok",
        additional_headers=server.headers,
        open_timeout=HANG_GUARD_S,
    ):
        pass
    log = server.log_text()  # logging flushes each line
    assert "GET /v1/health?token=[token]" in log  # the access log ran, and was scrubbed
    assert TOKEN not in log
    record("security_bad_token_requests_refused", len(_refused))
