"""GenerationRequest <-> bytes, so a queued job survives a restart of the server.

Generic over the request's dataclasses (read from their type hints), so a new input
added to a concern is stored without touching this module. Images are stored as
lossless PNG; everything else as JSON.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import io
import json
import types
import typing
from typing import Any

from PIL import Image

from kd_server.generation import GenerationRequest


class CodecError(ValueError):
    """Stored bytes that are not a request this server version can read."""


def encode_request(request: GenerationRequest) -> bytes:
    return json.dumps(_encode(request), separators=(",", ":")).encode("utf-8")


def decode_request(data: bytes) -> GenerationRequest:
    try:
        value = _decode(json.loads(data.decode("utf-8")), GenerationRequest)
    except (ValueError, TypeError, KeyError) as exc:
        raise CodecError(f"not a stored request: {exc}") from exc
    assert isinstance(value, GenerationRequest)
    return value


def _encode(value: Any) -> Any:
    if isinstance(value, Image.Image):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG", compress_level=1)
        return {"png": base64.b64encode(buffer.getvalue()).decode("ascii"), "mode": value.mode}
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_encode(item) for item in value]
    return value


def _decode(data: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return None if data is None else _decode(data, options[0])
    if origin is list:
        (item,) = typing.get_args(hint)
        return [_decode(entry, item) for entry in data]
    if hint is Image.Image:
        with Image.open(io.BytesIO(base64.b64decode(data["png"]))) as image:
            return image.convert(data["mode"])
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(data)
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint, _namespace())
        known = {f.name for f in dataclasses.fields(hint) if f.init}
        fields = {k: _decode(v, hints[k]) for k, v in data.items() if k in known}
        return typing.cast(Any, hint)(**fields)
    return data


def _namespace() -> dict[str, Any]:
    """Names the request's postponed annotations refer to."""
    from kd_server import generation

    return {**vars(generation), "Image": Image}
