"""Edit single keys of Krita's `kritarc` (enable the plugin, preset its settings),
touching nothing else.

kritarc is a Qt INI file with hundreds of keys, some with backslashes, `@Variant(...)`
values and case-sensitive names that configparser would mangle. So this edits lines:
only the one `key=` line inside its `[section]` changes, everything else is written
back byte for byte (line endings included). Krita itself rewrites kritarc on exit, so
the install should happen while Krita is closed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PYTHON = "python"


@dataclass(frozen=True)
class Change:
    previous: str | None  # the value before (None: the key did not exist)
    changed: bool


def enable_key(plugin: str) -> str:
    return f"enable_{plugin}"


_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
_UNESCAPES = {"s": " ", "t": "\t", "n": "\n", "r": "\r", "\\": "\\"}


def kconfig_string(value: str) -> str:
    r"""`value` as Krita reads it back from kritarc.

    Krita reads kritarc with KConfig (`Krita.readSetting`), not QSettings: quotes are
    kept literally, a backslash starts an escape (`\\`, `\n`, `\t`, `\r`, `\xNN`) and
    spaces at either end are trimmed unless written as `\s`.
    """
    out = []
    for char in value:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 32 or ord(char) == 127:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    text = "".join(out)
    if text.startswith(" "):
        text = "\\s" + text[1:]
    if text.endswith(" "):
        text = text[:-1] + "\\s"
    return text


def kconfig_value(raw: str) -> str:
    """The string KConfig makes of a raw kritarc value (the inverse of kconfig_string)."""
    out: list[str] = []
    i, raw = 0, raw.strip()
    while i < len(raw):
        char = raw[i]
        nxt = raw[i + 1] if i + 1 < len(raw) else ""
        if char != "\\" or not nxt:
            out.append(char)
            i += 1
        elif nxt in _UNESCAPES:
            out.append(_UNESCAPES[nxt])
            i += 2
        elif nxt == "x" and len(raw) >= i + 4:
            out.append(chr(int(raw[i + 2 : i + 4], 16)))
            i += 4
        else:  # KConfig keeps other escapes (`\;`, `\,`) as they are
            out.append(char)
            i += 1
    return "".join(out)


def _newline(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def _section_bounds(lines: list[str], section: str) -> tuple[int, int] | None:
    """(index of the section's header, index where the section ends)."""
    start = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if start is None and stripped == f"[{section}]":
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


def _drop_if_empty(lines: list[str], start: int, end: int) -> None:
    """Remove a section left with no keys (we only empty sections we filled), and the
    blank line that separated it when it was the last one."""
    if any(line.strip() for line in lines[start + 1 : end]):
        return
    del lines[start:end]
    if start == len(lines) and start > 0 and not lines[start - 1].strip():
        del lines[start - 1]


def read_value(path: Path, section: str, key: str) -> str | None:
    if not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    bounds = _section_bounds(lines, section)
    if bounds is None:
        return None
    index = _find_key(lines, bounds, key)
    return None if index is None else lines[index].partition("=")[2].strip()


def _write(path: Path, text: str) -> None:
    """Write beside and rename, so a crash never leaves half a kritarc."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".kd-tmp")
    temp.write_bytes(text.encode("utf-8", "surrogateescape"))
    os.replace(temp, path)


def set_value(path: Path, section: str, key: str, value: str | None) -> Change:
    """Set `[section] key` to `value` (raw INI text), or remove the key when None."""
    text = path.read_bytes().decode("utf-8", "surrogateescape") if path.is_file() else ""
    nl = _newline(text) if text else os.linesep if os.name == "nt" else "\n"
    lines = text.splitlines(keepends=True)
    bare = [line.rstrip("\r\n") for line in lines]
    bounds = _section_bounds(bare, section)
    index = None if bounds is None else _find_key(bare, bounds, key)
    previous = None if index is None else bare[index].partition("=")[2].strip()
    if previous == value:
        return Change(previous, changed=False)
    if value is None:
        assert index is not None and bounds is not None
        del lines[index]
        _drop_if_empty(lines, bounds[0], bounds[1] - 1)
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
        lines += [f"[{section}]{nl}", f"{key}={value}{nl}"]
    _write(path, "".join(lines))
    return Change(previous, changed=True)


def enable(path: Path, plugin: str) -> Change:
    return set_value(path, PYTHON, enable_key(plugin), "true")
