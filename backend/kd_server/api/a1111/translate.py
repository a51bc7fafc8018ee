"""An A1111 txt2img/img2img payload -> a `Plan`: our GenerationRequest plus what it takes
to turn the engine's results back into A1111's answer.

Everything that can be wrong with a payload is refused here, before anything is
queued, with a 422 that names the field: values we cannot honour (face restoration,
scripts, a second pass with another sampler or prompt ...), unknown samplers, models,
LoRAs and upscalers, undecodable images.
Fields whose value cannot change the picture are accepted and ignored; docs/a1111.md
lists which and why.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import Any

from PIL import Image, ImageOps

from kd_server.api import policy
from kd_server.api.a1111 import controlnet, images, upscaling
from kd_server.api.a1111.options import (
    CHECKPOINT_OPTION,
    CLIP_SKIP_OPTION,
    PER_REQUEST_OPTIONS,
    VAE_OPTION,
    check_option,
    clip_skip_value,
)
from kd_server.api.a1111.schemas import Img2ImgRequest, Txt2ImgRequest, _GenerationFields
from kd_server.api.errors import ApiError
from kd_server.api.imaging import ImageInputError, as_mask, as_picture
from kd_server.config import Settings
from kd_server.generation import (
    MAX_SEED,
    Conditioning,
    EngineError,
    FillMode,
    GenerationRequest,
    ImageInputs,
    LoraSpec,
    Sampling,
    Task,
    Upscaling,
    resolve_seed,
)
from kd_server.library import ModelLibrary
from kd_server.masks import flatten_rgb
from kd_server.prompt_syntax import (
    PromptSyntaxError,
    UnavailableNetwork,
    extract_networks,
    lora_weights,
)
from kd_server.samplers import UnknownSampler, canonical_name, resolve

#: Previews every step: `progress` can then always show the latest one (they are cheap).
PREVIEW_EVERY = 1
#: inpainting_fill values: what A1111 puts under the mask before diffusion.
FILL, ORIGINAL, LATENT_NOISE, LATENT_NOTHING = 0, 1, 2, 3
#: ... and the fill mode each one runs as (kd_server.fill, docs/fill.md). A1111's
#: latent noise and latent nothing fill the latents; we fill the pixels the latents
#: are made from (random colours per latent cell, mid grey), so they work at any strength.
FILL_MODES = {
    FILL: FillMode.BLUR,
    ORIGINAL: FillMode.KEEP,
    LATENT_NOISE: FillMode.NOISE,
    LATENT_NOTHING: FillMode.NEUTRAL,
}
#: A1111's txt2img `denoising_strength` when hires fix runs and none is sent.
HIRES_STRENGTH = 0.75
#: What A1111's UI sends in hr_* fields for "the same as the first pass".
_SAME_AS_FIRST_PASS = ("", "use same sampler", "use same scheduler", "use same checkpoint")

_TITLE_HASH = re.compile(r"\s*\[[0-9a-fA-F]{4,64}\]\s*$")
_MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


@dataclass(frozen=True)
class Paste:
    """Inpainting: the fitted picture the engine's RGBA patch is blended into, and where."""

    base: Image.Image
    box: images.Box


@dataclass(frozen=True)
class Hires:
    """Hires fix of a txt2img plan: A1111's facts about it, for `info` and the crop."""

    first_pass: tuple[int, int]
    size: upscaling.HiresSize
    strength: float


@dataclass(frozen=True)
class Plan:
    kind: str  # "txt2img" | "img2img": what `progress` reports as the job
    request: GenerationRequest  # the first iteration's; later ones differ in seed only
    n_iter: int
    first_seed: int
    sampler: str  # the legacy combined name, as infotexts spell it
    scheduler: str
    prompt: str  # as sent, <lora:...> tags included (A1111 reports it so)
    negative_prompt: str
    width: int
    height: int
    paste: Paste | None
    extra_params: tuple[tuple[str, str], ...]  # appended to each infotext
    persist_model: str | None  # override_settings with restore_afterwards = false
    send_images: bool
    echo: dict[str, Any]  # the request as A1111 echoes it in `parameters`
    hires: Hires | None = None

    def request_for(self, iteration: int) -> GenerationRequest:
        """Iteration k of n_iter: A1111 numbers seeds on across the whole run."""
        seed = (self.first_seed + iteration * self.request.sampling.batch_size) % (MAX_SEED + 1)
        return replace(self.request, sampling=replace(self.request.sampling, seed=seed))

    @property
    def all_seeds(self) -> list[int]:
        count = self.n_iter * self.request.sampling.batch_size
        return [(self.first_seed + i) % (MAX_SEED + 1) for i in range(count)]


