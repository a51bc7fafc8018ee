"""A1111 sampler names mapped to diffusers schedulers, built fresh for every job.

Schedulers keep state between steps and pipelines made with `from_pipe` share theirs,
so a job never reuses one: `build_scheduler` makes a new instance from the loaded
model's own scheduler config (its betas and offsets) with the sampler's overrides.

A1111 spells a schedule two ways: a combined legacy name ("DPM++ 2M Karras") or a
sampler plus a separate schedule type ("DPM++ 2M" + "Karras"); both are accepted, and
schedule names match case-insensitively in A1111's labels ("SGM Uniform"), ids
("sgm_uniform") and run-together spellings ("SGMUniform").

Every schedule of A1111 1.10 is accepted. Each is realized through what diffusers can
express (`realize`): its sigma switches (Karras, exponential, beta), its timestep
spacing (linspace, trailing, leading) or, for Euler, a custom sigma list
(`sigma_schedules.py`). A schedule a sampler's diffusers class cannot express is
replaced by the nearest one it can, and `Realized.note` says so (the A1111 layer
writes it into the infotext), so the substitution is never silent.

Flow-matching families (Flux, SD 3.5: `FamilyInfo.is_transformer`) denoise along a
straight path from noise to image and their pipelines drive the scheduler through
flow-matching calls (`scale_noise`, sigmas and Flux's resolution shift `mu`) that only
diffusers' flow-match schedulers answer. There "Euler" is
`FlowMatchEulerDiscreteScheduler` built from the model's own scheduler config (its
shift), with the schedules it can express (Karras, Exponential, Beta; Simple, SGM
Uniform, Normal and Uniform are the model's own shifted schedule). Every other sampler
runs as that Euler, with a note that says so: the other diffusers samplers either do
not take the pipelines' sigmas or lack `scale_noise` (img2img and inpaint), so they
cannot run these models in every task. Forge and ComfyUI default to Euler for them too.
"""

from __future__ import annotations

import enum
import inspect
import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import diffusers
from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler
from diffusers.utils import is_scipy_available

from kd_server.families import Family
from kd_server.sigma_schedules import (
    AYS_SD15,
    AYS_SDXL,
    SigmaFunction,
    align_your_steps,
    beta,
    kl_optimal,
)


class Schedule(str, enum.Enum):
    """A1111 1.10's schedule types; the value is A1111's label."""

    AUTOMATIC = "Automatic"
    UNIFORM = "Uniform"
    KARRAS = "Karras"
    EXPONENTIAL = "Exponential"
    POLYEXPONENTIAL = "Polyexponential"
    SGM_UNIFORM = "SGM Uniform"
    KL_OPTIMAL = "KL Optimal"
    ALIGN_YOUR_STEPS = "Align Your Steps"
    SIMPLE = "Simple"
    NORMAL = "Normal"
    DDIM = "DDIM"
    BETA = "Beta"

    @property
    def key(self) -> str:
        """A1111's id of the schedule (`sgm_uniform`), used in `GET schedulers`."""
        return self.value.lower().replace(" ", "_")


#: Extra spellings clients send, besides the label and the id.
SCHEDULE_ALIASES: dict[Schedule, tuple[str, ...]] = {
    Schedule.SGM_UNIFORM: ("SGMUniform",),
    Schedule.ALIGN_YOUR_STEPS: ("AYS",),
}

#: A1111's `default_rho` per schedule (-1: none) and whether it needs the model's own
#: sigma table (`need_inner_model`); `GET schedulers` reports both as A1111 does.
SCHEDULE_RHO = {Schedule.KARRAS: 7.0, Schedule.POLYEXPONENTIAL: 1.0}
NEEDS_MODEL_SIGMAS = frozenset(
    {
        Schedule.UNIFORM,
        Schedule.SGM_UNIFORM,
        Schedule.SIMPLE,
        Schedule.NORMAL,
        Schedule.DDIM,
        Schedule.BETA,
    }
)


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    scheduler_class: str
    options: dict[str, Any] = field(default_factory=dict)
    #: The combinations listed by `sampler_names` (others are accepted too).
    schedules: tuple[Schedule, ...] = (Schedule.AUTOMATIC,)
    #: Whether the class runs an arbitrary sigma list (`set_timesteps(sigmas=...)`).
    custom_sigmas: bool = False
    #: The class picks its own timesteps whatever the config says (LCM): only Automatic.
    fixed_schedule: bool = False
    #: The most steps the class can run (LCM: the 50 steps of its distillation schedule).
    max_steps: int | None = None


