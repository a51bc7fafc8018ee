"""A1111 sampler names mapped to diffusers schedulers, built fresh for every job.

Schedulers keep state between steps and pipelines made with `from_pipe` share theirs,
so a job never reuses one: `build_scheduler` makes a new instance from the loaded
model's own scheduler config (its betas and offsets) with the sampler's overrides.
A1111 spells a schedule two ways: a combined legacy name ("DPM++ 2M Karras") or a
sampler plus a separate schedule type ("DPM++ 2M" + "Karras"); both are accepted.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import diffusers


class Schedule(str, enum.Enum):
    AUTOMATIC = "Automatic"
    KARRAS = "Karras"
    EXPONENTIAL = "Exponential"


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    scheduler_class: str
    options: dict[str, Any] = field(default_factory=dict)
    schedules: tuple[Schedule, ...] = (Schedule.AUTOMATIC,)


_SIGMA_SCHEDULES = (Schedule.AUTOMATIC, Schedule.KARRAS, Schedule.EXPONENTIAL)

SAMPLERS: tuple[SamplerSpec, ...] = (
    SamplerSpec("DPM++ 2M", "DPMSolverMultistepScheduler", {}, _SIGMA_SCHEDULES),
    SamplerSpec(
        "DPM++ 2M SDE",
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++"},
        _SIGMA_SCHEDULES,
    ),
    SamplerSpec(
        "DPM++ SDE",
        "DPMSolverSinglestepScheduler",
        {"algorithm_type": "sde-dpmsolver++"},
        _SIGMA_SCHEDULES,
    ),
    SamplerSpec("Euler", "EulerDiscreteScheduler", {}, _SIGMA_SCHEDULES),
    SamplerSpec("Euler a", "EulerAncestralDiscreteScheduler"),
    SamplerSpec("Heun", "HeunDiscreteScheduler", {}, (Schedule.AUTOMATIC, Schedule.KARRAS)),
    SamplerSpec("DPM2", "KDPM2DiscreteScheduler", {}, (Schedule.AUTOMATIC, Schedule.KARRAS)),
    SamplerSpec(
        "DPM2 a", "KDPM2AncestralDiscreteScheduler", {}, (Schedule.AUTOMATIC, Schedule.KARRAS)
    ),
    SamplerSpec("DDIM", "DDIMScheduler", {"set_alpha_to_one": False}),
    SamplerSpec("PLMS", "PNDMScheduler", {"skip_prk_steps": True}),
    SamplerSpec("UniPC", "UniPCMultistepScheduler", {}, (Schedule.AUTOMATIC, Schedule.KARRAS)),
    SamplerSpec("DEIS", "DEISMultistepScheduler", {}, (Schedule.AUTOMATIC, Schedule.KARRAS)),
    SamplerSpec("LCM", "LCMScheduler"),
)

_BY_NAME = {spec.name.lower(): spec for spec in SAMPLERS}
_SCHEDULE_OPTIONS = {
    Schedule.AUTOMATIC: {},
    Schedule.KARRAS: {"use_karras_sigmas": True},
    Schedule.EXPONENTIAL: {"use_exponential_sigmas": True},
}

DEFAULT_SAMPLER = "DPM++ 2M Karras"


class UnknownSampler(ValueError):
    """The name is not one we can build; the message lists the known names."""


def sampler_names() -> list[str]:
    """Every accepted name in A1111's legacy spelling ("DPM++ 2M Karras", "Euler a", ...)."""
    names: list[str] = []
    for spec in SAMPLERS:
        for schedule in spec.schedules:
            names.append(
                spec.name if schedule is Schedule.AUTOMATIC else f"{spec.name} {schedule.value}"
            )
    return names


def schedule_names() -> list[str]:
    return [schedule.value for schedule in Schedule]


def resolve(name: str, schedule: str | None = None) -> tuple[SamplerSpec, Schedule]:
    """Split a combined name or a (sampler, schedule) pair into a spec and a schedule."""
    wanted = name.strip()
    chosen = Schedule.AUTOMATIC
    if schedule and schedule.strip().lower() not in ("", "automatic"):
        chosen = _parse_schedule(schedule)
    spec = _BY_NAME.get(wanted.lower())
    if spec is None:
        for candidate in (Schedule.KARRAS, Schedule.EXPONENTIAL):
            suffix = " " + candidate.value.lower()
            if wanted.lower().endswith(suffix):
                spec = _BY_NAME.get(wanted.lower()[: -len(suffix)])
                chosen = candidate
                break
    if spec is None:
        raise UnknownSampler(
            f"Unknown sampler '{name}'. Choose one of: {', '.join(sampler_names())}."
        )
    if chosen not in spec.schedules:
        raise UnknownSampler(f"The sampler '{spec.name}' has no '{chosen.value}' schedule.")
    return spec, chosen


def _parse_schedule(schedule: str) -> Schedule:
    for candidate in Schedule:
        if candidate.value.lower() == schedule.strip().lower():
            return candidate
    raise UnknownSampler(
        f"Unknown schedule type '{schedule}'. Choose one of: {', '.join(schedule_names())}."
    )


def build_scheduler(name: str, base_config: dict[str, Any], schedule: str | None = None) -> Any:
    """A new scheduler for one job, keeping the model's own training schedule."""
    spec, chosen = resolve(name, schedule)
    cls = getattr(diffusers, spec.scheduler_class)
    overrides = {**spec.options, **_SCHEDULE_OPTIONS[chosen]}
    return cls.from_config(base_config, **overrides)


def canonical_name(name: str, schedule: str | None = None) -> str:
    """The legacy combined spelling, used in PNG metadata and reports."""
    spec, chosen = resolve(name, schedule)
    return spec.name if chosen is Schedule.AUTOMATIC else f"{spec.name} {chosen.value}"
