"""Bearer-token auth on every route and on the WebSocket; refusal to expose without one."""

from __future__ import annotations

import pytest
import requests
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from api.live import LiveServer, receive_until_done
from kd_server.api.server import check_exposure
from kd_server.config import ConfigError, Settings

TOKEN = "s3cret-token"


@pytest.fixture
def secured(server_factory) -> LiveServer:
    return server_factory(token=TOKEN)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/v1/health"),
        ("get", "/v1/models"),
        ("get", "/v1/samplers"),
        ("post", "/v1/jobs"),
        ("get", "/v1/jobs/abc"),
        ("delete", "/v1/jobs/abc"),
        ("get", "/v1/jobs/abc/images/0"),
        ("get", "/openapi.json"),
        ("get", "/docs"),
    ],
)
def test_every_route_needs_the_token(secured: LiveServer, method: str, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = requests.request(method, secured.url + path, headers=headers, timeout=30)
        assert response.status_code == 401, (headers, response.text)
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_the_token_opens_everything(secured: LiveServer) -> None:
    assert secured.get("/v1/health").status_code == 200
    assert secured.get("/openapi.json").status_code == 200
    with secured.events("auth-client") as ws:
        job_id = secured.submit(client_id="auth-client")
        assert receive_until_done(ws, job_id)[-1]["type"] == "finished"
    state = secured.get(f"/v1/jobs/{job_id}").json()
    assert secured.get(state["images"][0]["url"]).status_code == 200


@pytest.mark.parametrize("header", [None, "Bearer wrong"])
def test_websocket_needs_the_token(secured: LiveServer, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    with pytest.raises(InvalidStatus) as info:
        connect(f"{secured.ws_url}?client_id=x", additional_headers=headers, open_timeout=10)
    assert info.value.response.status_code == 401
    assert b"unauthorized" in info.value.response.body


def test_token_in_the_url_is_not_accepted(secured: LiveServer) -> None:
    with pytest.raises(InvalidStatus):
        connect(f"{secured.ws_url}?client_id=x&token={TOKEN}", open_timeout=10)


def test_without_token_no_header_is_needed(server: LiveServer) -> None:
    assert requests.get(server.url + "/v1/health", timeout=30).status_code == 200
    with connect(f"{server.ws_url}?client_id=open", open_timeout=10):
        pass


def test_websocket_needs_a_client_id(server: LiveServer) -> None:
    for query in ("", "?client_id=", "?client_id=has%20space"):
        with pytest.raises(InvalidStatus) as info:
            connect(server.ws_url + query, open_timeout=10)
        assert info.value.response.status_code == 422
        assert b"client_id" in info.value.response.body


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::"])
def test_exposed_host_without_token_is_refused(host: str) -> None:
    with pytest.raises(ConfigError, match="token"):
        check_exposure(Settings(host=host))
    with pytest.raises(ConfigError, match="token"):
        check_exposure(Settings(host=host, token=""))  # built in code, not by load_settings
    check_exposure(Settings(host=host, token=TOKEN))


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_loopback_without_token_is_fine(host: str) -> None:
    check_exposure(Settings(host=host))
