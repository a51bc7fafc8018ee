"""The per-family rules (family_settings, plain Python) and what they make of a job:
Flux has no negative prompt or CFG (dev and Fill send a guidance), clip skip and VAE
only where they apply, and no field a server's protocol does not know."""

from __future__ import annotations

import pytest

from krita_diffusers.family_settings import (
    DEFAULT_GUIDANCE,
    JobChoices,
    family_note,
    hidden_fields,
    job_fields,
    label,
    memory_modes,
    memory_text,
    rules_for,
    sampling_text,
)
from krita_diffusers.model_catalogue import catalogue, checkpoint_line, loras_for
from krita_diffusers.model_defaults import ModelDefaults, sampling_of, with_sampling
from krita_diffusers.protocol import JobRequest, Task, parse_models, working_resolution_for
from krita_diffusers.recipes import Recipe, from_dict, to_dict
from krita_diffusers.settings import MemoryStore, Settings
from krita_diffusers.styles import (
    Sampling,
    Style,
    StyleError,
    sampling_for,
)
from krita_diffusers.styles import (
    from_dict as style_from_dict,
)
from krita_diffusers.styles import (
    to_dict as style_to_dict,
)

CHOICES = JobChoices("blurry", 6.0, 2.5, 2, "vae-ft-mse", "fp8")


@pytest.mark.parametrize(
    ("family", "shown"),
    [
        ("sd15", "SD 1.5"),
        ("sd15-inpaint", "SD 1.5 inpaint"),
        ("sdxl", "SDXL"),
        ("sdxl-inpaint", "SDXL inpaint"),
        ("flux-dev", "Flux.1 dev"),
        ("flux-schnell", "Flux.1 schnell"),
        ("flux-fill", "Flux.1 Fill"),
        ("sd35-medium", "SD 3.5 medium"),
        ("sd35-large", "SD 3.5 large"),
        ("hidream-full", "hidream-full"),  # a future family: as the server spells it
        ("", ""),
    ],
)
def test_labels(family, shown):
    assert label(family) == shown


def test_what_applies_per_family():
    table = {
        family: (r.cfg, r.guidance, r.clip_skip, r.vae)
        for family in ("sd15", "sdxl", "flux-dev", "flux-fill", "flux-schnell", "sd35-large")
        for r in [rules_for(family)]
    }
    assert table == {
        "sd15": (True, False, True, True),
        "sdxl": (True, False, False, True),
        "flux-dev": (False, True, False, False),
        "flux-fill": (False, True, False, False),
        "flux-schnell": (False, False, False, False),
        "sd35-large": (True, False, False, False),
    }
    unknown = rules_for("hidream-full")  # offered everything, like SD
    assert (unknown.cfg, unknown.guidance, unknown.clip_skip, unknown.vae) == (
        True,
        False,
        True,
        True,
    )
    assert rules_for(None) == rules_for("")


def test_a_protocol_6_job_per_family():
    sd15 = job_fields(rules_for("sd15"), 6, CHOICES)
    assert sd15 == {
        "negative_prompt": "blurry",
        "cfg_scale": 6.0,
        "clip_skip": 2,
        "vae": "vae-ft-mse",
        "guidance": None,
        "memory_mode": "fp8",
    }
    flux = job_fields(rules_for("flux-dev"), 6, CHOICES)
    assert flux == {
        "negative_prompt": "",
        "cfg_scale": 1.0,
        "clip_skip": None,
        "vae": None,
        "guidance": 2.5,
        "memory_mode": "fp8",
    }
    unset = job_fields(rules_for("flux-fill"), 6, JobChoices())
    assert unset["guidance"] == DEFAULT_GUIDANCE and unset["memory_mode"] is None
    schnell = job_fields(rules_for("flux-schnell"), 6, CHOICES)
    assert (schnell["negative_prompt"], schnell["guidance"], schnell["cfg_scale"]) == (
        "",
        None,
        1.0,
    )
    sd35 = job_fields(rules_for("sd35-medium"), 6, CHOICES)
    assert (sd35["negative_prompt"], sd35["cfg_scale"], sd35["clip_skip"], sd35["vae"]) == (
        "blurry",
        6.0,
        None,
        None,
    )
    assert job_fields(rules_for("sd15"), 6, JobChoices(clip_skip=1))["clip_skip"] is None