def unsupported(field: str, message: str) -> ApiError:
    return ApiError(422, "unsupported_field", f"{field}: {message}")


def invalid(field: str, message: str) -> ApiError:
    return ApiError(422, "invalid_request", f"{field}: {message}")


# ----------------------------------------------------------------- refused values


def _is_default(value: Any, *defaults: Any) -> bool:
    return value is None or any(value == d for d in defaults)


def check_unsupported(body: _GenerationFields) -> None:
    """422 for every field set to a value that would change the picture but that we
    cannot honour; fields left at their defaults pass."""
    checks: list[tuple[str, bool, str]] = [
        ("restore_faces", not body.restore_faces, "face restoration is not available"),
        ("tiling", not body.tiling, "tileable generation is not available"),
        (
            "styles",
            not body.styles,
            "saved prompt styles do not exist on this server; put their text in prompt",
        ),
        (
            "subseed_strength",
            body.subseed_strength == 0,
            "variation seeds are not available; use 0",
        ),
        ("seed_resize_from_w", body.seed_resize_from_w in (-1, 0), "is not available; use -1"),
        ("seed_resize_from_h", body.seed_resize_from_h in (-1, 0), "is not available; use -1"),
        ("script_name", not body.script_name, "this server runs no scripts"),
        ("refiner_checkpoint", _is_default(body.refiner_checkpoint, "", "None"), "no refiner"),
        (
            "firstpass_image",
            not body.firstpass_image,
            "a given first-pass image is not available; hires fix runs from its own",
        ),
        ("infotext", not body.infotext, "send the generation fields themselves"),
        ("s_churn", _is_default(body.s_churn, 0), "only 0 is available"),
        ("s_tmin", _is_default(body.s_tmin, 0), "only 0 is available"),
        ("s_tmax", _is_default(body.s_tmax, 0, float("inf")), "only 0 (no limit) is available"),
        ("s_noise", _is_default(body.s_noise, 1), "only 1 is available"),
        ("s_min_uncond", _is_default(body.s_min_uncond, 0), "only 0 is available"),
        (
            "sampler_noise_scheduler_override",
            body.sampler_noise_scheduler_override is None,
            "is not available",
        ),
    ]
    for field, ok, message in checks:
        if not ok:
            raise unsupported(field, message)
    for name, script in body.alwayson_scripts.items():
        args = script.get("args") if isinstance(script, dict) else None
        if name.lower() == controlnet.SCRIPT:
            continue  # controlnet.parse_units reads it
        if args not in (None, [], [False]):
            raise unsupported(
                f"alwayson_scripts.{name}",
                "this server runs no scripts or extensions besides ControlNet (ADetailer "
                "...); leave the others out",
            )


def _check_img2img(body: Img2ImgRequest) -> None:
    if body.latent_mask:
        raise unsupported("latent_mask", "a separate latent mask is not available")
    if not _is_default(body.initial_noise_multiplier, 1):
        raise unsupported("initial_noise_multiplier", "only 1 is available")
    if not body.init_images:
        raise invalid("init_images", "is required: one base64 image")
    if len(body.init_images) > 1:
        raise unsupported(
            "init_images",
            f"got {len(body.init_images)} images; send one (batch_size makes variations of it)",
        )


def _strength(body: Img2ImgRequest) -> float:
    return 0.75 if body.denoising_strength is None else body.denoising_strength


# -------------------------------------------------------------- names and prompts


def pick_sampler(body: _GenerationFields) -> tuple[str, str]:
    """(legacy combined name, schedule label) from sampler_name (or the deprecated
    sampler_index) and scheduler; A1111's k-diffusion aliases are accepted."""
    name = body.sampler_name or body.sampler_index or "Euler"
    name = SAMPLER_BY_ALIAS.get(name.strip().lower(), name)
    try:
        _, schedule = resolve(name, body.scheduler)
        return canonical_name(name, body.scheduler), schedule.value
    except UnknownSampler as exc:
        field = "scheduler" if body.scheduler and _known_sampler(name) else "sampler_name"
        raise ApiError(422, "sampler_not_found", f"{field}: {exc}") from None