#: LCMScheduler's `original_inference_steps`: it picks a job's steps among these.
LCM_MAX_STEPS = 50

_SIGMA_SCHEDULES = (Schedule.AUTOMATIC, Schedule.KARRAS, Schedule.EXPONENTIAL)
#: Fast models (kd_server.fast_modes) run these with trailing timesteps ("SGM Uniform"),
#: so they are listed too.
_TRAILING = (Schedule.AUTOMATIC, Schedule.SGM_UNIFORM)

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
    SamplerSpec(
        "Euler",
        "EulerDiscreteScheduler",
        {},
        (*_SIGMA_SCHEDULES, Schedule.SGM_UNIFORM),
        custom_sigmas=True,
    ),
    SamplerSpec("Euler a", "EulerAncestralDiscreteScheduler", {}, _TRAILING),
    SamplerSpec("Heun", "HeunDiscreteScheduler", {}, (Schedule.AUTOMATIC, Schedule.KARRAS)),
    SamplerSpec("DPM2", "KDPM2DiscreteScheduler", {}, (Schedule.AUTOMATIC, Schedule.KARRAS)),
    SamplerSpec(
        "DPM2 a", "KDPM2AncestralDiscreteScheduler", {}, (Schedule.AUTOMATIC, Schedule.KARRAS)
    ),
    SamplerSpec("DDIM", "DDIMScheduler", {"set_alpha_to_one": False}, _TRAILING),
    SamplerSpec("PLMS", "PNDMScheduler", {"skip_prk_steps": True}),
    SamplerSpec("UniPC", "UniPCMultistepScheduler", {}, (Schedule.AUTOMATIC, Schedule.KARRAS)),
    SamplerSpec("DEIS", "DEISMultistepScheduler", {}, (Schedule.AUTOMATIC, Schedule.KARRAS)),
    SamplerSpec("LCM", "LCMScheduler", fixed_schedule=True, max_steps=LCM_MAX_STEPS),
)

_BY_NAME = {spec.name.lower(): spec for spec in SAMPLERS}

DEFAULT_SAMPLER = "DPM++ 2M Karras"


class UnknownSampler(ValueError):
    """The name is not one we can build; the message lists the known names."""


# ------------------------------------------------------------------------ names


def _fold(text: str) -> str:
    """Case, spaces, '_' and '-' do not matter: "SGM Uniform" == "sgm_uniform"."""
    return re.sub(r"[\s_\-]+", "", text.lower())


def schedule_spellings(schedule: Schedule) -> tuple[str, ...]:
    return (schedule.value, schedule.key, *SCHEDULE_ALIASES.get(schedule, ()))


#: Schedule spellings as name suffixes, longest first ("sgm uniform" before "uniform").
_SUFFIXES = sorted(
    (
        (spelling.lower(), schedule)
        for schedule in Schedule
        for spelling in schedule_spellings(schedule)
    ),
    key=lambda item: -len(item[0]),
)

_SCHEDULE_BY_FOLD = {
    _fold(spelling): schedule for schedule in Schedule for spelling in schedule_spellings(schedule)
}


def sampler_names() -> list[str]:
    """The listed names in A1111's legacy spelling ("DPM++ 2M Karras", "Euler a", ...)."""
    names: list[str] = []
    for spec in SAMPLERS:
        for schedule in spec.schedules:
            names.append(
                spec.name if schedule is Schedule.AUTOMATIC else f"{spec.name} {schedule.value}"
            )
    return names


