"""Fast models (LCM, Lightning, Hyper-SD, Turbo): which files are one, and how they sample.

Why: these are distilled to draw a picture in 1 to 8 steps, with little or no prompt
guidance and a particular scheduler. Run with the defaults (DPM++ 2M Karras, 20 steps,
CFG 7) they give burnt, noisy pictures, and they waste the speed they were made for.
Their files carry no flag that says what they are, so the kind is read the way artists
and other tools tell them apart: from the file's name (its folder names included),
else from the name stored in the safetensors metadata (`modelspec.title`,
`ss_output_name`, ...). Only the header is read for that, by the library.

What each kind needs is written as an A1111 sampler name ("Euler SGM Uniform": Euler
with trailing timestep spacing), so `samplers.py` builds it the same way as for an
A1111 client asking for "Euler" with the "SGM Uniform" schedule: one mapping, two doors.

Two fast models are told by their family instead (`family_fast_mode`): Flux.1 schnell
(distilled to 1-4 steps without guidance: Euler, 4 steps, no CFG, as its model card
runs it) is a family of its own; SD 3.5 large turbo has large's architecture and is
named "turbo", and on a flow-matching family every fast kind runs the flow-match Euler
(`samplers.py`), the one sampler those pipelines take; SAI's card runs large turbo
with 4 steps and guidance 0, which is CFG 1 here (both switch CFG off).

This module is plain data and text: no torch, no diffusers.
"""

from __future__ import annotations

import enum
import itertools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from kd_server.families import Family

if TYPE_CHECKING:
    from kd_server.generation import GenerationRequest
    from kd_server.library import ModelLibrary


class FastKind(str, enum.Enum):
    """The families of few-step models. The values are what `/v1/models` reports."""

    LCM = "lcm"
    LIGHTNING = "lightning"
    HYPER = "hyper-sd"
    TURBO = "turbo"
    SCHNELL = "schnell"  # Flux.1 schnell, told by its family


@dataclass(frozen=True)
class FastMode:
    """A fast model's kind and the sampling it is made for."""

    kind: FastKind
    sampler: str  # an A1111 name that `samplers.py` resolves
    steps: int
    cfg_scale: float
    found_in: str  # "name", or the metadata key the kind was read from


@dataclass(frozen=True)
class _Recipe:
    sampler: str
    steps: int  # when the name gives no step count
    cfg_scale: float


#: What each kind runs with. CFG 1 switches classifier-free guidance off (half the UNet
#: work), which is what these models were distilled for; LCM's authors allow 1-2.
#: Sources: the model cards (LCM-LoRA: LCM scheduler, 2-8 steps; SDXL-Lightning:
#: Euler, trailing timesteps, no guidance; Hyper-SD: DDIM, trailing timesteps;
#: SDXL-Turbo: Euler ancestral, trailing timesteps, no guidance, 1-4 steps).
RECIPES: dict[FastKind, _Recipe] = {
    FastKind.LCM: _Recipe("LCM", 4, 1.0),
    FastKind.LIGHTNING: _Recipe("Euler SGM Uniform", 4, 1.0),
    FastKind.HYPER: _Recipe("DDIM SGM Uniform", 4, 1.0),
    FastKind.TURBO: _Recipe("Euler a SGM Uniform", 4, 1.0),
}
#: Flux.1 schnell's sampling (its model card: 4 steps, guidance 0, max sequence 256).
SCHNELL = FastMode(FastKind.SCHNELL, "Euler", 4, 1.0, "family")
#: The sampler every fast kind runs on a flow-matching family (Flux, SD 3.5).
FLOW_SAMPLER = "Euler"
#: Hyper-SD's "CFG" LoRAs keep prompt guidance; their card recommends 5 to 8.
HYPER_CFG_SCALE = 5.0
#: A step count read from a name is believed within these bounds ("sdxl_lightning_4step").
MAX_NAMED_STEPS = 50

#: Metadata keys that hold a model's own name, in the order they are trusted.
NAME_KEYS = ("modelspec.title", "ss_output_name", "title", "name")

_KIND_WORDS = {"lcm": FastKind.LCM, "lightning": FastKind.LIGHTNING, "turbo": FastKind.TURBO}
_STEP_WORDS = ("step", "steps")


def words(text: str) -> list[str]:
    """A name cut into lower-case words at separators, case changes and digits:
    "realvisxlV40_v40LightningBakedvae" -> [..., "40", "lightning", "bakedvae"],
    "Hyper-SD15-8steps-CFG-lora" -> ["hyper", "sd", "15", "8", "steps", "cfg", "lora"]."""
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", text)
    spaced = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", spaced)
    spaced = re.sub(r"([A-Za-z])([0-9])", r"\1 \2", spaced)
    spaced = re.sub(r"([0-9])([A-Za-z])", r"\1 \2", spaced)
    return [word for word in re.split(r"[^a-z0-9]+", spaced.lower()) if word]


def _kind(tokens: list[str]) -> FastKind | None:
    for index, word in enumerate(tokens):
        if word in _KIND_WORDS:
            return _KIND_WORDS[word]
        following = tokens[index + 1] if index + 1 < len(tokens) else ""
        if word.startswith("hypersd") or (word == "hyper" and following.startswith("sd")):
            return FastKind.HYPER
    return None


