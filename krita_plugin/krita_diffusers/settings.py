"""The plugin's settings: one dataclass that is also the table of fields, their
validation, and persistence through a small key/value storage interface.

Each field of `Settings` carries its own description (label, dialog section, kind,
limits, unit) in its metadata, so a new setting is one entry here: the gear dialog,
the range checks and the stored keys all follow from it.

Krita keeps settings in its settings file; tests keep them in a dict. Both implement
`SettingsStore`, so the rules here are plain Python. Stored values that cannot be
read back (hand-edited, from an older version) fall back to the default for that
field instead of breaking the plugin.

Pure Python (standard library only): the installer loads this file on its own to read
the defaults, the group name and `validate`.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import Field, asdict, dataclass, field, fields
from typing import Any, Protocol
from urllib.parse import urlsplit

DEFAULT_SAMPLER = "DPM++ 2M Karras"
SETTINGS_GROUP = "krita_diffusers"

# Dialog sections, in the order the dialog shows them.
SERVER = "Server"
LOCAL_SERVER = "Local server started by Krita"
GENERATION = "Generation defaults"
SECTIONS = (SERVER, LOCAL_SERVER, GENERATION)

# Kinds of field: each maps to one kind of input in the dialog.
TEXT = "text"
SECRET = "secret"
CHOICE = "choice"  # free text with suggestions (the server's samplers)
INTEGER = "integer"
DECIMAL = "decimal"
BOOLEAN = "boolean"  # a tick box
VAE = "vae"  # one of the server's VAE files, or "" (the checkpoint's own)


@dataclass(frozen=True)
class FieldSpec:
    """How one setting is shown and checked. `low`/`high` bound numbers; `special` is
    the text shown for the lowest value when it means something else (0 = automatic)."""

    label: str
    section: str
    kind: str
    low: float | None = None
    high: float | None = None
    unit: str = ""
    special: str = ""
    step: float = 1
    placeholder: str = ""


def setting(default: Any, spec: FieldSpec) -> Any:
    """A dataclass field whose metadata is its `FieldSpec`."""
    return field(default=default, metadata={"spec": spec})


@dataclass
class Settings:
    """Everything the gear dialog edits. `working_resolution` 0 means "from the model"
    (the server's working size for it); it only sizes text-to-image requests, as the
    server scales regions itself."""

    server_url: str = setting("http://127.0.0.1:7860", FieldSpec("Server URL", SERVER, TEXT))
    token: str = setting(
        "", FieldSpec("Token", SERVER, SECRET, placeholder="only when the server asks for one")
    )
    server_command: str = setting(
        "krita-diffusers-server serve --host 127.0.0.1 --port 7860",
        FieldSpec("Command", LOCAL_SERVER, TEXT),
    )
    sampler: str = setting(DEFAULT_SAMPLER, FieldSpec("Sampler", GENERATION, CHOICE))
    steps: int = setting(20, FieldSpec("Steps", GENERATION, INTEGER, 1, 150))
    cfg_scale: float = setting(
        7.0, FieldSpec("CFG scale", GENERATION, DECIMAL, 1.0, 30.0, step=0.5)
    )
    #: Flux.1 dev / Fill's distilled guidance, in place of the CFG scale (protocol 6)
    guidance: float = setting(3.5, FieldSpec("Guidance", GENERATION, DECIMAL, 0.0, 30.0, step=0.5))
    #: A1111's clip skip, SD 1.5 models only (protocol 5)
    clip_skip: int = setting(1, FieldSpec("Clip skip", GENERATION, INTEGER, 1, 12))
    #: a VAE file of the server's to decode with; "" the checkpoint's own (protocol 5)
    vae: str = setting("", FieldSpec("VAE", GENERATION, VAE, special="The model's own"))
    working_resolution: int = setting(
        0,
        FieldSpec("Working resolution", GENERATION, INTEGER, 0, 4096, " px", "From the model", 64),
    )
    context_margin: int = setting(
        64, FieldSpec("Context margin", GENERATION, INTEGER, 0, 1024, " px")
    )
    mask_grow: int = setting(8, FieldSpec("Mask grow", GENERATION, INTEGER, 0, 256, " px"))
    mask_feather: int = setting(8, FieldSpec("Mask feather", GENERATION, INTEGER, 0, 256, " px"))
    preview_every: int = setting(
        2, FieldSpec("Preview every", GENERATION, INTEGER, 0, 100, " steps", "No previews")
    )
    history_size: int = setting(
        20, FieldSpec("History size", GENERATION, INTEGER, 1, 200, " results")
    )
    #: Generate on a canvas larger than the model's working size: a first pass at the
    #: working size, then the server's hi-res pass to the canvas size (protocol 5).
    #: Off, or an older server: the first pass is scaled to the canvas by Qt.
    hires_fix: bool = setting(True, FieldSpec("Hi-res fix", GENERATION, BOOLEAN))


def spec_of(item: Field[Any]) -> FieldSpec:
    spec = item.metadata.get("spec")
    if not isinstance(spec, FieldSpec):
        raise TypeError(f"Settings.{item.name} has no FieldSpec")
    return spec


#: The table of fields, in declaration order: (name, spec).
FIELDS: tuple[tuple[str, FieldSpec], ...] = tuple(
    (item.name, spec_of(item)) for item in fields(Settings)
)


@dataclass(frozen=True)
class Limits:
    low: float
    high: float


# Derived views of the table, for code that only needs one aspect.
LIMITS: dict[str, Limits] = {
    name: Limits(spec.low, spec.high)
    for name, spec in FIELDS
    if spec.low is not None and spec.high is not None
}
LABELS: dict[str, str] = {name: spec.label for name, spec in FIELDS}


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


def split_command(command: str, platform: str | None = None) -> list[str]:
    """The server command as program and arguments, split like a shell would: quotes
    group words. On Windows (`platform` is `sys.platform`) a backslash is a path
    separator, not an escape, so `C:\\Users\\...\\krita-diffusers-server.exe` keeps
    its backslashes. Raises ValueError on an unmatched quote."""
    lexer = shlex.shlex(command, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    if (platform or sys.platform).startswith("win"):
        lexer.escape = ""
    return list(lexer)


def _check_command(command: str) -> str | None:
    try:
        words = split_command(command)
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
    """Where settings live: strings by key. Krita's settings file in Krita, a dict in
    tests."""

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
    for name, _spec in FIELDS:
        raw = store.value(f"{SETTINGS_GROUP}/{name}")
        if raw is None:
            continue
        try:
            values[name] = _parse(str(raw), getattr(defaults, name))
        except ValueError:
            continue
    settings = Settings(**values)  # type: ignore[arg-type]
    for problem in validate(settings):
        setattr(settings, problem.field, getattr(defaults, problem.field))
    return settings


def save(store: SettingsStore, settings: Settings) -> None:
    for name, value in asdict(settings).items():
        store.set_value(f"{SETTINGS_GROUP}/{name}", str(value))
