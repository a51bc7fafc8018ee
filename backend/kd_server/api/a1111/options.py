"""A1111 settings (`/sdapi/v1/options`, `override_settings`) as this server honours them.

Only `sd_model_checkpoint` can be changed. The other options listed are the values
our engine really uses (A1111's defaults); setting one of them to the value it
already has is accepted, so scripts that send their whole settings back still work,
and any other change is refused with a 422 naming the option, because silently
ignoring it would change the pictures without telling.

Two kinds are accepted with any value and ignored: `sd_checkpoint_hash`, which A1111
reports and clients send back but which describes the checkpoint rather than choosing
it, and A1111's options about files on the server's disk and its web UI
(`IGNORED_OPTIONS`), which cannot change the pictures this API returns.
"""

from __future__ import annotations

import math
from typing import Any

from kd_server.api.errors import ApiError

CHECKPOINT_OPTION = "sd_model_checkpoint"
CHECKPOINT_HASH_OPTION = "sd_checkpoint_hash"  # sha256 of the current checkpoint
#: "Clip skip": honoured per request (`override_settings`), not as a lasting option
CLIP_SKIP_OPTION = "CLIP_stop_at_last_layers"
#: "SD VAE": a VAE file, honoured per request (`override_settings`) like clip skip
VAE_OPTION = "sd_vae"
#: Per-request options: `/options` keeps them at A1111's defaults
PER_REQUEST_OPTIONS = (CLIP_SKIP_OPTION, VAE_OPTION)
MAX_CLIP_SKIP = 12  # the layers of SD 1.5's text encoder

#: Options we report and what they are here (A1111's defaults, which our engine follows).
FIXED_OPTIONS: dict[str, Any] = {
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


#: A1111 options about saved files, grids and the web UI: this server saves no files
#: and has no UI, and the images it returns do not depend on them.
IGNORED_OPTIONS = frozenset(
    {
        CHECKPOINT_HASH_OPTION,
        "samples_save",
        "save_images_add_number",
        "save_images_replace_action",
        "grid_save",
        "grid_format",
        "grid_extended_filename",
        "grid_only_if_multiple",
        "return_grid",
        "save_to_dirs",
        "grid_save_to_dirs",
        "use_save_to_dirs_for_ui",
        "directories_filename_pattern",
        "samples_filename_pattern",
        "outdir_samples",
        "outdir_txt2img_samples",
        "outdir_img2img_samples",
        "outdir_extras_samples",
        "outdir_grids",
        "outdir_txt2img_grids",
        "outdir_img2img_grids",
        "outdir_save",
        "outdir_init_images",
        "save_init_img",
        "save_txt",
        "save_selected_only",
        "save_images_before_face_restoration",
        "save_images_before_highres_fix",
        "save_images_before_color_correction",
        "save_mask",
        "save_mask_composite",
        "jpeg_quality",
        "webp_lossless",
        "export_for_4chan",
        "img_downscale_threshold",
        "target_side_length",
        "img_max_size_mp",
        "return_mask",
        "return_mask_composite",
        "do_not_show_images",
        "js_modal_lightbox",
        "show_progress_type",
        "live_preview_content",
        "live_preview_refresh_period",
        "live_preview_fast_interrupt",
        "quicksettings_list",
        "ui_reorder_list",
        "localization",
        "memmon_poll_rate",
        "sd_checkpoint_cache",
        "sd_vae_checkpoint_cache",
        "add_model_hash_to_info",
        "add_model_name_to_info",
        "add_user_name_to_info",
        "add_version_to_infotext",
    }
)


def all_options(current_model: str, checkpoint_sha256: str | None = None) -> dict[str, Any]:
    """What `GET options` reports; `sd_checkpoint_hash` is null while the current
    checkpoint is being hashed, as in A1111 before a model has been hashed."""
    return {
        CHECKPOINT_OPTION: current_model,
        CHECKPOINT_HASH_OPTION: checkpoint_sha256,
        **FIXED_OPTIONS,
    }


def check_option(field: str, key: str, value: Any) -> None:
    """Refuse `key = value` unless it is the checkpoint, an ignored option, or leaves
    the option as it is."""
    if key == CHECKPOINT_OPTION:
        if not isinstance(value, str) or not value.strip():
            raise ApiError(422, "invalid_request", f"{field}.{key}: must be a checkpoint title.")
        return
    if key in IGNORED_OPTIONS:
        return
    if key not in FIXED_OPTIONS:
        raise ApiError(
            422,
            "unsupported_option",
            f"{field}.{key}: this server does not have this A1111 option; only "
            f"{CHECKPOINT_OPTION} can be set (see docs/a1111.md).",
        )
    if key in PER_REQUEST_OPTIONS and not _same(FIXED_OPTIONS[key], value, key):
        raise ApiError(
            422,
            "unsupported_option",
            f"{field}.{key}: cannot be changed for every request here; send it with each "
            "request in override_settings.",
        )
    if not _same(FIXED_OPTIONS[key], value, key):
        raise ApiError(
            422,
            "unsupported_option",
            f"{field}.{key}: this server always uses {FIXED_OPTIONS[key]!r}; it cannot be "
            f"set to {value!r}.",
        )


def clip_skip_value(field: str, value: Any) -> int:
    """A1111's CLIP_stop_at_last_layers as given in override_settings: 1 to 12."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ApiError(422, "invalid_request", f"{field}: must be a whole number from 1 to 12.")
    if not 1 <= int(value) <= MAX_CLIP_SKIP:
        raise ApiError(
            422, "invalid_request", f"{field}: must be from 1 to {MAX_CLIP_SKIP}, not {value}."
        )
    return int(value)


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
