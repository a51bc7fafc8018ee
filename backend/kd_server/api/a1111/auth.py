"""Auth of `/sdapi/v1`: the server's token, as a Bearer token or as HTTP Basic.

A1111 protects its API with `--api-auth user:password` (HTTP Basic), and its client
libraries send exactly that. Here the password is the server's token and the user
name is not checked (any name, e.g. `krita`), so one secret protects both APIs and a
script only needs `username=<anything>, password=<token>`. Without a token (the
loopback default) everything passes, like v1.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from starlette.requests import HTTPConnection

from kd_server.api.auth import token_problem
from kd_server.api.errors import ApiError
from kd_server.api.services import ServicesDep

BASIC_MESSAGE = (
    "This server requires its token: send 'Authorization: Bearer <token>', or HTTP Basic "
    "auth with any user name and the token as the password."
)
WRONG_BASIC_MESSAGE = "The password is wrong: use the token the server was started with."


def _basic_password(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return ""
    return decoded.partition(":")[2]


def require_sdapi_auth(connection: HTTPConnection, services: ServicesDep) -> None:
    """Router dependency: 401 unless the token comes as Bearer or as Basic password."""
    expected = services.settings.token
    if expected is None:
        return
    header = connection.headers.get("authorization", "")
    password = _basic_password(header)
    if password is None:
        problem = token_problem(connection.headers, expected)
        if problem is None:
            return
        message = BASIC_MESSAGE if not header else problem
    elif hmac.compare_digest(password.encode("utf-8"), expected.encode("utf-8")):
        return
    else:
        message = WRONG_BASIC_MESSAGE
    raise ApiError(
        401,
        "unauthorized",
        message,
        headers={"WWW-Authenticate": 'Basic realm="krita-diffusers", charset="UTF-8"'},
    )