def test_older_servers_get_only_the_fields_they_know():
    five = job_fields(rules_for("sd15"), 5, CHOICES)
    assert (five["clip_skip"], five["vae"], five["memory_mode"]) == (2, "vae-ft-mse", None)
    four = job_fields(rules_for("sd15"), 4, CHOICES)
    assert [four[k] for k in ("clip_skip", "vae", "guidance", "memory_mode")] == [None] * 4
    assert job_fields(rules_for("flux-dev"), 5, CHOICES)["guidance"] is None
    unknown_mode = JobChoices(memory_mode="turbo-mode")
    assert job_fields(rules_for("sd15"), 6, unknown_mode)["memory_mode"] is None


def test_the_body_carries_only_what_was_set():
    plain = JobRequest(Task.TXT2IMG, "a fox").body()
    assert not {"clip_skip", "vae", "guidance", "memory_mode"} & set(plain)
    fields = job_fields(rules_for("flux-dev"), 6, CHOICES)
    body = JobRequest(Task.TXT2IMG, "a fox", **fields).body()
    assert (body["guidance"], body["memory_mode"], body["negative_prompt"]) == (2.5, "fp8", "")
    assert "clip_skip" not in body and "vae" not in body


def test_the_gear_dialog_hides_what_does_not_apply():
    assert hidden_fields(rules_for("sd15")) == {"guidance"}
    assert hidden_fields(rules_for("sdxl")) == {"guidance", "clip_skip"}
    assert hidden_fields(rules_for("flux-dev")) == {"cfg_scale", "clip_skip", "vae"}
    assert hidden_fields(rules_for("flux-schnell")) == {"cfg_scale", "guidance", "clip_skip", "vae"}
    assert family_note(rules_for("sd15")) == ""
    assert family_note(rules_for("hidream")) == ""
    assert family_note(rules_for("flux-dev")) == (
        "Not used by the chosen model (Flux.1 dev): negative prompt and CFG, clip skip, "
        "VAE choice. Guidance sets how closely it follows the prompt."
    )
    assert "Guidance" not in family_note(rules_for("flux-schnell"))
    assert rules_for("flux-dev").why_no_cfg.startswith("Flux.1 dev uses no negative prompt")
    assert rules_for("sd15").why_no_cfg == ""


def test_the_sampling_line_per_family():
    args = ("Euler", 20, 7.0, 3.0, 2, "vae-ft-mse")
    assert sampling_text(rules_for("sd15"), *args) == (
        "Euler · 20 steps · CFG 7 · Clip skip 2 · VAE vae-ft-mse"
    )
    assert sampling_text(rules_for("flux-dev"), *args) == "Euler · 20 steps · Guidance 3"
    assert sampling_text(rules_for("flux-schnell"), "Euler", 4, 1.0) == "Euler · 4 steps"
    assert sampling_text(rules_for("sdxl"), "Euler", 20, 5.0) == "Euler · 20 steps · CFG 5"


def test_memory_modes_from_health():
    as_map = {"memory": {"flux1": {"mode": "fp8", "reason": "12 GB free"}}}
    assert memory_text(memory_modes(as_map)["flux1"]) == "Memory: fp8 (12 GB free)"
    as_list = {"memory": [{"model": "a", "mode": "full"}, {"model": 3}, "x"]}
    assert memory_text(memory_modes(as_list)["a"]) == "Memory: full"
    assert memory_modes({"memory": "garbled"}) == {} and memory_modes(None) == {}
    assert memory_text(None) == ""


MODELS = {
    "checkpoints": [
        {"name": "dream", "family": "sd15", "default": True},
        {"name": "flux1-dev", "family": "flux-dev", "default": False},
        {"name": "flux1-schnell", "family": "flux-schnell", "default": False},
        {"name": "flux1-fill", "family": "flux-fill", "default": False},
        {"name": "sd3.5", "family": "sd35-large", "default": False},
        {"name": "future", "family": "hidream-full", "default": False},
    ],
    "loras": [
        {"name": "flux-ink", "family": "flux-dev"},
        {"name": "detail", "family": "sd15"},
    ],
}


