"""Which settings apply to which model family, and what a job sends for each.

The server reports each checkpoint's family (`/v1/models`, `family`): `sd15`,
`sd15-inpaint`, `sdxl`, `sdxl-inpaint` and, since protocol 6, `flux-dev`,
`flux-schnell`, `flux-fill`, `sd35-medium`, `sd35-large`. They differ in what an
artist can set:

- SD 1.5, SDXL, SD 3.5: a negative prompt and a CFG scale.
- Flux.1 dev and Fill: no negative prompt and no CFG (the model is guidance-distilled);
  a "Guidance" value instead (default 3.5), sent as the job's `guidance`.
- Flux.1 schnell: neither negative, CFG nor guidance.
- Clip skip (A1111's) only changes SD 1.5 models: SDXL always reads its penultimate
  layers, and the Flux / SD 3.5 families refuse it. A VAE from the server's VAE folder
  fits SD 1.5 and SDXL (4-channel latents), not the 16-channel Flux / SD 3.5 ones.

A family this plugin does not know yet (a newer server) is shown as the server spells
it and treated like SD: every setting is offered and nothing new is sent.

Plain Python (standard library only): the docker and the dialogs only wire these
rules to widgets, and the tests check them without Qt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: The first protocol with `clip_skip` and `vae` on jobs (and `vaes` in `/v1/models`).
CLIP_SKIP_PROTOCOL = 5
#: The first protocol with the Flux and SD 3.5 families, `guidance` and `memory_mode`.
FAMILIES_PROTOCOL = 6

#: Flux's distilled guidance when the artist set none (the server's default too).
DEFAULT_GUIDANCE = 3.5

#: The server's memory modes (job field `memory_mode`, protocol 6), most memory first;
#: None (not in this list) leaves the choice to the server.
MEMORY_MODES = ("full", "vae-tiling", "fp8", "model-offload", "sequential-offload")
MEMORY_MODE_LABELS = {
    "full": "Full (fastest, most memory)",
    "vae-tiling": "VAE tiling",
    "fp8": "FP8 weights",
    "model-offload": "Model offload (parts in RAM)",
    "sequential-offload": "Sequential offload (least memory, slowest)",
}

#: The wire values in the order the models view lists their groups.
LABELS = {
    "sd15": "SD 1.5",
    "sd15-inpaint": "SD 1.5 inpaint",
    "sdxl": "SDXL",
    "sdxl-inpaint": "SDXL inpaint",
    "flux-dev": "Flux.1 dev",
    "flux-schnell": "Flux.1 schnell",
    "flux-fill": "Flux.1 Fill",
    "sd35-medium": "SD 3.5 medium",
    "sd35-large": "SD 3.5 large",
}

#: The groups of the models view: a base family's checkpoints, LoRAs and embeddings
#: together (an inpaint model beside its base; Flux dev, schnell and Fill share LoRAs).
GROUPS = {"sd15": "SD 1.5", "sdxl": "SDXL", "flux": "Flux.1", "sd35": "SD 3.5"}


def label(family: str | None) -> str:
    """`flux-dev` -> "Flux.1 dev"; an unknown family as the server spells it."""
    return LABELS.get(family or "", family or "")


def group(family: str | None) -> str:
    """The models view's group: `sd15-inpaint` -> `sd15`, `flux-fill` -> `flux`."""
    return (family or "").split("-", 1)[0]


@dataclass(frozen=True)
class FamilyRules:
    """What applies to one family. `cfg`: the negative prompt and the CFG scale;
    `guidance`: Flux's distilled guidance; `clip_skip`, `vae`: A1111's clip skip and
    a VAE file of the server."""

    family: str
    label: str
    cfg: bool = True
    guidance: bool = False
    clip_skip: bool = True
    vae: bool = True

    @property
    def why_no_cfg(self) -> str:
        """The tooltip of the negative prompt and CFG when they do not apply."""
        if self.cfg:
            return ""
        text = f"{self.label} uses no negative prompt and no CFG (it was trained without)"
        if self.guidance:
            return text + ": Guidance sets how closely it follows the prompt."
        return text + "."


def rules_for(family: str | None) -> FamilyRules:
    """The rules of `family` (None or "" when unknown: SD's, everything offered)."""
    name = family or ""
    shown = label(name)
    if name in ("flux-dev", "flux-fill"):
        return FamilyRules(name, shown, cfg=False, guidance=True, clip_skip=False, vae=False)
    if name == "flux-schnell":
        return FamilyRules(name, shown, cfg=False, guidance=False, clip_skip=False, vae=False)
    if name in ("sd35-medium", "sd35-large"):
        return FamilyRules(name, shown, clip_skip=False, vae=False)
    if name in ("sdxl", "sdxl-inpaint"):
        return FamilyRules(name, shown, clip_skip=False)
    return FamilyRules(name, shown)


@dataclass(frozen=True)
class FamilyDefaults:
    """Where to start with a model of a family the artist never tuned: the sampling
    its makers recommend (the server runs every flow-matching model with Euler)."""

    sampler: str
    steps: int
    cfg_scale: float | None = None  # None: keep the settings' (it does not apply)
    guidance: float | None = None


