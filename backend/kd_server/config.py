"""Server settings, from (lowest to highest priority) defaults, a TOML file, the
environment and command-line flags.

One dataclass holds everything so the CLI, the HTTP app and the installer agree on
names. The installer writes the TOML file; artists rarely touch it.

File: `$KD_CONFIG`, else `$XDG_CONFIG_HOME/krita-diffusers/server.toml`
(`~/.config/...` when unset). Keys are the field names below, e.g.

    host = "127.0.0.1"
    port = 7860
    model_dirs = ["/home/me/stable-diffusion-webui", "/home/me/ComfyUI"]
    token = "..."        # or token_file = "/path/to/file"
    device = "auto"      # auto | cuda | mps | cpu; several: "cuda:0,cuda:1" or "all"
    memory_mode = "auto" # auto | full | vae-tiling | fp8 | model-offload | sequential-offload
    t5_tokenizer = "/home/me/models/tokenizer-t5"  # Flux / SD 3.5's T5 tokenizer folder

Environment: KD_HOST, KD_PORT, KD_MODEL_DIRS (os.pathsep-separated), KD_TOKEN,
KD_TOKEN_FILE, KD_DEVICE, KD_DEFAULT_MODEL, KD_CONFIG, KD_STATE_DIR, KD_OUTPUTS_DIR,
KD_MEMORY_MODE, KD_T5_TOKENIZER.

Memory modes (docs/memory.md): `memory_mode` "auto" chooses per model from the free GPU
memory and the model's size; a mode's name runs every model in it (jobs may still ask
for another).

The T5 tokenizer (docs/models.md): `t5_tokenizer` names a folder holding T5's
tokenizer.json or spiece.model, searched before the usual places (kd_server.t5_tokenizer).

Scale-out (docs/scale-out.md): `device` may name several devices (one worker each);
ray_address, ray_replicas ("MIN:MAX") and ray_device run the jobs on a Ray Serve
deployment instead (KD_RAY_ADDRESS, KD_RAY_REPLICAS, KD_RAY_DEVICE).

Durability: state_dir (job table and results; default: the user's data folder,
"" = in memory only) and outputs_dir (default: <state_dir>/outputs).

Limits of the HTTP API (all optional; the defaults suit one artist on one GPU):
max_queue, max_pixels, max_body_bytes, max_prompt_length, preview_max_size,
result_ttl_s, result_max_jobs, result_max_bytes, cors_origins (a list; empty = CORS
off). Environment: the upper-case name with KD_ in front (KD_MAX_QUEUE, ...);
KD_CORS_ORIGINS and KD_SPEEDUPS are comma-separated.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path


class ConfigError(Exception):
    """A settings problem, worded for the person who set it."""


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 7860
    model_dirs: list[Path] = field(default_factory=list)
    token: str | None = None
    device: str = "auto"
    default_model: str | None = None  # checkpoint name; None: the library's own choice
    cache_size: int = 2  # loaded checkpoints kept warm
    # GPU memory mode of the loaded models (kd_server.memory_modes): "auto" or a mode
    memory_mode: str = "auto"
    # The T5 tokenizer folder of Flux / SD 3.5 (kd_server.t5_tokenizer), searched before
    # the usual places; None: only those.
    t5_tokenizer: Path | None = None
    # HTTP API limits. Requests beyond them are refused at submit time with a 4xx.
    max_queue: int = 32  # jobs waiting (not counting the running one); more -> 429
    max_pixels: int = 16_777_216  # width*height*batch_size, and pixels of one input image
    max_body_bytes: int = 64 * 1024 * 1024  # request body; more -> 413
    max_prompt_length: int = 4000  # characters, prompt and negative prompt each
    preview_max_size: int = 256  # long side of preview JPEGs, pixels
    result_ttl_s: int = 3600  # finished jobs are kept this long for GET ...
    result_max_jobs: int = 200  # ... and at most this many of them ...
    result_max_bytes: int = 1024 * 1024 * 1024  # ... holding at most this many PNG bytes
    cors_origins: list[str] = field(default_factory=list)  # empty: CORS off
    # Optional GPU speed-ups applied when a model loads: channels_last, fuse_qkv,
    # compile (see kd_server.speed and docs/performance.md). None by default.
    speedups: list[str] = field(default_factory=list)
    # Durability (docs/reliability.md): the job table and results live here, so a
    # restart loses nothing acknowledged. None: in memory only. `load_settings` (the
    # CLI) defaults it to the user's data folder; "" in the file or KD_STATE_DIR turns
    # it off. Results are written to `outputs_dir` (default: <state_dir>/outputs).
    state_dir: Path | None = None
    outputs_dir: Path | None = None
    # Scale-out (docs/scale-out.md). `device` above may list several devices
    # ("cuda:0,cuda:1", a TOML list, or "all"): one worker per device, each with its
    # own engine. With `ray_address` ("auto", or a head node's "host:6379") the jobs
    # run on a Ray Serve deployment of MIN to MAX replicas (`ray_replicas`), each on
    # `ray_device` (one GPU per replica for "cuda"; "cpu" asks none).
    ray_address: str | None = None
    ray_replicas: str = "1:1"
    ray_device: str = "cuda"


@dataclass(frozen=True)
class ReplicaRange:
    """How many Ray Serve replicas run the jobs: autoscaled between the two."""

    minimum: int
    maximum: int


def replica_range(text: str, origin: str = "the settings") -> ReplicaRange:
    """`"MIN:MAX"` (or `"N"`: exactly N) -> `ReplicaRange`; a ConfigError says why not."""
    parts = text.strip().split(":")
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        numbers = []
    if len(numbers) == 1:
        numbers *= 2
    if len(numbers) != 2 or not 0 < numbers[0] <= numbers[1]:
        raise ConfigError(
            f"ray_replicas in {origin} must be MIN:MAX with 1 <= MIN <= MAX (e.g. 1:4), "
            f"not {text!r}."
        )
    return ReplicaRange(numbers[0], numbers[1])


def default_state_dir() -> Path:
    """Where a local server keeps its job table and results by default."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "krita-diffusers" / "server"


