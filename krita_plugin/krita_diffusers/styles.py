"""Styles: named sets of generation choices an artist tuned once and picks again.

A style holds a checkpoint, sampler, steps, CFG, LoRAs with weights, a prompt
template (`{prompt}, detailed oil painting`), a negative prompt and the sampling for
live (fast) use. Each style is one JSON file, so styles are shared by copying files.

Two folders are read: the styles shipped with the plugin (`styles/` beside this
file, copied by the installer with the package) and the artist's own folder (in the
plugin's data folder, `guidance.data_dir`). A style of the artist's with the name of a
shipped one replaces it; editing a shipped style saves the artist's copy. A file that
cannot be read is listed with the reason, never a crash.

A1111's `styles.csv` (name, prompt, negative_prompt; `{prompt}` placeholder) is read
into styles of the same meaning.

Plain Python (standard library only), so every rule is testable without Qt.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .family_settings import MEMORY_MODES
from .guidance import data_dir
from .protocol import Lora

PLACEHOLDER = "{prompt}"
#: A style's `sampler` "auto": the server picks sampler, steps and CFG from the fast
#: checkpoint or LoRA (protocol 3 `sampling: "auto"`), as the shipped Fast style does.
AUTO = "auto"
SHIPPED_FOLDER = Path(__file__).resolve().parent / "styles"
SUFFIX = ".json"
#: The JSON format's version, written into every file so a later plugin can read
#: older files on purpose rather than by accident.
FORMAT = 1


class StyleError(ValueError):
    """Why a style file or a style's fields cannot be used, in words for the artist."""


@dataclass(frozen=True)
class LiveSampling:
    """The sampling live frames use with this style. `auto` leaves it to the server
    (a fast model's own settings); otherwise the given sampler, steps and CFG."""

    auto: bool = True
    sampler: str | None = None
    steps: int | None = None
    cfg_scale: float | None = None


@dataclass(frozen=True)
class Style:
    """One style. None for `checkpoint`, `sampler`, `steps`, `cfg_scale`, `guidance`,
    `clip_skip` or `vae` means "keep what the docker has" (the server's default model;
    the model's remembered or the settings' sampling), so a style can be only a prompt
    template. `memory_mode` None leaves it to the server (sent to protocol 6 servers
    only)."""

    name: str
    checkpoint: str | None = None
    sampler: str | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    loras: tuple[Lora, ...] = ()
    prompt: str = PLACEHOLDER
    negative_prompt: str = ""
    live: LiveSampling = field(default_factory=LiveSampling)
    #: Flux's distilled guidance (Flux.1 dev / Fill only)
    guidance: float | None = None
    #: A1111's clip skip (SD 1.5 only)
    clip_skip: int | None = None
    #: a VAE file of the server's (SD 1.5 / SDXL)
    vae: str | None = None
    #: one of family_settings.MEMORY_MODES; None: the server chooses
    memory_mode: str | None = None
    #: set when read: from the plugin's shipped styles (not the artist's folder)
    shipped: bool = field(default=False, compare=False)


def apply_template(template: str, text: str) -> str:
    """The prompt a style makes of the artist's text, as A1111 does: `{prompt}` in the
    template is replaced by the text; a template without it is added after the text
    with ", " (either alone when the other is empty)."""
    template, text = template.strip(), text.strip()
    if PLACEHOLDER in template:
        return template.replace(PLACEHOLDER, text).strip(" ,")
    return ", ".join(part for part in (text, template) if part)


@dataclass(frozen=True)
class Sampling:
    """The sampling a job uses: `auto` leaves sampler, steps and CFG to the server.
    `guidance` (Flux), `clip_skip` and `vae` travel with it: a model remembers them
    too, and the family rules (family_settings) decide which a job sends."""

    sampler: str
    steps: int
    cfg_scale: float
    auto: bool = False
    guidance: float | None = None
    clip_skip: int = 1
    vae: str | None = None


