"""One error shape for every failure: `{"error": {"code": "...", "message": "..."}}`.

Clients (the Krita plugin, curl users) branch on `code` and show `message` to a
person, so messages say what to change. Validation errors are reworded from
pydantic's into "field: rule" sentences. Anything unexpected becomes a 500 with a
generic message; the traceback goes to the server log, never to the client.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kd_server.generation import EngineError, EngineErrorCode

log = logging.getLogger(__name__)

#: HTTP status for engine errors raised while a job is submitted (`engine.check`).
ENGINE_STATUS: dict[EngineErrorCode, int] = {
    EngineErrorCode.MODEL_NOT_FOUND: 404,
    EngineErrorCode.LORA_NOT_FOUND: 404,
    EngineErrorCode.UPSCALER_NOT_FOUND: 404,
    EngineErrorCode.UPSCALER_UNUSABLE: 422,
    EngineErrorCode.SAMPLER_NOT_FOUND: 422,
    EngineErrorCode.MODEL_UNUSABLE: 422,
    EngineErrorCode.LORA_UNUSABLE: 422,
    EngineErrorCode.INVALID_INPUT: 422,
    EngineErrorCode.CONTROL_MISMATCH: 422,
    EngineErrorCode.PREPROCESSOR_UNAVAILABLE: 422,
    EngineErrorCode.OUT_OF_MEMORY: 503,
    EngineErrorCode.INTERNAL: 500,
}


class ApiError(StarletteHTTPException):
    """An error with a stable `code` and a message for a person.

    It subclasses Starlette's HTTPException so that it also passes through the
    request-body reading of FastAPI (used by the body size limit).
    """

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status_code, detail=message, headers=dict(headers or {}))
        self.code = code
        self.message = message


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def error_response(
    status_code: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status_code, headers=headers)


# ------------------------------------------------------------------ validation wording


def field_name(loc: Sequence[Any]) -> str:
    """("body", "loras", 0, "weight") -> "loras[0].weight"."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    if not parts:
        return "body"
    name = ""
    for part in parts:
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name += f".{part}" if name else str(part)
    return name


_RULES: dict[str, str] = {
    "missing": "is required",
    "extra_forbidden": "is not a known field (check its spelling)",
    "less_than_equal": "must be at most {le}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "greater_than": "must be greater than {gt}",
    "multiple_of": "must be a multiple of {multiple_of}",
    "string_too_long": "must be at most {max_length} characters long",
    "string_too_short": "must be at least {min_length} characters long",
    "too_long": "must have at most {max_length} items",
    "too_short": "must have at least {min_length} items",
    "string_pattern_mismatch": "has characters that are not allowed (pattern {pattern})",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "list_type": "must be a list",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "dict_type": "must be an object",
    "enum": "must be one of {expected}",
    "literal_error": "must be one of {expected}",
    "json_invalid": "is not valid JSON ({error})",
    "json_type": "must be JSON",
}


def describe_error(error: Mapping[str, Any]) -> str:
    """One pydantic error as "field: rule"."""
    kind = str(error.get("type", ""))
    ctx = {key: _plain(value) for key, value in dict(error.get("ctx") or {}).items()}
    loc = error.get("loc", ())
    if kind == "json_invalid":
        loc = ("body",)
    if kind == "value_error":
        rule = str(error.get("msg", "")).removeprefix("Value error, ")
    elif kind in _RULES:
        try:
            rule = _RULES[kind].format(**ctx)
        except (KeyError, IndexError):
            rule = str(error.get("msg", "is not valid"))
    else:
        message = str(error.get("msg", "is not valid"))
        rule = message[:1].lower() + message[1:]
    return f"{field_name(loc)}: {rule}"


def _plain(value: Any) -> Any:
    """10.0 -> 10, so limits read like the documentation."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def describe_errors(errors: Sequence[Mapping[str, Any]]) -> str:
    sentences = list(dict.fromkeys(describe_error(e) for e in errors))
    return "; ".join(sentences) + "."


# ------------------------------------------------------------------------- handlers


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status_code, exc.code, exc.message, exc.headers)


async def _engine_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EngineError)
    return error_response(ENGINE_STATUS.get(exc.code, 500), exc.code.value, exc.message)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    content_type = request.headers.get("content-type", "")
    whole_body = any(tuple(e.get("loc", ())) == ("body",) for e in exc.errors())
    if whole_body and request.method == "POST" and "json" not in content_type:
        # curl -d sends a form by default; say so instead of "body: must be an object"
        message = "body: must be a JSON object sent with 'Content-Type: application/json'."
        return error_response(422, "invalid_request", message)
    return error_response(422, "invalid_request", describe_errors(exc.errors()))


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


#: FastAPI's bare 400 for a body that cannot be parsed at all (bytes that are not UTF-8,
#: nesting deeper than the parser's recursion limit, a number with thousands of digits).
_UNPARSABLE_BODY = "There was an error parsing the body"
_UNPARSABLE_MESSAGE = (
    "body: cannot be read as JSON: send a JSON object as UTF-8 text with "
    "'Content-Type: application/json' (no deep nesting, no numbers thousands of digits long)."
)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == _UNPARSABLE_BODY:
        # a bad body is a 422 invalid_request like any other (docs/protocol.md)
        return error_response(422, "invalid_request", _UNPARSABLE_MESSAGE)
    if exc.status_code == 404:
        message = f"There is no endpoint {request.url.path}; the API lives under /v1 (see /docs)."
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}."
    else:
        message = str(exc.detail)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, message, exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("Unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(
        500,
        "internal_error",
        "The server hit an unexpected error; its log has the details.",
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(EngineError, _engine_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
