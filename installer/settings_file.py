"""Writes the server's settings TOML without ever overwriting a user's edits.

The file is ours while its text is exactly what we last wrote (its sha256 is in the
manifest): then a re-run may refresh it. Once someone edits it, it is theirs: a re-run
only adds keys that are missing and changes no value. Standard library only, and
Python 3.10 has no tomllib, so this writes TOML by hand and reads only key names.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from installer.manifest import SettingsEntry

Value = str | int | list[str]

_KEY = re.compile(r"""^\s*([A-Za-z0-9_-]+|"[^"]*")\s*=""")
_TABLE = re.compile(r"^\s*\[")


@dataclass(frozen=True)
class Outcome:
    action: str  # "created" | "updated" | "unchanged" | "merged" | "kept"
    entry: SettingsEntry | None  # what the manifest should remember
    added_keys: tuple[str, ...] = ()


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _toml_value(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        if not value:
            return "[]"
        items = "".join(f"    {_toml_value(item)},\n" for item in value)
        return "[\n" + items + "]"
    return json.dumps(str(value), ensure_ascii=False)  # JSON escapes are valid TOML


def render(values: dict[str, Value]) -> str:
    lines = [
        "# Krita Diffusers server settings, written by the installer.",
        "# Edit freely: once you change this file, re-running the installer keeps your",
        "# values and only adds settings that are missing.",
        "",
    ]
    lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def top_level_keys(text: str) -> set[str]:
    keys: set[str] = set()
    for line in text.splitlines():
        if _TABLE.match(line):
            break
        if match := _KEY.match(line):
            keys.add(match.group(1).strip('"'))
    return keys


def _insert_keys(text: str, extra: dict[str, Value]) -> str:
    """Put new keys before the first [table] (top-level keys must come first)."""
    block = "".join(f"{key} = {_toml_value(value)}\n" for key, value in extra.items())
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if _TABLE.match(line):
            return "".join(lines[:i]) + block + "\n" + "".join(lines[i:])
    if text and not text.endswith("\n"):
        text += "\n"
    return text + block


def _write(path: Path, text: str, private: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".kd-tmp")
    temp.write_text(text, encoding="utf-8")
    if private:
        os.chmod(temp, 0o600)  # it may hold a token
    os.replace(temp, path)


def apply(path: Path, values: dict[str, Value], recorded: SettingsEntry | None) -> Outcome:
    """Create, refresh (if still ours) or merge missing keys into the settings file."""
    desired = render(values)
    private = "token" in values
    if not path.exists():
        _write(path, desired, private)
        return Outcome("created", SettingsEntry(str(path), sha256(desired)))
    current = path.read_text(encoding="utf-8")
    ours = recorded is not None and recorded.sha256 == sha256(current)
    if current == desired:  # our exact text: ours, whatever the manifest says
        return Outcome("unchanged", SettingsEntry(str(path), sha256(desired)))
    if ours:
        _write(path, desired, private)
        return Outcome("updated", SettingsEntry(str(path), sha256(desired)))
    missing = {k: v for k, v in values.items() if k not in top_level_keys(current)}
    if not missing:
        return Outcome("kept", None)
    _write(path, _insert_keys(current, missing), private)
    return Outcome("merged", None, tuple(missing))