#: The new families' starting sampling (SD 1.5 and SDXL keep the settings').
DEFAULTS = {
    "flux-dev": FamilyDefaults("Euler", 28, guidance=DEFAULT_GUIDANCE),
    "flux-fill": FamilyDefaults("Euler", 50, guidance=30.0),
    "flux-schnell": FamilyDefaults("Euler", 4),
    "sd35-medium": FamilyDefaults("Euler", 40, cfg_scale=4.5),
    "sd35-large": FamilyDefaults("Euler", 28, cfg_scale=3.5),
}


def defaults_for(family: str | None) -> FamilyDefaults | None:
    """The starting sampling of `family`; None: keep what the settings have."""
    return DEFAULTS.get(family or "")


def hidden_fields(rules: FamilyRules) -> set[str]:
    """The gear dialog's settings (`settings.Settings` field names) that do not apply
    to the family, so the dialog hides them."""
    hidden = set()
    if not rules.cfg:
        hidden.add("cfg_scale")
    if not rules.guidance:
        hidden.add("guidance")
    if not rules.clip_skip:
        hidden.add("clip_skip")
    if not rules.vae:
        hidden.add("vae")
    return hidden


def family_note(rules: FamilyRules) -> str:
    """The gear dialog's sentence on what the chosen model's family does not use
    ("" for SD 1.5, and for a family this plugin does not know)."""
    if not rules.family or rules.family not in LABELS:
        return ""
    missing = []
    if not rules.cfg:
        missing.append("negative prompt and CFG")
    if not rules.clip_skip:
        missing.append("clip skip")
    if not rules.vae:
        missing.append("VAE choice")
    if not missing:
        return ""
    text = f"Not used by the chosen model ({rules.label}): {', '.join(missing)}"
    if rules.guidance:
        text += ". Guidance sets how closely it follows the prompt"
    return text + "."


@dataclass(frozen=True)
class JobChoices:
    """What the artist chose beside the sampler, steps and CFG: the rules decide
    which of them a job of a family sends."""

    negative_prompt: str = ""
    cfg_scale: float = 7.0
    guidance: float | None = None
    clip_skip: int = 1
    vae: str | None = None
    memory_mode: str | None = None


def job_fields(rules: FamilyRules, protocol: int, chosen: JobChoices) -> dict[str, Any]:
    """The job body's fields for these choices (as `protocol.JobRequest` arguments):
    a setting that does not apply is sent as "none" (an empty negative, CFG 1) or left
    out, and a field the server's protocol does not have is never sent (an older
    server refuses fields it does not know)."""
    fields: dict[str, Any] = {
        "negative_prompt": chosen.negative_prompt if rules.cfg else "",
        "cfg_scale": chosen.cfg_scale if rules.cfg else 1.0,
        "clip_skip": None,
        "vae": None,
        "guidance": None,
        "memory_mode": None,
    }
    if protocol >= CLIP_SKIP_PROTOCOL:
        if rules.clip_skip and chosen.clip_skip > 1:
            fields["clip_skip"] = chosen.clip_skip
        if rules.vae and chosen.vae:
            fields["vae"] = chosen.vae
    if protocol >= FAMILIES_PROTOCOL:
        if rules.guidance:
            fields["guidance"] = DEFAULT_GUIDANCE if chosen.guidance is None else chosen.guidance
        if chosen.memory_mode in MEMORY_MODES:
            fields["memory_mode"] = chosen.memory_mode
    return fields


def sampling_text(
    rules: FamilyRules,
    sampler: str,
    steps: int,
    cfg_scale: float,
    guidance: float | None = None,
    clip_skip: int = 1,
    vae: str | None = None,
) -> str:
    """The docker's sampling line: "Euler · 20 steps · CFG 7" for SD, "· Guidance 3.5"
    for Flux dev, nothing of either for Flux schnell; clip skip and VAE where set and
    applying."""
    parts = [sampler, f"{steps} steps"]
    if rules.cfg:
        parts.append(f"CFG {cfg_scale:g}")
    if rules.guidance:
        parts.append(f"Guidance {DEFAULT_GUIDANCE if guidance is None else guidance:g}")
    if rules.clip_skip and clip_skip > 1:
        parts.append(f"Clip skip {clip_skip}")
    if rules.vae and vae:
        parts.append(f"VAE {vae}")
    return " · ".join(parts)


@dataclass(frozen=True)
class MemoryInfo:
    """A loaded model's memory mode as `/v1/health` reports it, and why."""

    model: str
    mode: str
    reason: str = ""


def memory_modes(health: object) -> dict[str, MemoryInfo]:
    """The memory mode of each loaded model from a `/v1/health` answer (protocol 6):
    `memory` as {model: {mode, reason}} or a list of {model, mode, reason}. Absent or
    garbled (an older server): none."""
    if not isinstance(health, dict):
        return {}
    raw = health.get("memory")
    items: list[tuple[object, object]] = []
    if isinstance(raw, dict):
        items = list(raw.items())
    elif isinstance(raw, list):
        items = [(i.get("model"), i) for i in raw if isinstance(i, dict)]
    found = {}
    for model, entry in items:
        if not isinstance(model, str) or not isinstance(entry, dict):
            continue
        mode = entry.get("mode")
        if isinstance(mode, str) and mode:
            reason = entry.get("reason")
            found[model] = MemoryInfo(model, mode, reason if isinstance(reason, str) else "")
    return found


def memory_text(info: MemoryInfo | None) -> str:
    """The docker's memory line: "Memory: fp8 (why)", or "" when the server said none."""
    if info is None:
        return ""
    return f"Memory: {info.mode}" + (f" ({info.reason})" if info.reason else "")