def _named_steps(tokens: list[str]) -> int | None:
    for word, following in itertools.pairwise(tokens):
        if word.isdigit() and following in _STEP_WORDS and 1 <= int(word) <= MAX_NAMED_STEPS:
            return int(word)
    return None


def mode_from_text(text: str, found_in: str) -> FastMode | None:
    """The fast mode a name announces, with the step count it carries if any."""
    tokens = words(text)
    kind = _kind(tokens)
    if kind is None:
        return None
    recipe = RECIPES[kind]
    cfg = recipe.cfg_scale
    if kind is FastKind.HYPER and "cfg" in tokens:
        cfg = HYPER_CFG_SCALE
    steps = _named_steps(tokens) or recipe.steps
    return FastMode(kind, recipe.sampler, steps, cfg, found_in)


def detect_fast_mode(relative_name: str, metadata: Mapping[str, str]) -> FastMode | None:
    """The fast mode of a model file or folder: its own name first, then its folders
    (innermost first: `lcm-lora-sdv1-5/pytorch_lora_weights`), then the names its
    metadata records. None for an ordinary model."""
    parts = relative_name.split("/")
    for part in reversed(parts):
        mode = mode_from_text(part, "name")
        if mode is not None:
            return mode
    for key in NAME_KEYS:
        value = metadata.get(key)
        if isinstance(value, str):
            mode = mode_from_text(value, key)
            if mode is not None:
                return mode
    return None


def family_fast_mode(family: Family | None, named: FastMode | None) -> FastMode | None:
    """The fast mode of a checkpoint of `family` whose name or metadata announce
    `named` (None: nothing): Flux.1 schnell is always one; on Flux and SD 3.5 a named
    kind (SD 3.5 large turbo) keeps its steps and CFG and runs the flow-match Euler."""
    if family is None:
        return named
    if named is None:
        return SCHNELL if family is Family.FLUX_SCHNELL else None
    if family.info.is_transformer and named.sampler != FLOW_SAMPLER:
        return replace(named, sampler=FLOW_SAMPLER)
    return named


def naming_metadata(metadata: Mapping[str, object]) -> tuple[tuple[str, str], ...]:
    """The metadata entries detection reads, kept short (a scan caches them per file)."""
    return tuple(
        (key, value[:256]) for key in NAME_KEYS if isinstance(value := metadata.get(key), str)
    )


# ------------------------------------------------------------------ sampling "auto"

#: The sampling fields a client may set itself; "auto" fills only the others.
SAMPLING_FIELDS = ("sampler", "steps", "cfg_scale")
#: The most steps "auto" asks for (the wire's limit).
MAX_STEPS = 150


def fast_mode_of(request: GenerationRequest, library: ModelLibrary) -> FastMode | None:
    """The fast mode a job runs in: its first fast LoRA with a positive weight (the
    artist's explicit choice over a checkpoint), else its checkpoint's. Names the
    library does not know are skipped here; the engine's check refuses them."""
    from kd_server.generation import EngineError

    try:
        entry = library.default_checkpoint(request.model)
    except EngineError:
        entry = None
    family = None if entry is None else entry.family
    for lora in request.conditioning.loras:
        if lora.weight > 0:
            try:
                mode = library.get_lora(lora.name).fast
            except EngineError:
                continue
            if mode is not None:
                return family_fast_mode(family, mode)
    return None if entry is None else family_fast_mode(family, entry.fast)


def auto_sampling(
    request: GenerationRequest, library: ModelLibrary, given: Iterable[str] = ()
) -> GenerationRequest:
    """The request with its fast mode's sampler, steps and CFG, except the fields in
    `given` (those the client set itself: they win). Unchanged without a fast mode.

    For img2img and inpaint only `strength` of the steps run, so the step count is
    divided by it: the job runs the recommended number of denoising steps, as the
    model was distilled for (a Lightning 4-step LoRA at strength 0.5: 8 steps, of which
    the last 4 run)."""
    mode = fast_mode_of(request, library)
    if mode is None:
        return request
    given = set(given)
    sampling = request.sampling
    if "sampler" not in given:
        sampling = replace(sampling, sampler=mode.sampler)
    if "cfg_scale" not in given:
        sampling = replace(sampling, cfg_scale=mode.cfg_scale)
    if "steps" not in given:
        sampling = replace(sampling, steps=_steps_for(request, mode, sampling.sampler))
    return replace(request, sampling=sampling)


def _steps_for(request: GenerationRequest, mode: FastMode, sampler: str) -> int:
    from kd_server.samplers import UnknownSampler, max_steps
    from kd_server.tasks import spec_for

    steps = mode.steps
    strength = request.inputs.strength
    if spec_for(request.task).uses_strength and 0 < strength < 1:
        steps = math.ceil(steps / strength - 1e-9)
    try:
        ceiling = max_steps(sampler) or MAX_STEPS
    except UnknownSampler:  # the client's own sampler name: the engine's check refuses it
        ceiling = MAX_STEPS
    return max(1, min(steps, ceiling, MAX_STEPS))