def _known_sampler(name: str) -> bool:
    try:
        resolve(name)
    except UnknownSampler:
        return False
    return True


#: A1111's alternative sampler names (k-diffusion ids), lower case -> our name.
SAMPLER_ALIASES: dict[str, tuple[str, ...]] = {
    "DPM++ 2M": ("k_dpmpp_2m",),
    "DPM++ 2M SDE": ("k_dpmpp_2m_sde",),
    "DPM++ SDE": ("k_dpmpp_sde",),
    "Euler": ("k_euler",),
    "Euler a": ("k_euler_a", "k_euler_ancestral"),
    "Heun": ("k_heun",),
    "DPM2": ("k_dpm_2",),
    "DPM2 a": ("k_dpm_2_a",),
    "DDIM": ("ddim",),
    "PLMS": ("plms",),
    "UniPC": ("unipc",),
    "LCM": ("k_lcm",),
}
SAMPLER_BY_ALIAS = {alias: name for name, aliases in SAMPLER_ALIASES.items() for alias in aliases}


def parse_networks(text: str, field: str, enabled: bool) -> tuple[str, list[LoraSpec]]:
    """Strip A1111's `<lora:name:weight>` tags from a prompt and return them as LoRAs
    (the tags are read by `kd_server.prompt_syntax`, which v1 shares).

    `<lyco:...>` is LoRA too. Hypernetworks are refused: dropping them silently would
    change the picture; tags of kinds A1111 does not know either are removed and
    ignored, as A1111 skips them. With `enabled` false
    (`disable_extra_networks`) the tags are removed and nothing is applied, as in A1111.
    """
    try:
        cleaned, tags = extract_networks(text)
        weights = lora_weights(tags)
    except PromptSyntaxError as exc:
        raise invalid(field, str(exc)) from None
    except UnavailableNetwork as exc:
        raise unsupported(field, str(exc)) from None
    return cleaned, [LoraSpec(name, weight) for name, weight in weights] if enabled else []


def _candidates(text: str) -> list[str]:
    """Spellings of a model reference to try: as given, without A1111's " [hash]",
    without the file extension."""
    bare = _TITLE_HASH.sub("", text.strip())
    out = [text.strip(), bare]
    lowered = bare.lower()
    for suffix in _MODEL_SUFFIXES:
        if lowered.endswith(suffix):
            out.append(bare[: -len(suffix)])
    return list(dict.fromkeys(out))


def model_name_of(name: str) -> str:
    """A1111's `model_name`: the title without folders' slashes (they become `_`)."""
    return name.replace("/", "_")


def _match(names: list[str], wanted: str) -> str | None:
    for candidate in _candidates(wanted):
        if candidate in names:
            return candidate
        underscored = [n for n in names if model_name_of(n) == candidate]
        base = [n for n in names if PurePosixPath(n).name == candidate]
        for group in (underscored, base):
            if len(group) == 1:
                return group[0]
    return None


def find_checkpoint(library: ModelLibrary, title: str) -> str:
    """Our checkpoint name for an A1111 title, model_name, file name or hash."""
    usable = [e.name for e in library.checkpoints() if e.usable]
    found = _match(usable, title)
    if found is None:
        by_hash = library.hashes.find(library.checkpoints(), title)
        found = by_hash.name if by_hash is not None else None
    if found is None:
        library.get_checkpoint(_candidates(title)[-1])  # raises with a "did you mean"
        raise AssertionError("unreachable")
    return found


def find_lora(library: ModelLibrary, name: str) -> str:
    usable = [e.name for e in library.loras() if e.usable]
    found = _match(usable, name)
    if found is None:
        library.get_lora(name)  # raises with a "did you mean"
        raise AssertionError("unreachable")
    return found