def schedule_names() -> list[str]:
    return [schedule.value for schedule in Schedule]


def parse_schedule(schedule: str) -> Schedule:
    """A schedule type in any of the spellings clients send; UnknownSampler otherwise."""
    found = _SCHEDULE_BY_FOLD.get(_fold(schedule))
    if found is None:
        raise UnknownSampler(
            f"Unknown schedule type '{schedule}'. Choose one of: {', '.join(schedule_names())}."
        )
    return found


def _split_combined(wanted: str) -> tuple[SamplerSpec, Schedule] | None:
    """Split "DPM++ 2M SGM Uniform" into (DPM++ 2M, SGM Uniform): a known sampler name
    followed by a schedule spelling; the longest spelling that leaves a sampler wins."""
    lowered = wanted.lower()
    for suffix, schedule in _SUFFIXES:
        if lowered.endswith(" " + suffix):
            spec = _BY_NAME.get(lowered[: -len(suffix) - 1].strip())
            if spec is not None:
                return spec, schedule
    return None


def resolve(name: str, schedule: str | None = None) -> tuple[SamplerSpec, Schedule]:
    """Split a combined name or a (sampler, schedule) pair into a spec and the schedule
    asked for. A schedule inside the name wins over a separate one, as in A1111."""
    wanted = name.strip()
    chosen = Schedule.AUTOMATIC
    if schedule and schedule.strip():
        chosen = parse_schedule(schedule)
    spec = _BY_NAME.get(wanted.lower())
    if spec is None:
        combined = _split_combined(wanted)
        if combined is not None:
            spec, chosen = combined
    if spec is None:
        raise UnknownSampler(
            f"Unknown sampler '{name}'. Choose one of: {', '.join(sampler_names())}."
        )
    return spec, chosen


# ---------------------------------------------------------------- realization


@dataclass(frozen=True)
class Realized:
    """How one (sampler, schedule) runs here: scheduler config overrides and, for a
    schedule given as a sigma list, the function that makes it."""

    spec: SamplerSpec
    requested: Schedule
    used: Schedule
    options: dict[str, Any]
    sigmas: SigmaFunction | None = None
    #: set when another sampler than the one asked for runs (flow-matching families)
    substituted: str | None = None

    @property
    def name(self) -> str:
        """The legacy combined spelling of what runs ("DPM++ 2M Karras")."""
        if self.used is Schedule.AUTOMATIC:
            return self.spec.name
        return f"{self.spec.name} {self.used.value}"

    @property
    def note(self) -> str | None:
        """Set when the requested schedule (or sampler) was replaced by the nearest
        available one."""
        if self.substituted is not None:
            return self.substituted
        if self.used is self.requested:
            return None
        return (
            f"{self.requested.value} is not available with {self.spec.name} here; "
            f"{self.used.value} was used"
        )


#: What to use when a schedule cannot run with a sampler, nearest first.
_FALLBACKS: dict[Schedule, tuple[Schedule, ...]] = {
    Schedule.EXPONENTIAL: (Schedule.KARRAS,),
    Schedule.POLYEXPONENTIAL: (Schedule.KARRAS,),
    Schedule.KL_OPTIMAL: (Schedule.KARRAS,),
    Schedule.ALIGN_YOUR_STEPS: (Schedule.KARRAS,),
    Schedule.BETA: (Schedule.KARRAS,),
}

#: Schedules that are one of diffusers' timestep spacings. Normal and Uniform are the
#: model's sigmas at evenly spaced timesteps from the last to the first ("linspace");
#: SGM Uniform and Simple leave out the first ("trailing"; A1111's Simple floors where
#: diffusers rounds, at most one training step apart); DDIM starts at timestep 1 and
#: steps by 1000 // steps ("leading" with offset 1).
_SPACINGS: dict[Schedule, dict[str, Any]] = {
    Schedule.UNIFORM: {"timestep_spacing": "linspace"},
    Schedule.NORMAL: {"timestep_spacing": "linspace"},
    Schedule.SGM_UNIFORM: {"timestep_spacing": "trailing"},
    Schedule.SIMPLE: {"timestep_spacing": "trailing"},
    Schedule.DDIM: {"timestep_spacing": "leading", "steps_offset": 1},
}

