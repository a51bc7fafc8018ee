"""A1111 settings (`/sdapi/v1/options`, `override_settings`) as this server honours them.

Only `sd_model_checkpoint` can be changed. The other options listed are the values
our engine really uses (A1111's defaults); setting one of them to the value it
already has is accepted, so scripts that send their whole settings back still work,
and any other change is refused with a 422 naming the option, because silently
ignoring it would change the pictures without telling.
"""

from __future__ import annotations

import math
from typing import Any

from kd_server.api.errors import ApiError

CHECKPOINT_OPTION = "sd_model_checkpoint"

#: Options we report and what they are here (A1111's defaults, which our engine follows).
FIXED_OPTIONS: dict[str, Any] = {
    "sd_checkpoint_hash": None,
    "sd_vae": "Automatic",
    "CLIP_stop_at_last_layers": 1,
    "eta_ancestral": 1.0,
    "eta_ddim": 0.0,
    "s_churn": 0.0,
    "s_tmin": 0.0,
    "s_tmax": 0.0,
    "s_noise": 1.0,
    "s_min_uncond": 0.0,
    "initial_noise_multiplier": 1.0,
    "img2img_color_correction": False,
    "img2img_fix_steps": False,
    "inpainting_mask_weight": 1.0,
    "samples_format": "png",
    "enable_pnginfo": True,
    "live_previews_enable": True,
    "live_previews_image_format": "png",
    "show_progress_every_n_steps": 1,
    "sd_checkpoints_limit": 2,
}


def all_options(current_model: str) -> dict[str, Any]:
    return {CHECKPOINT_OPTION: current_model, **FIXED_OPTIONS}


def check_option(field: str, key: str, value: Any) -> None:
    """Refuse `key = value` unless it is the checkpoint or leaves the option as it is."""
    if key == CHECKPOINT_OPTION:
        if not isinstance(value, str) or not value.strip():
            raise ApiError(422, "invalid_request", f"{field}.{key}: must be a checkpoint title.")
        return
    if key not in FIXED_OPTIONS:
        raise ApiError(
            422,
            "unsupported_option",
            f"{field}.{key}: this server does not have this A1111 option; only "
            f"{CHECKPOINT_OPTION} can be set (see docs/a1111.md).",
        )
    if not _same(FIXED_OPTIONS[key], value, key):
        raise ApiError(
            422,
            "unsupported_option",
            f"{field}.{key}: this server always uses {FIXED_OPTIONS[key]!r}; it cannot be "
            f"set to {value!r}.",
        )


#: Other spellings of a fixed value that mean the same here ("None": the checkpoint's VAE).
_EQUIVALENT: dict[str, tuple[Any, ...]] = {"sd_vae": ("None",)}


def _same(fixed: Any, value: Any, key: str = "") -> bool:
    if value in _EQUIVALENT.get(key, ()):
        return True
    if isinstance(fixed, bool) or fixed is None or isinstance(fixed, str):
        return bool(value == fixed)
    try:
        return math.isclose(float(value), float(fixed), abs_tol=1e-9)
    except (TypeError, ValueError):
        return False