def _model_for(body: _GenerationFields, library: ModelLibrary, current_model: str) -> str:
    """The checkpoint of this request: override_settings' one, else the current one."""
    model = current_model
    for key, value in (body.override_settings or {}).items():
        if key in PER_REQUEST_OPTIONS:
            continue  # `_clip_skip_for`, `_vae_for`
        check_option("override_settings", key, value)
        if key == CHECKPOINT_OPTION:
            model = find_checkpoint(library, value)
    return model


def _clip_skip_for(body: _GenerationFields) -> int:
    """The request's clip skip (override_settings' CLIP_stop_at_last_layers), else 1."""
    value = (body.override_settings or {}).get(CLIP_SKIP_OPTION)
    if value is None:
        return 1
    return clip_skip_value(f"override_settings.{CLIP_SKIP_OPTION}", value)


def _vae_for(body: _GenerationFields, library: ModelLibrary) -> str | None:
    """The VAE file of override_settings' `sd_vae` (its file name, with or without the
    extension), or None for the checkpoint's own ("Automatic", "None")."""
    value = (body.override_settings or {}).get(VAE_OPTION)
    if value is None or value in ("Automatic", "None", ""):
        return None
    field = f"override_settings.{VAE_OPTION}"
    if not isinstance(value, str):
        raise invalid(field, "must be the name of a VAE file from GET /sdapi/v1/sd-vae")
    for candidate in _candidates(value)[1:]:  # the bare and extension-less spellings
        names = {v.name.casefold() for v in library.vaes()} | {
            v.path.stem.casefold() for v in library.vaes()
        }
        if candidate.casefold() in names:
            return library.get_vae(candidate).name
    return library.get_vae(value).name  # raises with the names found


# ------------------------------------------------------------------------ plans


def plan_txt2img(
    body: Txt2ImgRequest,
    settings: Settings,
    library: ModelLibrary,
    current_model: str,
    upscalers: Sequence[upscaling.UpscalerEntry] = (),
) -> Plan:
    """txt2img; with `enable_hr`, hires fix: the first pass at width x height (or
    firstphase_*), then upscaled and refined by the engine (`GenerationRequest.upscaling`)."""
    size = _first_pass(body) if body.enable_hr else (body.width, body.height)
    common = _common(body, settings, library, current_model, *size)
    units = controlnet.parse_units(body.alwayson_scripts, library, settings, size)
    request = _with_units(common.request(Task.TXT2IMG, ImageInputs(), *size), units)
    extra = tuple(units.infotext)
    if not body.enable_hr:
        return _plan("txt2img", body, request, echo=body.model_dump(), paste=None, extra=extra)
    _check_hires_same_as_first_pass(body, library, common)
    hires, upscaling_, hires_extra = _hires(body, size, upscalers)
    plan = _plan(
        "txt2img",
        body,
        replace(request, upscaling=upscaling_),
        echo=body.model_dump(),
        paste=None,
        extra=extra + hires_extra,
    )
    return replace(plan, hires=hires, width=size[0], height=size[1])


def _first_pass(body: Txt2ImgRequest) -> tuple[int, int]:
    """The first pass's size: width x height, or firstphase_* (A1111's older fields,
    which set the first pass and leave the target to hr_scale / hr_resize_*)."""
    given = (body.firstphase_width, body.firstphase_height)
    if given == (0, 0):
        return body.width, body.height
    if not all(64 <= side <= 4096 for side in given):
        raise invalid(
            "firstphase_width, firstphase_height", "both must be 64..4096 (or both 0: unused)"
        )
    return given


