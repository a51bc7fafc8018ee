"""Checks WebSocket events against the schemas the server publishes in /openapi.json.

The check is independent of how the server builds its messages: it reads the
OpenAPI document as a client author would and validates each received event with
jsonschema, refusing fields the schema does not name. Every event an API test
receives through `tests/api/live.py` goes through it, and `seen` records which
event types the run has checked.
"""

from __future__ import annotations

from typing import Any

import jsonschema

#: The event types checked so far in this test session.
seen: set[str] = set()
_validators: dict[str, tuple[jsonschema.protocols.Validator, dict[str, Any]]] = {}


def load(openapi: dict[str, Any]) -> None:
    """Read the `*Event` schemas of one server's OpenAPI document (once per session)."""
    if _validators:
        return
    components = openapi["components"]["schemas"]
    for name, schema in components.items():
        if not name.endswith("Event"):
            continue
        kind = schema["properties"]["type"].get("const") or schema["properties"]["type"]["enum"][0]
        root = {"$ref": f"#/components/schemas/{name}", "components": openapi["components"]}
        _validators[kind] = (jsonschema.Draft202012Validator(root), schema)


def event_types() -> set[str]:
    return set(_validators)


def problem(event: Any) -> str | None:
    """Why `event` breaks its published schema, or None when it keeps it."""
    if not _validators:
        return "no schemas loaded: call event_schemas.load(openapi) first"
    if not isinstance(event, dict) or event.get("type") not in _validators:
        return f"not an event of a published type: {event!r}"
    validator, schema = _validators[event["type"]]
    errors = sorted(validator.iter_errors(event), key=str)
    if errors:
        return f"{event['type']}: {errors[0].message} (in {event!r})"
    extra = set(event) - set(schema["properties"])
    if extra:
        return f"{event['type']}: fields the schema does not name: {sorted(extra)}"
    missing = set(schema.get("required", ())) - set(event)
    if missing:
        return f"{event['type']}: required fields missing: {sorted(missing)}"
    seen.add(event["type"])
    return None