def sampling_for(style: Style | None, fallback: Sampling) -> Sampling:
    """The style's sampler, steps and CFG where it sets them, else `fallback` (the
    model's remembered or the settings' ones)."""
    if style is None:
        return fallback
    fallback = replace(
        fallback,
        guidance=style.guidance if style.guidance is not None else fallback.guidance,
        clip_skip=style.clip_skip if style.clip_skip is not None else fallback.clip_skip,
        vae=style.vae if style.vae is not None else fallback.vae,
    )
    if style.sampler == AUTO:
        return replace(fallback, auto=True)
    return replace(
        fallback,
        sampler=style.sampler or fallback.sampler,
        steps=style.steps if style.steps is not None else fallback.steps,
        cfg_scale=style.cfg_scale if style.cfg_scale is not None else fallback.cfg_scale,
    )


def live_sampling_for(style: Style | None, job: Sampling, fast: bool) -> Sampling | None:
    """The sampling of live frames; None leaves it to the server (a fast model, or
    the style's live sampling on "auto" with a fast model). A style's own live
    sampling wins; a slow model without one runs with the job's sampling."""
    own = None if style is None or style.live.auto else style.live
    if own is not None:
        return replace(
            job,
            sampler=own.sampler or job.sampler,
            steps=own.steps or job.steps,
            cfg_scale=own.cfg_scale or job.cfg_scale,
            auto=False,
        )
    if fast:
        return None
    if job.auto:  # a fast style over a slow model: the settings' numbers, as before
        return replace(job, auto=False)
    return job


def prompts_for(style: Style | None, prompt: str, negative: str) -> tuple[str, str]:
    """The prompt and negative prompt a job sends: the artist's text wrapped by the
    style's templates (the negative too, as A1111 does). An empty prompt stays empty,
    so the docker still asks for one instead of sending the template alone."""
    if style is None:
        return prompt.strip(), negative.strip()
    negative = apply_template(style.negative_prompt, negative)
    if not prompt.strip():
        return "", negative
    return apply_template(style.prompt, prompt), negative


def format_loras(loras: Iterable[Lora]) -> str:
    """LoRAs as the style editor shows them: `name:weight, name:weight`."""
    return ", ".join(f"{lora.name}:{lora.weight:g}" for lora in loras)


def parse_loras(text: str) -> tuple[Lora, ...]:
    """The editor's `name:weight, ...` back into LoRAs; a name without a weight
    (or with one that is not a number) gets 1."""
    loras = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, _colon, weight = part.rpartition(":")
        try:
            loras.append(Lora(name.strip(), float(weight)) if name else Lora(part, 1.0))
        except ValueError:
            loras.append(Lora(part, 1.0))
    return tuple(loras)


def _number(value: object, kind: type, what: str, low: float, high: float) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StyleError(f"{what} must be a number.")
    if kind is int and not float(value).is_integer():
        raise StyleError(f"{what} must be a whole number.")
    if not low <= value <= high:
        raise StyleError(f"{what} must be between {low:g} and {high:g}.")
    return kind(value)


def _text(value: object, what: str, default: str | None) -> str | None:
    if value is None:
        return default
    if not isinstance(value, str):
        raise StyleError(f"{what} must be text.")
    return value