def _hires(
    body: Txt2ImgRequest, first: tuple[int, int], upscalers: Sequence[upscaling.UpscalerEntry]
) -> tuple[Hires, Upscaling, tuple[tuple[str, str], ...]]:
    """Hires fix's target, upscaler, strength and steps, checked, and A1111's infotext
    entries for it ("Denoising strength", "Hires upscale" or "Hires resize", ...)."""
    if body.hr_resize_x < 0 or body.hr_resize_y < 0:
        raise invalid("hr_resize_x, hr_resize_y", "must be 0 (unused) or a size in pixels")
    by_scale = body.hr_resize_x == 0 and body.hr_resize_y == 0
    if by_scale and not 1 <= body.hr_scale <= 8:
        raise invalid("hr_scale", f"{body.hr_scale:g}: hires fix enlarges 1 to 8 times")
    size = upscaling.hires_size(*first, body.hr_scale, body.hr_resize_x, body.hr_resize_y)
    fields = "hr_scale" if by_scale else "hr_resize_x, hr_resize_y"
    if size.upscale_to[0] < first[0] or size.upscale_to[1] < first[1]:
        raise invalid(
            fields,
            f"{size.final[0]}x{size.final[1]} is smaller than the first pass "
            f"({first[0]}x{first[1]}); hires fix enlarges",
        )
    if not 0 <= body.hr_second_pass_steps <= 150:
        raise invalid("hr_second_pass_steps", "must be 0 (the same as steps) to 150")
    choice = upscaling.resolve("hr_upscaler", body.hr_upscaler, upscalers)
    if choice.kind == "nearest":
        raise unsupported(
            "hr_upscaler",
            "Nearest is not available for hires fix; use Lanczos, a latent mode or a model",
        )
    strength = HIRES_STRENGTH if body.denoising_strength is None else body.denoising_strength
    steps = body.hr_second_pass_steps or None
    runs = steps or body.steps
    extra: list[tuple[str, str]] = [("Denoising strength", f"{strength:g}")]
    if by_scale:
        extra.append(("Hires upscale", f"{body.hr_scale:g}"))
    else:
        extra.append(("Hires resize", f"{body.hr_resize_x}x{body.hr_resize_y}"))
    if steps is not None:
        extra.append(("Hires steps", str(steps)))
    if body.hr_upscaler is not None:
        extra.append(("Hires upscaler", body.hr_upscaler))
    if choice.kind == "latent" or body.hr_upscaler is None:  # None: A1111's default, Latent
        extra.append(("Hires note", "enlarged in pixel space with Lanczos (no latent upscale)"))
    target = Upscaling(
        width=size.upscale_to[0],
        height=size.upscale_to[1],
        upscaler=choice.engine_name,
        strength=strength,
        steps=hires_schedule_steps(runs, strength),
    )
    return Hires(first, size, strength), target, tuple(extra)


#: The most steps a hires schedule may have (the noise schedule has 1000 timesteps).
MAX_SCHEDULE_STEPS = 1000


def hires_schedule_steps(runs: int, strength: float) -> int | None:
    """The refine's `Upscaling.steps` that runs `runs` denoising steps at `strength`.

    A1111's second pass runs `hr_second_pass_steps` (or `steps`) steps whatever the
    strength: it stretches the schedule to runs / strength. Our refine is img2img,
    which runs int(steps * strength) of `steps`, so the schedule is stretched here the
    same way (at most MAX_SCHEDULE_STEPS long). None at strength 0: no refine runs.
    """
    if strength <= 0:
        return None
    total = math.ceil(runs / strength)
    while int(total * strength) < runs:  # float rounding: 20 / 0.7 * 0.7 < 20
        total += 1
    return min(total, MAX_SCHEDULE_STEPS)


def _check_hires_same_as_first_pass(
    body: Txt2ImgRequest, library: ModelLibrary, common: _Common
) -> None:
    """The second pass runs with the first pass's sampler, schedule, checkpoint and
    prompts; asking for others would silently change the picture, so it is refused."""
    first_sampler = canonical_name(*_sampler_and_schedule(body))
    if not _same(body.hr_sampler_name) and _hr_sampler(body) != first_sampler:
        raise unsupported(
            "hr_sampler_name", "the second pass runs with the first pass's sampler; leave it out"
        )
    if not _same(body.hr_scheduler) and not _same_schedule(body):
        raise unsupported(
            "hr_scheduler", "the second pass runs with the first pass's schedule; leave it out"
        )
    if not _same(body.hr_checkpoint_name):
        assert body.hr_checkpoint_name is not None
        if find_checkpoint(library, body.hr_checkpoint_name) != common.model:
            raise unsupported(
                "hr_checkpoint_name",
                "the second pass runs with the first pass's checkpoint; leave it out",
            )
    for field, value, first in (
        ("hr_prompt", body.hr_prompt, body.prompt),
        ("hr_negative_prompt", body.hr_negative_prompt, body.negative_prompt),
    ):
        if value and value != first:
            raise unsupported(
                field, "the second pass runs with the first pass's prompt; leave it empty"
            )


