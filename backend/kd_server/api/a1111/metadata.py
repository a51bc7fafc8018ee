"""What A1111 writes about each result: the infotext (PNG and `info`) and hash fields.

The engine writes a neutral recipe (kd_server.pngmeta) for every client. A1111 clients
and PNG-metadata readers expect A1111 1.10's, so the A1111 answer rewrites it:

- the prompt as the user wrote it, `<lora:...>` tags included (some readers find
  LoRAs only there); "Lora weights" goes, the tags carry the weights;
- "Sampler" and "Schedule type" apart ("DPM++ 2M" + "Karras"), plus a "Schedule note"
  when the schedule asked for was replaced by the nearest one (samplers.realize);
- "Model hash" (short sha256) and "Lora hashes" ("name: hash", the name as written).

A hash that is not ready yet (hashes.py works in the background) is left out of the
infotext, as A1111 does without hashes; `sd_model_hash` in `info` must be a string
for strict clients, so it holds a labelled placeholder then. The PNG's text chunk is
replaced in place (pngmeta.replace_parameters): no pixels are re-encoded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kd_server.api.a1111.infotext import Infotext
from kd_server.api.a1111.schemas import _GenerationFields
from kd_server.api.a1111.translate import Plan, find_lora, parse_networks
from kd_server.api.errors import ApiError
from kd_server.families import Family
from kd_server.generation import EngineError
from kd_server.hashes import CHECKPOINT_SHORT, LORA_SHORT, UNREADABLE, EntryHash
from kd_server.library import ModelLibrary
from kd_server.pngmeta import replace_parameters
from kd_server.samplers import Schedule, realized, resolve

SCHEDULE_NOTE = "Schedule note"


@dataclass(frozen=True)
class Facts:
    """Everything the rewrite needs, gathered once per request."""

    prompt: str
    negative_prompt: str
    sampler: str  # A1111 1.10's sampler name: "DPM++ 2M"
    schedule: Schedule  # the schedule that ran
    schedule_note: str | None
    model_hash: EntryHash
    lora_hashes: tuple[tuple[str, str], ...]  # (name as written, short hash)

    @property
    def lora_hashes_text(self) -> str:
        return ", ".join(f"{name}: {value}" for name, value in self.lora_hashes)


def gather(plan: Plan, body: _GenerationFields, library: ModelLibrary) -> Facts:
    """The facts of one request: its sampler as it ran, and the hashes known now."""
    spec, _ = resolve(plan.sampler)
    ran = realized(spec.name, plan.scheduler, _family(library, plan.request.model))
    return Facts(
        prompt=plan.prompt,
        negative_prompt=plan.negative_prompt,
        sampler=ran.spec.name,  # Flux and SD 3.5 run Euler whatever was asked
        schedule=ran.used,
        schedule_note=ran.note,
        model_hash=_model_hash(library, plan.request.model),
        lora_hashes=_lora_hashes(body, library),
    )


def _family(library: ModelLibrary, name: str | None) -> Family | None:
    try:
        entry = library.get_checkpoint(name) if name else library.default_checkpoint()
    except EngineError:
        return None
    return entry.family


def _model_hash(library: ModelLibrary, name: str | None) -> EntryHash:
    try:
        entry = library.get_checkpoint(name) if name else library.default_checkpoint()
    except EngineError:  # gone in a rescan while the request ran
        return EntryHash(None, UNREADABLE)
    return library.hashes.entry_hash(entry)


def _lora_hashes(body: _GenerationFields, library: ModelLibrary) -> tuple[tuple[str, str], ...]:
    """("name as written", short hash) per LoRA tag whose hash is ready, in prompt order,
    as A1111 writes them (":" and "," removed from the name); none when extra networks
    are disabled, since nothing was applied."""
    if body.disable_extra_networks:
        return ()
    found: dict[str, str] = {}
    for text, field in ((body.prompt, "prompt"), (body.negative_prompt, "negative_prompt")):
        _, tags = parse_networks(text, field, enabled=True)
        for tag in tags:
            try:
                entry = library.get_lora(find_lora(library, tag.name))
            except (EngineError, ApiError):
                continue  # gone since the request was checked: nothing to report
            value = library.hashes.entry_hash(entry).sha256
            written = tag.name.replace(":", "").replace(",", "")
            if value is not None and written not in found:
                found[written] = value[:LORA_SHORT]
    return tuple(found.items())


def rewrite(text: str, facts: Facts) -> str:
    """The engine's infotext in A1111 1.10's form (see the module docstring)."""
    info = Infotext.parse(text)
    info.prompt, info.negative_prompt = facts.prompt, facts.negative_prompt
    info.set("Sampler", facts.sampler)
    if facts.schedule is not Schedule.AUTOMATIC:
        info.set("Schedule type", facts.schedule.value, before="CFG scale")
    if facts.model_hash.sha256 is not None:
        info.set("Model hash", facts.model_hash.short(CHECKPOINT_SHORT), before="Model")
    info.drop("Lora weights")
    if facts.lora_hashes:
        info.set("Lora hashes", facts.lora_hashes_text)
    if facts.schedule_note:
        info.set(SCHEDULE_NOTE, facts.schedule_note)
    return info.render()


def apply(images: list[tuple[bytes, str]], facts: Facts) -> list[tuple[bytes, str]]:
    """Rewrite each (PNG, infotext): the text and the PNG's `parameters` chunk."""
    finished = []
    for png, text in images:
        new_text = rewrite(text, facts)
        finished.append((replace_parameters(png, new_text), new_text))
    return finished


def complete_info(info_text: str, facts: Facts) -> str:
    """`info` with the fields that depend on hashes and on the sampler as it ran."""
    info: dict[str, Any] = json.loads(info_text)
    info["sd_model_hash"] = facts.model_hash.short(CHECKPOINT_SHORT)
    info["sampler_name"] = facts.sampler
    info["scheduler"] = facts.schedule.value
    extra = dict(info.get("extra_generation_params") or {})
    if facts.lora_hashes:
        extra["Lora hashes"] = facts.lora_hashes_text
    if facts.schedule_note:
        extra[SCHEDULE_NOTE] = facts.schedule_note
    info["extra_generation_params"] = extra
    return json.dumps(info)
