"""A1111's "infotext" (the PNG `parameters` text): small edits and parsing.

The engine writes it (kd_server.pngmeta); this layer adjusts it where A1111's answer
differs (the final size after pasting an inpainted region back, the inpaint settings)
and parses it for `png-info`, into the keys A1111's parser produces.
"""

from __future__ import annotations

import json
import re
from typing import Any

_PAIR = re.compile(r'\s*([\w][\w \-/+.()]*?):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)x(\d+)$")
_NEGATIVE = "Negative prompt:"


def split(text: str) -> tuple[str, str, str]:
    """(prompt, negative prompt, the key: value line); the last line holds the pairs
    when it parses into at least three of them, as A1111 decides it."""
    lines = text.strip().split("\n")
    params = ""
    if len(_PAIR.findall(lines[-1])) >= 3:
        params = lines.pop()
    prompt: list[str] = []
    negative: list[str] = []
    target = prompt
    for line in lines:
        if line.startswith(_NEGATIVE):
            target = negative
            line = line[len(_NEGATIVE) :].strip()
        target.append(line)
    return "\n".join(prompt), "\n".join(negative), params


def pairs(line: str) -> list[tuple[str, str]]:
    out = []
    for key, value in _PAIR.findall(line):
        value = value.strip()
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            try:
                value = json.loads(value)
            except ValueError:
                value = value[1:-1]
        out.append((key.strip(), value))
    return out


def parse(text: str) -> dict[str, Any]:
    """Infotext -> A1111's dictionary: "Prompt", "Negative prompt", every pair, and
    "Size" split into "Size-1" and "Size-2"."""
    if not text.strip():
        return {}
    prompt, negative, line = split(text)
    result: dict[str, Any] = {"Prompt": prompt, "Negative prompt": negative}
    for key, value in pairs(line):
        size = _SIZE.match(value)
        if size is not None:
            result[f"{key}-1"], result[f"{key}-2"] = size.group(1), size.group(2)
        else:
            result[key] = value
    return result


def _render_value(value: str) -> str:
    return (
        json.dumps(value) if ("," in value or ":" in value) and not value.startswith('"') else value
    )


def amend(text: str, size: tuple[int, int] | None, extra: tuple[tuple[str, str], ...]) -> str:
    """Set "Size" to the final picture's and append `extra` pairs (keys not yet there)."""
    prompt, negative, line = split(text)
    current = pairs(line)
    keys = {key for key, _ in current}
    updated = [
        (key, f"{size[0]}x{size[1]}" if key == "Size" and size is not None else value)
        for key, value in current
    ]
    updated += [(key, value) for key, value in extra if key not in keys]
    head = [prompt] + ([f"{_NEGATIVE} {negative}"] if negative else [])
    body = ", ".join(f"{key}: {_render_value(value)}" for key, value in updated)
    return "\n".join([*head, body])