def _same(value: str | None) -> bool:
    return value is None or value.strip().casefold() in _SAME_AS_FIRST_PASS


def _sampler_and_schedule(body: _GenerationFields) -> tuple[str, str | None]:
    name = body.sampler_name or body.sampler_index or "Euler"
    return SAMPLER_BY_ALIAS.get(name.strip().lower(), name), body.scheduler


def _hr_sampler(body: Txt2ImgRequest) -> str:
    assert body.hr_sampler_name is not None
    name = SAMPLER_BY_ALIAS.get(body.hr_sampler_name.strip().lower(), body.hr_sampler_name)
    try:
        return canonical_name(name, body.scheduler)
    except UnknownSampler as exc:
        raise ApiError(422, "sampler_not_found", f"hr_sampler_name: {exc}") from None


def _same_schedule(body: Txt2ImgRequest) -> bool:
    name, schedule = _sampler_and_schedule(body)
    try:
        return canonical_name(name, body.hr_scheduler) == canonical_name(name, schedule)
    except UnknownSampler as exc:
        raise ApiError(422, "sampler_not_found", f"hr_scheduler: {exc}") from None


def _with_units(request: GenerationRequest, units: controlnet.Units) -> GenerationRequest:
    """The request with the ControlNet extension's units as controls and reference."""
    conditioning = replace(
        request.conditioning, control=list(units.controls), reference=units.reference
    )
    return replace(request, conditioning=conditioning)


def plan_img2img(
    body: Img2ImgRequest, settings: Settings, library: ModelLibrary, current_model: str
) -> Plan:
    """Fit the init image (and mask) to width x height; for a mask, cut the region the
    engine repaints (the mask's box plus padding with inpaint_full_res, else all)."""
    _check_img2img(body)
    common = _common(body, settings, library, current_model, body.width, body.height)
    assert body.init_images
    picture = _decode(body.init_images[0], "init_images[0]", settings, as_picture)
    # The engine gets the picture with its transparency (transparent pixels are filled,
    # kd_server.fill); the flattened copy is what ControlNet units and the paste-back see.
    fitted = images.fit(picture, body.width, body.height, body.resize_mode)
    flat = flatten_rgb(fitted)
    size = (body.width, body.height)
    units = controlnet.parse_units(body.alwayson_scripts, library, settings, size, flat)
    strength = _strength(body)
    echo = body.model_dump()
    if not body.include_init_images:
        echo.update(init_images=None, mask=None)
    if not body.mask:
        inputs = ImageInputs(image=fitted, strength=strength)
        request = _with_units(common.request(Task.IMG2IMG, inputs, *size), units)
        extra = tuple(units.infotext)
        return _plan("img2img", body, request, echo=echo, paste=None, extra=extra)
    mask = images.fit(
        _decode(body.mask, "mask", settings, as_mask), body.width, body.height, body.resize_mode
    ).convert("L")
    if body.inpainting_mask_invert:
        mask = ImageOps.invert(mask)
    feather = (
        body.mask_blur if body.mask_blur is not None else max(body.mask_blur_x, body.mask_blur_y)
    )
    if body.inpaint_full_res:
        box = images.mask_box(mask, feather + body.inpaint_full_res_padding)
    else:
        box = (0, 0, body.width, body.height) if mask.getbbox() else None
    if box is None:
        raise invalid("mask", "selects nothing: paint white where the image should change")
    region, region_mask = fitted.crop(box), mask.crop(box)
    inputs = ImageInputs(
        image=region,
        mask=region_mask,
        mask_feather=feather,
        strength=strength,
        fill=FILL_MODES[body.inpainting_fill],
    )
    request = _with_units(common.request(Task.INPAINT, inputs, *size), units.cropped(box))
    extra = (
        *units.infotext,
        ("Mask blur", str(feather)),
        ("Inpaint area", "Only masked" if body.inpaint_full_res else "Whole picture"),
        ("Masked area padding", str(body.inpaint_full_res_padding)),
        (
            "Masked content",
            ("fill", "original", "latent noise", "latent nothing")[body.inpainting_fill],
        ),
    )
    return _plan("img2img", body, request, echo=echo, paste=Paste(flat, box), extra=extra)


