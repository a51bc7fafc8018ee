"""A1111's "infotext" (the PNG `parameters` text): edits and parsing.

The engine writes it (kd_server.pngmeta); this layer adjusts it where A1111's answer
differs (the final size after pasting an inpainted region back, the inpaint settings,
the prompt as sent, hashes: see metadata.py) and parses it for `png-info`, into the
keys A1111's parser produces.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
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


def quote(value: str) -> str:
    """A value as A1111 writes it: JSON-quoted (non-ASCII kept) when it holds a comma,
    a colon or a line break, which would otherwise end or split the pair."""
    if any(mark in value for mark in (",", ":", "\n")):
        return json.dumps(value, ensure_ascii=False)
    return value


@dataclass
class Infotext:
    """An infotext taken apart: the two prompts and the ordered `key: value` pairs."""

    prompt: str
    negative_prompt: str
    pairs: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> Infotext:
        prompt, negative, line = split(text)
        return cls(prompt, negative, pairs(line))

    def get(self, key: str) -> str | None:
        return next((value for name, value in self.pairs if name == key), None)

    def set(self, key: str, value: str, before: str | None = None) -> None:
        """Replace `key`'s value in place; a new key goes before `before` (or last)."""
        for index, (name, _) in enumerate(self.pairs):
            if name == key:
                self.pairs[index] = (key, value)
                return
        keys = [name for name, _ in self.pairs]
        index = keys.index(before) if before in keys else len(self.pairs)
        self.pairs.insert(index, (key, value))

    def drop(self, key: str) -> None:
        self.pairs = [(name, value) for name, value in self.pairs if name != key]

    def render(self) -> str:
        head = [self.prompt] + (
            [f"{_NEGATIVE} {self.negative_prompt}"] if self.negative_prompt else []
        )
        body = ", ".join(f"{key}: {quote(value)}" for key, value in self.pairs)
        return "\n".join([*head, body])


def amend(text: str, size: tuple[int, int] | None, extra: tuple[tuple[str, str], ...]) -> str:
    """Set "Size" to the final picture's and append `extra` pairs (keys not yet there)."""
    info = Infotext.parse(text)
    if size is not None and info.get("Size") is not None:
        info.set("Size", f"{size[0]}x{size[1]}")
    for key, value in extra:
        if info.get(key) is None:
            info.set(key, value)
    return info.render()
