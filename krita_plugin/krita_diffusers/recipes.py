"""A result's recipe: everything the artist chose for it (prompt as typed, negative,
style, model, sampling, seed, strength, LoRAs, controls, region), so "Reuse" can put
it all back into the docker and "Reuse seed" just the seed, and so the history can be
kept with the document.

The document keeps its history as a Krita annotation in the `.kra`
(`Document.setAnnotation`, present in Krita 5.1.5: measured with kritarunner, the
annotation is saved as `annotations/krita_diffusers/history` and read back after
reopening). The annotation holds JSON: the recipes and a small PNG thumbnail each,
not the full results (a 20-result history of 1024 px pictures would add tens of MB
to every save); results already applied are layers of the document anyway.

Plain Python (standard library only).
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .protocol import Lora

ANNOTATION = "krita_diffusers/history"
DESCRIPTION = "Krita Diffusers: the recipes of this document's results"
FORMAT = 1
#: Saved entries per document, newest first: beyond, the oldest are dropped.
SAVED_LIMIT = 50


@dataclass(frozen=True)
class Recipe:
    """What made one result. `prompt`/`negative_prompt` as the artist typed them (the
    style wraps them again on reuse); `sent_prompt` as the server got it."""

    prompt: str
    negative_prompt: str = ""
    style: str | None = None
    model: str | None = None
    sampler: str = ""
    steps: int = 0
    cfg_scale: float = 0.0
    auto_sampling: bool = False
    seed: int | None = None
    strength_percent: int = 100
    loras: tuple[Lora, ...] = ()
    task: str = ""
    region: tuple[int, int, int, int] | None = None  # x, y, width, height
    controls: tuple[str, ...] = ()  # the control models used
    reference: str | None = None  # the IP-Adapter used
    sent_prompt: str = ""
    guidance: float | None = None  # Flux's distilled guidance, where it applied
    clip_skip: int = 1
    vae: str | None = None
    memory_mode: str | None = None  # the style's; None: the server's choice


def to_dict(recipe: Recipe) -> dict[str, Any]:
    data = asdict(recipe)
    data["loras"] = [{"name": lora.name, "weight": lora.weight} for lora in recipe.loras]
    data["region"] = list(recipe.region) if recipe.region else None
    data["controls"] = list(recipe.controls)
    return data


def _str(value: object, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _float(value: object, default: float) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if ok else default  # type: ignore[arg-type]


def _opt_float(value: object) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if ok else None  # type: ignore[arg-type]


def from_dict(data: object) -> Recipe | None:
    """A recipe from saved JSON; None when it is not one. Fields of the wrong kind
    fall back to their defaults: a hand-edited or newer entry still reuses what it
    can."""
    if not isinstance(data, dict) or not isinstance(data.get("prompt"), str):
        return None
    region = data.get("region")
    loras = data.get("loras") if isinstance(data.get("loras"), list) else []
    seed = data.get("seed")
    return Recipe(
        prompt=data["prompt"],
        negative_prompt=_str(data.get("negative_prompt")),
        style=_opt_str(data.get("style")),
        model=_opt_str(data.get("model")),
        sampler=_str(data.get("sampler")),
        steps=_int(data.get("steps"), 0),
        cfg_scale=_float(data.get("cfg_scale"), 0.0),
        auto_sampling=data.get("auto_sampling") is True,
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        strength_percent=_int(data.get("strength_percent"), 100),
        loras=tuple(
            Lora(item["name"], _float(item.get("weight"), 1.0))
            for item in loras or []
            if isinstance(item, dict) and isinstance(item.get("name"), str)
        ),
        task=_str(data.get("task")),
        region=tuple(region)  # type: ignore[arg-type]
        if isinstance(region, list) and len(region) == 4 and all(isinstance(v, int) for v in region)
        else None,
        controls=tuple(v for v in data.get("controls") or [] if isinstance(v, str)),
        reference=_opt_str(data.get("reference")),
        sent_prompt=_str(data.get("sent_prompt")),
        guidance=_opt_float(data.get("guidance")),
        clip_skip=max(1, min(12, _int(data.get("clip_skip"), 1))),
        vae=_opt_str(data.get("vae")),
        memory_mode=_opt_str(data.get("memory_mode")),
    )


@dataclass(frozen=True)
class SavedResult:
    """One history entry as the document keeps it."""

    recipe: Recipe
    name: str  # the layer name it had (prompt and seed)
    thumbnail: bytes = b""  # PNG
    job_id: str = ""
    index: int = 0


@dataclass
class SavedHistory:
    entries: list[SavedResult] = field(default_factory=list)  # newest first


def encode(history: SavedHistory, limit: int = SAVED_LIMIT) -> bytes:
    """The annotation's bytes: JSON, thumbnails in base64."""
    entries = [
        {
            "recipe": to_dict(entry.recipe),
            "name": entry.name,
            "thumbnail": base64.b64encode(entry.thumbnail).decode("ascii"),
            "job_id": entry.job_id,
            "index": entry.index,
        }
        for entry in history.entries[:limit]
    ]
    return json.dumps({"format": FORMAT, "entries": entries}).encode("utf-8")


def decode(data: bytes | None) -> SavedHistory:
    """The saved history; whatever cannot be read is left out (an empty history for
    a document without one or with a damaged annotation), never an error."""
    if not data:
        return SavedHistory()
    try:
        parsed = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return SavedHistory()
    items = parsed.get("entries") if isinstance(parsed, dict) else None
    entries = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        recipe = from_dict(item.get("recipe"))
        if recipe is None:
            continue
        try:
            thumbnail = base64.b64decode(_str(item.get("thumbnail")), validate=True)
        except ValueError:
            thumbnail = b""
        entries.append(
            SavedResult(
                recipe,
                _str(item.get("name")),
                thumbnail,
                _str(item.get("job_id")),
                _int(item.get("index"), 0),
            )
        )
    return SavedHistory(entries)


def with_result(
    history: SavedHistory, entry: SavedResult, limit: int = SAVED_LIMIT
) -> SavedHistory:
    """The history with a new result first (the same job's result only once)."""
    kept = [
        e
        for e in history.entries
        if not (entry.job_id and e.job_id == entry.job_id and e.index == entry.index)
    ]
    return SavedHistory([entry, *kept][:limit])


def with_seed(recipe: Recipe, seed: int) -> Recipe:
    return replace(recipe, seed=seed)
