"""Bearer-token authentication for every route and the WebSocket.

Off when no token is configured (the loopback default). Once a token is set, each
request must carry `Authorization: Bearer <token>`; the comparison is constant-time.
The WebSocket takes the token from the same header only, never from the URL: query
strings end up in access logs and browser history.
"""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers
from starlette.requests import HTTPConnection

from kd_server.api.errors import ApiError
from kd_server.api.services import ServicesDep

UNAUTHORIZED_MESSAGE = (
    "This server requires a token: send the header 'Authorization: Bearer <token>' "
    "with the token the server was started with."
)
WRONG_TOKEN_MESSAGE = "The token is wrong: use the token the server was started with."


def token_problem(headers: Headers, expected: str | None) -> str | None:
    """None when the request may pass, else the message explaining why not."""
    if expected is None:
        return None
    header = headers.get("authorization")
    if not header:
        return UNAUTHORIZED_MESSAGE
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return UNAUTHORIZED_MESSAGE
    if not hmac.compare_digest(value.strip().encode("utf-8"), expected.encode("utf-8")):
        return WRONG_TOKEN_MESSAGE
    return None


def require_token(connection: HTTPConnection, services: ServicesDep) -> None:
    """Router dependency: 401 unless the configured token is presented."""
    problem = token_problem(connection.headers, services.settings.token)
    if problem is not None:
        raise ApiError(401, "unauthorized", problem, headers={"WWW-Authenticate": "Bearer"})
