"""The plugin's settings: one dataclass, its validation, and persistence through a
small key/value storage interface.

Krita keeps settings in QSettings; tests keep them in a dict. Both implement
`SettingsStore`, so the rules here are plain Python. Stored values that cannot be
read back (hand-edited, from an older version) fall back to the default for that
field instead of breaking the plugin.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, fields
from typing import Protocol
from urllib.parse import urlsplit

DEFAULT_SAMPLER = "DPM++ 2M Karras"
SETTINGS_GROUP = "krita_diffusers"


@dataclass
class Settings:
    """Everything the gear dialog edits. `working_resolution` 0 means "from the model
    family" (512 for SD1.5, 1024 for SDXL); it only sizes text-to-image requests, as
    the server scales regions itself."""

    server_url: str = "http://127.0.0.1:7860"
    token: str = ""
    server_command: str = "krita-diffusers-server serve --host 127.0.0.1 --port 7860"
    sampler: str = DEFAULT_SAMPLER
    steps: int = 20
    cfg_scale: float = 7.0
    working_resolution: int = 0
    context_margin: int = 64
    mask_grow: int = 8
    mask_feather: int = 8
    preview_every: int = 2
    history_size: int = 20


@dataclass(frozen=True)
class Limits:
    low: float
    high: float


# Ranges an artist can set; the dialog uses the same numbers for its spin boxes.
LIMITS: dict[str, Limits] = {
    "steps": Limits(1, 150),
    "cfg_scale": Limits(1.0, 30.0),
    "working_resolution": Limits(0, 4096),
    "context_margin": Limits(0, 1024),
    "mask_grow": Limits(0, 256),
    "mask_feather": Limits(0, 256),
    "preview_every": Limits(0, 100),
    "history_size": Limits(1, 200),
}

LABELS: dict[str, str] = {
    "server_url": "Server URL",
    "token": "Token",
    "server_command": "Server command",
    "sampler": "Sampler",
    "steps": "Steps",
    "cfg_scale": "CFG scale",
    "working_resolution": "Working resolution",
    "context_margin": "Context margin",
    "mask_grow": "Mask grow",
    "mask_feather": "Mask feather",
    "preview_every": "Preview every",
    "history_size": "History size",
}


@dataclass(frozen=True)
class SettingProblem:
    """One invalid field, with a sentence that says how to fix it."""

    field: str
    message: str


def _check_url(url: str) -> str | None:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "Server URL must look like http://127.0.0.1:7860 (http or https, then a host)."
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "The port in the server URL must be a number between 1 and 65535."
    return None


def _check_command(command: str) -> str | None:
    try:
        words = shlex.split(command)
    except ValueError:
        return "The server command has an unmatched quote."
    if not words:
        return "Give the command that starts the server, e.g. krita-diffusers-server serve."
    return None


def validate(settings: Settings) -> list[SettingProblem]:
    """All problems at once, so the dialog can show them together."""
    problems: list[SettingProblem] = []
    if message := _check_url(settings.server_url):
        problems.append(SettingProblem("server_url", message))
    if any(ch.isspace() for ch in settings.token):
        problems.append(SettingProblem("token", "The token cannot contain spaces."))
    if message := _check_command(settings.server_command):
        problems.append(SettingProblem("server_command", message))
    if not settings.sampler.strip():
        problems.append(SettingProblem("sampler", "Choose a sampler."))
    for name, limits in LIMITS.items():
        value = getattr(settings, name)
        if not limits.low <= value <= limits.high:
            problems.append(
                SettingProblem(
                    name,
                    f"{LABELS[name]} must be between {limits.low:g} and {limits.high:g}.",
                )
            )
    resolution = settings.working_resolution
    if resolution and (resolution < 64 or resolution % 8):
        problems.append(
            SettingProblem(
                "working_resolution",
                "Working resolution must be 0 (from the model) or a multiple of 8 from 64 up.",
            )
        )
    return problems


class SettingsStore(Protocol):
    """Where settings live: strings by key. QSettings in Krita, a dict in tests."""

    def value(self, key: str) -> str | None: ...

    def set_value(self, key: str, value: str) -> None: ...


class MemoryStore:
    """A `SettingsStore` in a dict: for tests and for running outside Krita."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def value(self, key: str) -> str | None:
        return self.data.get(key)

    def set_value(self, key: str, value: str) -> None:
        self.data[key] = value


def _parse(raw: str, default: object) -> object:
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw


def load(store: SettingsStore) -> Settings:
    """Settings from the store; a missing or unreadable value keeps its default, and a
    value that fails validation is replaced by the default too."""
    defaults = Settings()
    values: dict[str, object] = {}
    for item in fields(Settings):
        raw = store.value(f"{SETTINGS_GROUP}/{item.name}")
        if raw is None:
            continue
        try:
            values[item.name] = _parse(str(raw), getattr(defaults, item.name))
        except ValueError:
            continue
    settings = Settings(**values)  # type: ignore[arg-type]
    for problem in validate(settings):
        setattr(settings, problem.field, getattr(defaults, problem.field))
    return settings


def save(store: SettingsStore, settings: Settings) -> None:
    for name, value in asdict(settings).items():
        store.set_value(f"{SETTINGS_GROUP}/{name}", str(value))