def _loras(value: object) -> tuple[Lora, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise StyleError("loras must be a list of {name, weight}.")
    loras = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise StyleError("Each LoRA needs a name.")
        weight = _number(item.get("weight", 1.0), float, "A LoRA's weight", -10, 10)
        loras.append(Lora(item["name"], weight))
    return tuple(loras)


def _live(value: object) -> LiveSampling:
    if value is None:
        return LiveSampling()
    if not isinstance(value, dict):
        raise StyleError("live must be an object.")
    return LiveSampling(
        bool(value.get("auto", True)),
        _text(value.get("sampler"), "live sampler", None),
        _number(value.get("steps"), int, "live steps", 1, 150),
        _number(value.get("cfg_scale"), float, "live CFG scale", 0, 30),
    )


def from_dict(data: object, shipped: bool = False) -> Style:
    """A style from its JSON object; StyleError says which field is wrong."""
    if not isinstance(data, dict):
        raise StyleError("The file does not hold a style (a JSON object).")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise StyleError("The style has no name.")
    return Style(
        name=name.strip(),
        checkpoint=_text(data.get("checkpoint"), "checkpoint", None) or None,
        sampler=_text(data.get("sampler"), "sampler", None) or None,
        steps=_number(data.get("steps"), int, "steps", 1, 150),
        cfg_scale=_number(data.get("cfg_scale"), float, "CFG scale", 0, 30),
        loras=_loras(data.get("loras")),
        prompt=_text(data.get("prompt"), "prompt", PLACEHOLDER) or "",
        negative_prompt=_text(data.get("negative_prompt"), "negative_prompt", "") or "",
        live=_live(data.get("live")),
        guidance=_number(data.get("guidance"), float, "guidance", 0, 30),
        clip_skip=_number(data.get("clip_skip"), int, "clip_skip", 1, 12),
        vae=_text(data.get("vae"), "vae", None) or None,
        memory_mode=_memory_mode(data.get("memory_mode")),
        shipped=shipped,
    )


def _memory_mode(value: object) -> str | None:
    if value is None or value == "":
        return None
    if value not in MEMORY_MODES:
        raise StyleError(f"memory_mode must be one of {', '.join(MEMORY_MODES)} (or null).")
    return str(value)


def to_dict(style: Style) -> dict[str, Any]:
    """The style's JSON object (what `from_dict` reads back). The fields added for
    issue 18 (guidance, clip skip, VAE, memory mode) are written only when set, so the
    files of styles without them stay as they were."""
    data = {
        "format": FORMAT,
        "name": style.name,
        "checkpoint": style.checkpoint,
        "sampler": style.sampler,
        "steps": style.steps,
        "cfg_scale": style.cfg_scale,
        "loras": [{"name": lora.name, "weight": lora.weight} for lora in style.loras],
        "prompt": style.prompt,
        "negative_prompt": style.negative_prompt,
        "live": {
            "auto": style.live.auto,
            "sampler": style.live.sampler,
            "steps": style.live.steps,
            "cfg_scale": style.live.cfg_scale,
        },
    }
    extra = {
        "guidance": style.guidance,
        "clip_skip": style.clip_skip,
        "vae": style.vae,
        "memory_mode": style.memory_mode,
    }
    data.update({key: value for key, value in extra.items() if value is not None})
    return data


@dataclass(frozen=True)
class StyleProblem:
    """A style file that could not be read, and why."""

    path: Path
    reason: str


@dataclass
class StyleLibrary:
    """The styles found, by name in the order shown, and the files left out."""

    styles: list[Style] = field(default_factory=list)
    problems: list[StyleProblem] = field(default_factory=list)

    def find(self, name: str | None) -> Style | None:
        return next((style for style in self.styles if style.name == name), None)

    @property
    def names(self) -> list[str]:
        return [style.name for style in self.styles]


def read_file(path: Path, shipped: bool = False) -> Style:
    """One style file; StyleError with the reason when it cannot be used."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StyleError(f"The file cannot be read ({exc.__class__.__name__}).") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise StyleError(f"The file is not valid JSON: {exc}.") from exc
    return from_dict(data, shipped)


def _read_folder(folder: Path, shipped: bool, library: dict[str, Style]) -> list[StyleProblem]:
    problems = []
    try:
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() == SUFFIX)
    except OSError:
        return []  # no folder yet: no styles there
    for path in paths:
        try:
            style = read_file(path, shipped)
        except StyleError as exc:
            problems.append(StyleProblem(path, str(exc)))
            continue
        library[style.name] = style
    return problems


def load_library(user_folder: Path, shipped_folder: Path = SHIPPED_FOLDER) -> StyleLibrary:
    """Shipped styles, then the artist's (which replace shipped ones of the same name),
    sorted by name."""
    found: dict[str, Style] = {}
    problems = _read_folder(shipped_folder, True, found)
    problems += _read_folder(user_folder, False, found)
    styles = sorted(found.values(), key=lambda style: style.name.casefold())
    return StyleLibrary(styles, problems)


def file_name(name: str) -> str:
    """A file name for a style's name that every platform accepts."""
    stem = re.sub(r'[<>:"/\\|?*\x00-\x1f]+', "_", name.strip()).strip(" .") or "style"
    return stem[:100] + SUFFIX


def save_style(folder: Path, style: Style) -> Path:
    """Write the style into the artist's folder (made when missing). Written to a
    temporary file first, so a crash never leaves half a style."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name(style.name)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(to_dict(style), indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return path


def delete_style(folder: Path, name: str) -> bool:
    """Remove the artist's style file of this name; False when there is none (a
    shipped style cannot be deleted, only replaced by the artist's own)."""
    for path in _style_files(folder):
        try:
            if read_file(path).name == name:
                path.unlink()
                return True
        except StyleError:
            continue
    return False


def _style_files(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.suffix.lower() == SUFFIX)
    except OSError:
        return []


def unused_name(name: str, taken: Iterable[str]) -> str:
    """`name`, or `name (2)`, `name (3)`...: the first one not taken."""
    names = set(taken)
    if name not in names:
        return name
    number = 2
    while f"{name} ({number})" in names:
        number += 1
    return f"{name} ({number})"


def duplicate(style: Style, taken: Iterable[str]) -> Style:
    """A copy to edit, under a new name, belonging to the artist."""
    return replace(style, name=unused_name(f"{style.name} copy", taken), shipped=False)


def styles_folder(
    platform: str | None = None, env: Mapping[str, str] | None = None, home: Path | None = None
) -> Path:
    """The artist's styles: `styles/` in the plugin's data folder (Linux
    `~/.local/share/krita-diffusers/styles`, Windows `%LOCALAPPDATA%\\krita-diffusers\\
    styles`, macOS `~/Library/Application Support/krita-diffusers/styles`)."""
    env = os.environ if env is None else env
    home = home or Path(env.get("HOME") or env.get("USERPROFILE") or Path.home())
    return data_dir(platform or sys.platform, env, home) / "styles"


# A1111's styles.csv


def parse_a1111_csv(text: str) -> list[Style]:
    """A1111's `styles.csv` as styles: its prompt is the template (A1111 reads
    `{prompt}` the same way), its negative prompt the negative; rows without a name
    (A1111 writes "None" for its empty style) are left out."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    styles = []
    for row in reader:
        name = (row.get("name") or "").strip()
        if not name or name.lower() == "none":
            continue
        styles.append(
            Style(
                name=name,
                prompt=(row.get("prompt") or "").strip(),
                negative_prompt=(row.get("negative_prompt") or "").strip(),
            )
        )
    return styles


def a1111_styles_file(folder: Path) -> Path | None:
    """`styles.csv` of an A1111 (or Forge) folder, if it has one."""
    path = folder / "styles.csv"
    return path if path.is_file() else None


def a1111_candidates(home: Path) -> list[Path]:
    """Where A1111 and Forge are usually installed, for the import dialog to try
    first (the artist can always choose another folder)."""
    names = ("stable-diffusion-webui", "stable-diffusion-webui-forge", "sd-webui")
    places = (home, home / "Documents", home / "AI", Path("C:/"))
    return [place / name for place in places for name in names]


def detect_a1111(home: Path) -> Path | None:
    """The first usual A1111 folder that has a `styles.csv`."""
    return next((p for p in a1111_candidates(home) if a1111_styles_file(p)), None)


def import_a1111(csv_path: Path, folder: Path, taken: Iterable[str]) -> list[Style]:
    """Save A1111's styles into the artist's folder; a name already used gets a
    number, so nothing is overwritten. Returns the styles saved."""
    names = set(taken)
    saved = []
    for style in parse_a1111_csv(csv_path.read_text(encoding="utf-8", errors="replace")):
        style = replace(style, name=unused_name(style.name, names))
        names.add(style.name)
        save_style(folder, style)
        saved.append(style)
    return saved