#: Schedules that are one of diffusers' sigma switches. Polyexponential with A1111's
#: default rho of 1 is the exponential schedule exactly.
_SIGMA_SWITCHES: dict[Schedule, str] = {
    Schedule.KARRAS: "use_karras_sigmas",
    Schedule.EXPONENTIAL: "use_exponential_sigmas",
    Schedule.POLYEXPONENTIAL: "use_exponential_sigmas",
    Schedule.BETA: "use_beta_sigmas",
}
_ALL_SWITCHES = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")


@cache
def _init_parameters(class_name: str) -> frozenset[str]:
    cls = getattr(diffusers, class_name)
    return frozenset(inspect.signature(cls.__init__).parameters)


#: The one sampler flow-matching families run (see the module docstring).
FLOW_EULER = SamplerSpec(
    "Euler",
    "FlowMatchEulerDiscreteScheduler",
    {},
    (Schedule.AUTOMATIC, Schedule.SIMPLE, Schedule.KARRAS, Schedule.EXPONENTIAL, Schedule.BETA),
)
#: Schedules that are the flow model's own: uniform steps in sigma, shifted as the
#: model's config says (what Forge and ComfyUI call "Simple" for these models).
_FLOW_OWN_SCHEDULE = frozenset(
    {
        Schedule.AUTOMATIC,
        Schedule.SIMPLE,
        Schedule.SGM_UNIFORM,
        Schedule.NORMAL,
        Schedule.UNIFORM,
    }
)


def is_flow(family: Family | None) -> bool:
    """Whether the family denoises by flow matching (Flux, SD 3.5)."""
    return family is not None and family.info.is_transformer


def flow_sampler_names() -> list[str]:
    """What flow-matching families run as asked (other names run as Euler)."""
    return [
        FLOW_EULER.name if s is Schedule.AUTOMATIC else f"{FLOW_EULER.name} {s.value}"
        for s in FLOW_EULER.schedules
    ]


def _realize_flow(spec: SamplerSpec, requested: Schedule, family: Family) -> Realized:
    """A sampler on a flow-matching family: Euler, with the schedule when Euler can
    run it, else the model's own schedule; the note says what was replaced."""
    label = family.info.label
    if spec.name != FLOW_EULER.name:
        return Realized(
            FLOW_EULER,
            requested,
            Schedule.AUTOMATIC,
            {},
            substituted=f"{spec.name} does not run {label} (a flow-matching model); Euler was used",
        )
    if requested in _FLOW_OWN_SCHEDULE:
        return Realized(FLOW_EULER, requested, requested, {})
    switch = _SIGMA_SWITCHES.get(requested)
    if switch is not None and (switch != "use_beta_sigmas" or is_scipy_available()):
        options = {**_switches_off(_init_parameters(FLOW_EULER.scheduler_class)), switch: True}
        used = Schedule.EXPONENTIAL if requested is Schedule.POLYEXPONENTIAL else requested
        return Realized(FLOW_EULER, requested, used, options)
    return Realized(FLOW_EULER, requested, Schedule.AUTOMATIC, {})


def _sigma_function(schedule: Schedule, family: Family | None) -> SigmaFunction | None:
    if schedule is Schedule.KL_OPTIMAL:
        return kl_optimal
    if schedule is Schedule.ALIGN_YOUR_STEPS:
        xl = family in (Family.SDXL, Family.SDXL_INPAINT)
        return align_your_steps(AYS_SDXL if xl else AYS_SD15)
    if schedule is Schedule.BETA:
        return beta
    return None


