"""Per-model defaults: each checkpoint's sampler, steps and CFG (and its Flux guidance,
clip skip and VAE), remembered when the artist changes them and applied when the
checkpoint is chosen again (without a style), so CFG is set once per model.

Kept as one JSON object in the plugin's settings (`krita_diffusers/model_defaults`),
through the same `SettingsStore` as the settings, so Krita's settings file holds it
and tests use a dict. A value that cannot be read back is forgotten, never a crash.

Plain Python (standard library only).
"""

from __future__ import annotations

import json
from dataclasses import replace

from .settings import LIMITS, SETTINGS_GROUP, Settings, SettingsStore
from .styles import Sampling

KEY = f"{SETTINGS_GROUP}/model_defaults"
#: The server's default checkpoint (the docker's "Server default") is remembered
#: under this name.
SERVER_DEFAULT = ""


def _valid(entry: object) -> Sampling | None:
    if not isinstance(entry, dict):
        return None
    sampler, steps, cfg = entry.get("sampler"), entry.get("steps"), entry.get("cfg_scale")
    if not isinstance(sampler, str) or not sampler.strip():
        return None
    if isinstance(steps, bool) or not isinstance(steps, int):
        return None
    if isinstance(cfg, bool) or not isinstance(cfg, (int, float)):
        return None
    if not LIMITS["steps"].low <= steps <= LIMITS["steps"].high:
        return None
    if not LIMITS["cfg_scale"].low <= cfg <= LIMITS["cfg_scale"].high:
        return None
    # Kept since issue 18; absent (older entries) or unreadable: the defaults.
    guidance, clip_skip, vae = entry.get("guidance"), entry.get("clip_skip"), entry.get("vae")
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)):
        guidance = None
    if isinstance(clip_skip, bool) or not isinstance(clip_skip, int):
        clip_skip = 1
    return Sampling(
        sampler,
        steps,
        float(cfg),
        guidance=float(guidance) if guidance is not None and 0 <= guidance <= 30 else None,
        clip_skip=clip_skip if 1 <= clip_skip <= 12 else 1,
        vae=vae if isinstance(vae, str) and vae else None,
    )


class ModelDefaults:
    """The remembered sampling of each checkpoint, read from and written to `store`."""

    def __init__(self, store: SettingsStore) -> None:
        self.store = store
        self.entries: dict[str, Sampling] = {}
        raw = store.value(KEY)
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {}
        if isinstance(data, dict):
            for model, entry in data.items():
                sampling = _valid(entry)
                if sampling is not None:
                    self.entries[str(model)] = sampling

    def get(self, model: str | None) -> Sampling | None:
        """What was remembered for `model` (None: the server's default checkpoint)."""
        return self.entries.get(model or SERVER_DEFAULT)

    def remember(self, model: str | None, sampling: Sampling) -> None:
        """Keep `model`'s sampling (auto sampling belongs to styles, not models)."""
        if sampling.auto:
            return
        self.entries[model or SERVER_DEFAULT] = replace(sampling, auto=False)
        data = {
            name: {
                "sampler": s.sampler,
                "steps": s.steps,
                "cfg_scale": s.cfg_scale,
                "guidance": s.guidance,
                "clip_skip": s.clip_skip,
                "vae": s.vae,
            }
            for name, s in self.entries.items()
        }
        self.store.set_value(KEY, json.dumps(data, sort_keys=True))


def sampling_of(settings: Settings) -> Sampling:
    """The settings' sampler, steps and CFG, guidance, clip skip and VAE."""
    return Sampling(
        settings.sampler,
        settings.steps,
        settings.cfg_scale,
        guidance=settings.guidance,
        clip_skip=settings.clip_skip,
        vae=settings.vae or None,
    )


def changed_sampling(before: Settings, after: Settings) -> bool:
    """Whether the artist changed sampler, steps or CFG (then the chosen model
    remembers them)."""
    return sampling_of(before) != sampling_of(after)


def with_sampling(settings: Settings, sampling: Sampling) -> Settings:
    """`settings` with a model's remembered sampling in place of its own."""
    return replace(
        settings,
        sampler=sampling.sampler,
        steps=sampling.steps,
        cfg_scale=sampling.cfg_scale,
        guidance=settings.guidance if sampling.guidance is None else sampling.guidance,
        clip_skip=sampling.clip_skip,
        vae=sampling.vae or "",
    )
