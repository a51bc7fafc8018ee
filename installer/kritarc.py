"""Turn a Python plugin on (or back off) in Krita's `kritarc`, touching nothing else.

kritarc is a Qt INI file with hundreds of keys, some with backslashes, `@Variant(...)`
values and case-sensitive names that configparser would mangle. So this edits lines:
only the one `enable_<plugin>=` line inside `[python]` changes, everything else is
written back byte for byte (line endings included). Krita itself rewrites kritarc on
exit, so the install should happen while Krita is closed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SECTION = "[python]"


@dataclass(frozen=True)
class Change:
    previous: str | None  # the value before (None: the key did not exist)
    changed: bool


def _key(plugin: str) -> str:
    return f"enable_{plugin}"


def _newline(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def _section_bounds(lines: list[str]) -> tuple[int, int] | None:
    """(index of the [python] header, index where the section ends)."""
    start = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if start is None and stripped == SECTION:
            start = i
        elif start is not None and stripped.startswith("[") and stripped.endswith("]"):
            return start, i
    return None if start is None else (start, len(lines))


def _find_key(lines: list[str], bounds: tuple[int, int], key: str) -> int | None:
    for i in range(bounds[0] + 1, bounds[1]):
        name, sep, _ = lines[i].partition("=")
        if sep and name.strip() == key:
            return i
    return None


def read_value(path: Path, plugin: str) -> str | None:
    if not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    bounds = _section_bounds(lines)
    if bounds is None:
        return None
    index = _find_key(lines, bounds, _key(plugin))
    return None if index is None else lines[index].partition("=")[2].strip()


def _write(path: Path, text: str) -> None:
    """Write beside and rename, so a crash never leaves half a kritarc."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".kd-tmp")
    temp.write_bytes(text.encode("utf-8", "surrogateescape"))
    os.replace(temp, path)


def set_value(path: Path, plugin: str, value: str | None) -> Change:
    """Set `enable_<plugin>` to `value`, or remove the key when `value` is None."""
    text = path.read_bytes().decode("utf-8", "surrogateescape") if path.is_file() else ""
    nl = _newline(text) if text else os.linesep if os.name == "nt" else "\n"
    lines = text.splitlines(keepends=True)
    bare = [line.rstrip("\r\n") for line in lines]
    key = _key(plugin)
    bounds = _section_bounds(bare)
    index = None if bounds is None else _find_key(bare, bounds, key)
    previous = None if index is None else bare[index].partition("=")[2].strip()
    if previous == value:
        return Change(previous, changed=False)
    if value is None:
        assert index is not None
        del lines[index]
    elif index is not None:
        lines[index] = f"{key}={value}{nl}"
    elif bounds is not None:
        end = bounds[1]
        while end - 1 > bounds[0] and not bare[end - 1].strip():
            end -= 1  # keep the blank line that separates sections after our key
        if end > 0 and not lines[end - 1].endswith(("\n", "\r")):
            lines[end - 1] += nl
        lines.insert(end, f"{key}={value}{nl}")
    else:
        if lines and not lines[-1].endswith(("\n", "\r")):
            lines[-1] += nl
        if lines and lines[-1].strip():
            lines.append(nl)
        lines += [f"{SECTION}{nl}", f"{key}={value}{nl}"]
    _write(path, "".join(lines))
    return Change(previous, changed=True)


def enable(path: Path, plugin: str) -> Change:
    return set_value(path, plugin, "true")