def _way(
    spec: SamplerSpec, schedule: Schedule, family: Family | None
) -> tuple[dict[str, Any], SigmaFunction | None] | None:
    """The overrides (and sigma list) that run `schedule` with `spec`, or None."""
    if schedule is Schedule.AUTOMATIC:
        return {}, None
    if spec.fixed_schedule:
        return None
    parameters = _init_parameters(spec.scheduler_class)
    if spec.custom_sigmas:
        function = _sigma_function(schedule, family)
        if function is not None:
            return _switches_off(parameters), function
    switch = _SIGMA_SWITCHES.get(schedule)
    if switch is not None and switch in parameters:
        if switch == "use_beta_sigmas" and not is_scipy_available():
            return None  # diffusers computes the beta schedule with scipy
        return {**_switches_off(parameters), switch: True}, None
    spacing = _SPACINGS.get(schedule)
    if spacing is not None and "timestep_spacing" in parameters:
        return {**_switches_off(parameters), **spacing}, None
    return None


def _switches_off(parameters: frozenset[str]) -> dict[str, Any]:
    """A model config may carry a sigma switch (say Karras); a schedule other than
    Automatic sets all of them, so two never end up on at once."""
    return {switch: False for switch in _ALL_SWITCHES if switch in parameters}


def realize(spec: SamplerSpec, requested: Schedule, family: Family | None = None) -> Realized:
    """The requested schedule if `spec`'s class can run it, else the nearest that it
    can (Karras, then Automatic), with a note."""
    for candidate in (requested, *_FALLBACKS.get(requested, ()), Schedule.AUTOMATIC):
        way = _way(spec, candidate, family)
        if way is not None:
            options, sigmas = way
            return Realized(spec, requested, candidate, options, sigmas)
    raise AssertionError("Automatic is always available")


def realized(name: str, schedule: str | None = None, family: Family | None = None) -> Realized:
    """`realize` for a sampler name (combined or not) and an optional schedule type."""
    spec, requested = resolve(name, schedule)
    if is_flow(family):
        assert family is not None
        return _realize_flow(spec, requested, family)
    return realize(spec, requested, family)


class _EulerWithSigmaList(EulerDiscreteScheduler):
    """Euler running a sigma list of `sigma_schedules.py`.

    Pipelines ask a scheduler for N steps (`set_timesteps(N)`); this one answers with
    the list's N + 1 sigmas, computed from the model's own sigma range, so the pipelines
    need no change.
    """

    sigma_list: SigmaFunction | None = None

    def set_timesteps(  # type: ignore[override]
        self,
        num_inference_steps: int | None = None,
        device: Any = None,
        timesteps: list[int] | None = None,
        sigmas: list[float] | None = None,
    ) -> None:
        if self.sigma_list is None or num_inference_steps is None or timesteps or sigmas:
            # diffusers annotates num_inference_steps as int but takes None with sigmas
            super().set_timesteps(num_inference_steps, device, timesteps, sigmas)  # type: ignore[arg-type]
            return
        table = ((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5
        custom = self.sigma_list(num_inference_steps, float(table[0]), float(table[-1]))
        super().set_timesteps(device=device, sigmas=custom)


def build_scheduler(
    name: str,
    base_config: dict[str, Any],
    schedule: str | None = None,
    family: Family | None = None,
) -> Any:
    """A new scheduler for one job, keeping the model's own training schedule.

    `family` picks the Align Your Steps levels (SDXL's or SD 1.5's, the default)."""
    plan = realized(name, schedule, family)
    overrides = {**plan.spec.options, **plan.options}
    if plan.sigmas is not None:
        scheduler = _EulerWithSigmaList.from_config(base_config, **overrides)
        scheduler.sigma_list = plan.sigmas
        return scheduler
    cls = getattr(diffusers, plan.spec.scheduler_class)
    return cls.from_config(base_config, **overrides)


def max_steps(name: str, family: Family | None = None) -> int | None:
    """The most steps the sampler can run, None when any count works."""
    return realized(name, family=family).spec.max_steps


def canonical_name(name: str, schedule: str | None = None, family: Family | None = None) -> str:
    """The legacy combined spelling of what runs (on `family`: flow-matching families
    run Euler), used in PNG metadata and reports."""
    return realized(name, schedule, family).name
