"""What the models view shows: the server's models grouped by family, the LoRAs that
fit the chosen checkpoint, and every file the server found but cannot use, with the
reason in plain words ("Why is my model missing?").

Plain Python over `protocol.ModelList`, so every rule is testable without Qt. The
server decides what is usable and why (`GET /v1/models`: `unusable`, and the
`usable`/`reason` of embeddings, VAEs, upscalers and preview decoders); this module
only sorts it for the artist.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from .control import base_family
from .family_settings import GROUPS, group, label
from .protocol import ModelList

#: Groups in the order shown, with their names for artists: SD 1.5, SDXL, Flux.1,
#: SD 3.5 (each with its inpaint / Fill / schnell variants), then any other family.
FAMILY_NAMES = GROUPS
OTHER = "Other / unknown family"

#: What each kind of file is, in words.
KIND_NAMES = {
    "checkpoint": "Checkpoint",
    "lora": "LoRA",
    "control": "ControlNet / IP-Adapter",
    "image-encoder": "Image encoder (for IP-Adapter)",
    "depth-estimator": "Depth estimator",
    "embedding": "Embedding",
    "vae": "VAE",
    "upscaler": "Upscaler",
    "preview-decoder": "Preview decoder",
}


def family_name(family: str) -> str:
    """The group of a family: `sd15-inpaint` -> "SD 1.5", `flux-schnell` -> "Flux.1";
    an unknown one as the server spells it."""
    return FAMILY_NAMES.get(group(family), family or OTHER)


def checkpoint_line(name: str, family: str, fast: bool = False) -> str:
    """A checkpoint as its group lists it: the exact family where the group's name
    does not say it ("dream-inpaint  (SD 1.5 inpaint)", "flux1  (Flux.1 dev)")."""
    shown = label(family)
    text = name if not shown or shown == family_name(family) else f"{name}  ({shown})"
    return text + ("  (fast)" if fast else "")


@dataclass
class FamilyGroup:
    """One family's usable models, by kind (names as a job names them)."""

    name: str
    checkpoints: list[str] = field(default_factory=list)
    loras: list[str] = field(default_factory=list)
    embeddings: list[str] = field(default_factory=list)


@dataclass
class Catalogue:
    families: list[FamilyGroup]
    #: VAEs fit either family (SD 1.5 and SDXL VAEs share a layout): listed once
    vaes: list[str]
    #: by LoRA name, those that have any (the server reads them from the file)
    trigger_words: dict[str, tuple[str, ...]] = field(default_factory=dict)


def catalogue(models: ModelList) -> Catalogue:
    """The usable models grouped by family: SD 1.5, SDXL, then others."""
    groups: dict[str, FamilyGroup] = {}

    def group_of(family: str) -> FamilyGroup:
        name = family_name(family)
        return groups.setdefault(name, FamilyGroup(name))

    for checkpoint in models.checkpoints:
        line = checkpoint_line(checkpoint.name, checkpoint.family, checkpoint.fast)
        group_of(checkpoint.family).checkpoints.append(line)
    for lora in models.loras:
        group_of(models.lora_families.get(lora, "")).loras.append(lora)
    for embedding in models.embeddings:
        if embedding.usable:
            group_of(embedding.family).embeddings.append(embedding.name)
    order = [*FAMILY_NAMES.values()]
    ordered = sorted(
        groups.values(),
        key=lambda g: (order.index(g.name) if g.name in order else len(order), g.name),
    )
    vaes = [vae.name for vae in models.vaes if vae.usable]
    return Catalogue(ordered, vaes, dict(models.lora_trigger_words))


def trigger_words_text(words: Sequence[str]) -> str:
    """The words as the view shows them beside a LoRA, and as they go into a prompt."""
    return ", ".join(words)


def _has_word(prompt: str, word: str) -> bool:
    """Whether `word` is already in the prompt as a whole word (any case), so that
    `ohwx` in "photo of ohwx man" counts but inside "ohwxy" does not."""
    pattern = rf"(?<!\w){re.escape(word)}(?!\w)"
    return re.search(pattern, prompt, re.IGNORECASE) is not None


def with_trigger_words(prompt: str, words: Sequence[str]) -> str:
    """The prompt with the trigger words the artist has not typed yet appended, after
    ", " when it has text: the artist's own words stay first and unchanged."""
    new: list[str] = []
    for word in words:
        if word and not _has_word(prompt, word) and word.casefold() not in map(str.casefold, new):
            new.append(word)
    if not new:
        return prompt
    text = prompt.rstrip().rstrip(",").rstrip()
    added = trigger_words_text(new)
    return f"{text}, {added}" if text else added


def loras_for(models: ModelList, checkpoint: str | None) -> list[str]:
    """The LoRAs that fit `checkpoint` (None: the server's default): its family's and
    those whose family the server does not know. All of them when the checkpoint's
    family is unknown."""
    family = base_family(models.family_of(checkpoint))
    if not family:
        return list(models.loras)
    return [
        name
        for name in models.loras
        if base_family(models.lora_families.get(name, "")) in ("", family)
    ]


@dataclass(frozen=True)
class MissingFile:
    """A file the server found and cannot use, as the artist reads it."""

    name: str
    kind: str  # in words
    reason: str


NO_REASON = "The server did not say why."


def missing(models: ModelList) -> list[MissingFile]:
    """Every unusable file the server reports, each once: the `unusable` list and the
    unusable embeddings, VAEs, upscalers and preview decoders."""
    files = [
        *models.unusable,
        *(item for item in models.embeddings if not item.usable),
        *(item for item in models.vaes if not item.usable),
        *(item for item in models.preview_decoders if not item.usable),
    ]
    found = [
        MissingFile(item.name, KIND_NAMES.get(item.kind, item.kind), item.reason or NO_REASON)
        for item in files
    ]
    found += [
        MissingFile(item.name, KIND_NAMES["upscaler"], item.reason or NO_REASON)
        for item in models.upscalers
        if not item.usable
    ]
    unique = {(item.name, item.kind): item for item in found}
    return sorted(unique.values(), key=lambda item: (item.kind, item.name.casefold()))


def missing_text(files: list[MissingFile]) -> str:
    """The view's text when nothing is missing, or a one-line summary."""
    if not files:
        return "Every model file the server found can be used."
    count = len(files)
    return f"{count} file{'s' if count > 1 else ''} found but not usable:"