@dataclass(frozen=True)
class _Common:
    """What txt2img and img2img requests share, checked."""

    conditioning: Conditioning
    sampling: Sampling
    model: str
    vae: str | None = None

    def request(
        self, task: Task, inputs: ImageInputs, width: int, height: int
    ) -> GenerationRequest:
        return GenerationRequest(
            task=task,
            conditioning=self.conditioning,
            sampling=self.sampling,
            inputs=inputs,
            model=self.model,
            vae=self.vae,
            width=width,
            height=height,
            preview_every=PREVIEW_EVERY,
        )


def _common(
    body: _GenerationFields,
    settings: Settings,
    library: ModelLibrary,
    current_model: str,
    width: int,
    height: int,
) -> _Common:
    """The request parts txt2img and img2img share, checked by the same policy as v1."""
    check_unsupported(body)
    policy.check_prompt("prompt", body.prompt, settings)
    policy.check_prompt("negative_prompt", body.negative_prompt, settings)
    policy.check_budget("width, height, batch_size", width, height, body.batch_size, settings)
    enabled = not body.disable_extra_networks
    prompt, loras = parse_networks(body.prompt, "prompt", enabled)
    negative, negative_loras = parse_networks(body.negative_prompt, "negative_prompt", enabled)
    model = _model_for(body, library, current_model)
    sampler, _ = pick_sampler(body)
    guidance = body.distilled_cfg_scale if _uses_guidance(library, model) else None
    return _Common(
        conditioning=Conditioning(
            prompt=prompt,
            negative_prompt=negative,
            loras=_merge_loras(library, loras + negative_loras),
            clip_skip=_clip_skip_for(body),
        ),
        sampling=Sampling(
            sampler=sampler,
            steps=body.steps,
            cfg_scale=body.cfg_scale,
            batch_size=body.batch_size,
            guidance=guidance,
        ),
        model=model,
        vae=_vae_for(body, library),
    )


def _uses_guidance(library: ModelLibrary, model: str | None) -> bool:
    """Whether the checkpoint takes Flux's distilled guidance (Forge's
    `distilled_cfg_scale`); other families ignore the field, as Forge does."""
    try:
        entry = library.get_checkpoint(model) if model else library.default_checkpoint()
    except EngineError:
        return False  # the engine's check names the missing checkpoint
    return entry.family is not None and entry.family.info.uses_guidance


def _merge_loras(library: ModelLibrary, loras: list[LoraSpec]) -> list[LoraSpec]:
    merged: dict[str, float] = {}
    for lora in loras:
        name = find_lora(library, lora.name)
        if name in merged and merged[name] != lora.weight:
            raise unsupported("prompt", f"the LoRA '{name}' is given twice with different weights")
        merged[name] = lora.weight
    policy.check_lora_count("prompt", len(merged))
    return [LoraSpec(name, weight) for name, weight in merged.items()]


def _decode(data: str, field: str, settings: Settings, convert: Any) -> Image.Image:
    try:
        return convert(images.decode_image(data, field, settings.max_pixels))  # type: ignore[no-any-return]
    except ImageInputError as exc:
        raise ApiError(422, "invalid_request", f"{exc}.") from exc


def _plan(
    kind: str,
    body: _GenerationFields,
    request: GenerationRequest,
    echo: dict[str, Any],
    paste: Paste | None,
    extra: tuple[tuple[str, str], ...],
) -> Plan:
    first_seed = resolve_seed(body.seed)
    sampler, scheduler = pick_sampler(body)
    return Plan(
        kind=kind,
        request=replace(request, sampling=replace(request.sampling, seed=first_seed)),
        n_iter=body.n_iter,
        first_seed=first_seed,
        sampler=sampler,
        scheduler=scheduler,
        prompt=body.prompt,
        negative_prompt=body.negative_prompt,
        width=body.width,
        height=body.height,
        paste=paste,
        extra_params=extra,
        persist_model=request.model if _keeps_model(body) else None,
        send_images=body.send_images,
        echo=echo,
    )


def _keeps_model(body: _GenerationFields) -> bool:
    """A checkpoint override with restore_afterwards false becomes the current model."""
    overridden = CHECKPOINT_OPTION in (body.override_settings or {})
    return overridden and not body.override_settings_restore_afterwards