def default_config_path() -> Path:
    if explicit := os.environ.get("KD_CONFIG"):
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "krita-diffusers" / "server.toml"


def _read_token_file(path: str | os.PathLike[str]) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"Cannot read the token file {path}: {exc.strerror}.") from exc
    if not token:
        raise ConfigError(f"The token file {path} is empty: put the token on its first line.")
    return token


#: Whole-number settings and the range each must lie in (a 0-job queue or a negative
#: retention would make the server refuse or forget everything without saying why).
_INT_RANGES: dict[str, tuple[int, int | None]] = {
    "port": (1, 65535),
    "cache_size": (1, None),
    "max_queue": (1, None),
    "max_pixels": (64 * 64, None),
    "max_body_bytes": (1024, None),
    "max_prompt_length": (1, None),
    "preview_max_size": (16, None),
    "result_ttl_s": (1, None),
    "result_max_jobs": (1, None),
    "result_max_bytes": (1, None),
}
_INT_FIELDS = set(_INT_RANGES)


def _whole_number(key: str, value: object, origin: str) -> int:
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key} in {origin} must be a whole number, not {value!r}.") from exc
    low, high = _INT_RANGES[key]
    if number < low or (high is not None and number > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{key} in {origin} must be {bound}, not {number}.")
    return number


def _memory_mode(value: str, origin: str) -> str:
    from kd_server.memory_modes import UnknownMemoryMode, parse  # light: no torch

    try:
        mode = parse(value)
    except UnknownMemoryMode as exc:
        raise ConfigError(f"memory_mode in {origin}: {exc}") from exc
    return "auto" if mode is None else mode.value


def _t5_tokenizer(value: str, origin: str) -> Path | None:
    from kd_server.t5_tokenizer import is_t5_tokenizer_folder  # light: no transformers

    text = value.strip()
    if not text:
        return None
    folder = Path(text).expanduser()
    try:
        found = is_t5_tokenizer_folder(folder)
    except OSError:
        found = False
    if not found:
        raise ConfigError(
            f"t5_tokenizer in {origin} must be a folder holding T5's tokenizer.json or "
            f"spiece.model, and {folder} holds neither. Get one with `python3 -m installer "
            "download t5-tokenizer --models-dir <your models folder>` (it goes into "
            "<models folder>/tokenizer-t5), or leave the setting out."
        )
    return folder


def _check_speedups(names: list[str], origin: str) -> None:
    from kd_server.speed import SpeedOptions  # imports torch: only when speed-ups are set

    try:
        SpeedOptions.from_names(names)
    except ValueError as exc:
        raise ConfigError(f"speedups in {origin}: {exc}") from exc


_LIST_FIELDS = {"cors_origins", "speedups"}  # TOML lists, or comma-separated text
_PATH_FIELDS = {"state_dir", "outputs_dir"}  # "" = none


def _apply(settings: Settings, values: dict[str, object], origin: str) -> None:
    known = {f.name for f in fields(Settings)} | {"token_file"}
    for key, value in values.items():
        if value is None:
            continue
        if key not in known:
            raise ConfigError(
                f"Unknown setting '{key}' in {origin}; known: {', '.join(sorted(known))}."
            )
        if key == "token_file":
            settings.token = _read_token_file(str(value))
        elif key == "token":
            # An empty token would pass the "no token off loopback" rule yet match no
            # request; surrounding spaces could never match (headers are stripped).
            if not str(value).strip():
                raise ConfigError(
                    f"token in {origin} is empty: set a token, or leave the setting out."
                )
            settings.token = str(value).strip()
        elif key in _PATH_FIELDS:
            text = str(value).strip()
            setattr(settings, key, Path(text).expanduser() if text else None)
        elif key == "model_dirs":
            items = value if isinstance(value, list) else [value]
            settings.model_dirs = [Path(str(item)).expanduser() for item in items]
        elif key in _INT_FIELDS:
            setattr(settings, key, _whole_number(key, value, origin))
        elif key == "device" and isinstance(value, list):
            settings.device = ",".join(str(item).strip() for item in value)  # one per worker
        elif key == "ray_replicas":
            replica_range(str(value), origin)  # refused here, not when the server starts
            settings.ray_replicas = str(value).strip()
        elif key == "ray_address":
            settings.ray_address = str(value).strip() or None
        elif key == "memory_mode":
            settings.memory_mode = _memory_mode(str(value), origin)
        elif key == "t5_tokenizer":
            settings.t5_tokenizer = _t5_tokenizer(str(value), origin)
        elif key in _LIST_FIELDS:
            items = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
            setattr(settings, key, [str(i).strip() for i in items if str(i).strip()])
            if key == "speedups":
                _check_speedups(settings.speedups, origin)
        else:
            setattr(settings, key, str(value))


def _from_environment() -> dict[str, object]:
    env = os.environ
    values: dict[str, object] = {
        "host": env.get("KD_HOST"),
        "port": env.get("KD_PORT"),
        "token": env.get("KD_TOKEN") or None,
        "token_file": env.get("KD_TOKEN_FILE") or None,
        "device": env.get("KD_DEVICE"),
        "memory_mode": env.get("KD_MEMORY_MODE") or None,
        "t5_tokenizer": env.get("KD_T5_TOKENIZER") or None,
        "default_model": env.get("KD_DEFAULT_MODEL") or None,
        "state_dir": env.get("KD_STATE_DIR"),
        "outputs_dir": env.get("KD_OUTPUTS_DIR"),
        "ray_address": env.get("KD_RAY_ADDRESS") or None,
        "ray_replicas": env.get("KD_RAY_REPLICAS") or None,
        "ray_device": env.get("KD_RAY_DEVICE") or None,
    }
    for name in [*sorted(_INT_FIELDS - {"cache_size", "port"}), *sorted(_LIST_FIELDS)]:
        values[name] = env.get(f"KD_{name.upper()}") or None
    if dirs := env.get("KD_MODEL_DIRS"):
        values["model_dirs"] = [d for d in dirs.split(os.pathsep) if d]
    return values


def load_settings(
    overrides: dict[str, object] | None = None, config_path: Path | None = None
) -> Settings:
    """Merge defaults, config file, environment and `overrides` (from flags)."""
    settings = Settings(state_dir=default_state_dir())
    path = config_path or default_config_path()
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"The settings file {path} is not valid TOML: {exc}.") from exc
        _apply(settings, data, str(path))
    _apply(settings, _from_environment(), "the environment")
    _apply(settings, overrides or {}, "the command line")
    return settings