def test_the_models_view_groups_the_new_families():
    found = catalogue(parse_models(MODELS))
    groups = {g.name: g.checkpoints for g in found.families}
    assert list(groups) == ["SD 1.5", "Flux.1", "SD 3.5", "hidream-full"]
    assert groups["Flux.1"] == [
        "flux1-dev  (Flux.1 dev)",
        "flux1-schnell  (Flux.1 schnell)",
        "flux1-fill  (Flux.1 Fill)",
    ]
    assert groups["SD 3.5"] == ["sd3.5  (SD 3.5 large)"]
    assert groups["hidream-full"] == ["future"]
    assert checkpoint_line("dream", "sd15", fast=True) == "dream  (fast)"
    models = parse_models(MODELS)
    assert loras_for(models, "flux1-schnell") == ["flux-ink"]  # Flux LoRAs fit all three
    assert working_resolution_for("flux-dev") == working_resolution_for("sd35-medium") == 1024


def test_a_style_keeps_guidance_clip_skip_vae_and_memory_mode():
    style = Style("Flux ink", guidance=2.5, clip_skip=2, vae="vae-ft-mse", memory_mode="fp8")
    data = style_to_dict(style)
    assert (data["guidance"], data["clip_skip"], data["vae"], data["memory_mode"]) == (
        2.5,
        2,
        "vae-ft-mse",
        "fp8",
    )
    assert style_from_dict(data) == style
    assert "memory_mode" not in style_to_dict(Style("Plain"))  # unset: not written
    with pytest.raises(StyleError, match="memory_mode must be one of full, vae-tiling"):
        style_from_dict({"name": "x", "memory_mode": "turbo"})
    with pytest.raises(StyleError, match="clip_skip must be between 1 and 12"):
        style_from_dict({"name": "x", "clip_skip": 13})
    fallback = Sampling("Euler", 20, 7.0, guidance=3.5, clip_skip=1, vae=None)
    chosen = sampling_for(style, fallback)
    assert (chosen.guidance, chosen.clip_skip, chosen.vae) == (2.5, 2, "vae-ft-mse")
    assert sampling_for(Style("Plain"), fallback) == fallback


def test_recipes_and_model_defaults_keep_them():
    recipe = Recipe("a fox", guidance=2.5, clip_skip=2, vae="v", memory_mode="fp8")
    assert from_dict(to_dict(recipe)) == recipe
    old = from_dict({"prompt": "a fox", "guidance": "x", "clip_skip": 40})
    assert (old.guidance, old.clip_skip, old.vae, old.memory_mode) == (None, 12, None, None)
    store = MemoryStore()
    defaults = ModelDefaults(store)
    flux = Sampling("Euler", 28, 1.0, guidance=4.0, clip_skip=1, vae=None)
    defaults.remember("flux1-dev", flux)
    assert ModelDefaults(store).get("flux1-dev") == flux
    settings = with_sampling(Settings(), Sampling("Euler", 20, 7.0, clip_skip=2, vae="v"))
    assert (settings.clip_skip, settings.vae, settings.guidance) == (2, "v", 3.5)
    assert sampling_of(settings).vae == "v"
    store.set_value(
        "krita_diffusers/model_defaults", '{"a": {"sampler": "Euler", "steps": 4, "cfg_scale": 2}}'
    )
    assert ModelDefaults(store).get("a") == Sampling("Euler", 4, 2.0)  # an older entry


def test_new_families_start_from_their_makers_sampling():
    from krita_diffusers.family_settings import defaults_for

    assert defaults_for("sd15") is None and defaults_for("sdxl") is None
    assert defaults_for(None) is None and defaults_for("hidream-full") is None
    schnell = defaults_for("flux-schnell")
    assert (schnell.sampler, schnell.steps, schnell.cfg_scale, schnell.guidance) == (
        "Euler",
        4,
        None,
        None,
    )
    assert defaults_for("flux-dev").guidance == DEFAULT_GUIDANCE
    assert (defaults_for("sd35-large").steps, defaults_for("sd35-large").cfg_scale) == (28, 3.5)
