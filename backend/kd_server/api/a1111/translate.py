"""An A1111 txt2img/img2img payload -> a `Plan`: our GenerationRequest plus what it takes
to turn the engine's results back into A1111's answer.

Everything that can be wrong with a payload is refused here, before anything is
queued, with a 422 that names the field: values we cannot honour (hires fix, face
restoration, scripts ...), unknown samplers, models and LoRAs, undecodable images.
Fields whose value cannot change the picture are accepted and ignored; docs/a1111.md
lists which and why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import Any

from PIL import Image, ImageOps

from kd_server.api import policy
from kd_server.api.a1111 import controlnet, images
from kd_server.api.a1111.options import CHECKPOINT_OPTION, check_option
from kd_server.api.a1111.schemas import Img2ImgRequest, Txt2ImgRequest, _GenerationFields
from kd_server.api.errors import ApiError
from kd_server.api.imaging import ImageInputError, as_mask, as_picture
from kd_server.config import Settings
from kd_server.generation import (
    MAX_SEED,
    Conditioning,
    GenerationRequest,
    ImageInputs,
    LoraSpec,
    Sampling,
    Task,
    resolve_seed,
)
from kd_server.library import ModelLibrary
from kd_server.masks import flatten_rgb
from kd_server.samplers import UnknownSampler, canonical_name, resolve

#: Previews every step: `progress` can then always show the latest one (they are cheap).
PREVIEW_EVERY = 1
#: inpainting_fill values: what A1111 puts under the mask before diffusion.
FILL, ORIGINAL, LATENT_NOISE, LATENT_NOTHING = 0, 1, 2, 3

_NETWORK_TAG = re.compile(r"<(\w+):([^>]*)>")
_TITLE_HASH = re.compile(r"\s*\[[0-9a-fA-F]{4,64}\]\s*$")
_MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


@dataclass(frozen=True)
class Paste:
    """Inpainting: the fitted picture the engine's RGBA patch is blended into, and where."""

    base: Image.Image
    box: images.Box


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
        ("firstpass_image", not body.firstpass_image, "hires fix is not available"),
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


def _check_txt2img(body: Txt2ImgRequest) -> None:
    if body.enable_hr:
        raise unsupported(
            "enable_hr", "hires fix is not available; generate at the final width and height"
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
    strength = _strength(body)
    if body.mask and body.inpainting_fill in (LATENT_NOISE, LATENT_NOTHING) and strength < 1:
        raise unsupported(
            "inpainting_fill",
            f"{body.inpainting_fill} (latent noise/nothing) is only available with "
            "denoising_strength 1; use 0 (fill) or 1 (original)",
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
    """Strip A1111's `<lora:name:weight>` tags from a prompt and return them as LoRAs.

    `<lyco:...>` is LoRA too. Other extra networks (hypernetworks ...) are refused:
    dropping them silently would change the picture. With `enabled` false
    (`disable_extra_networks`) the tags are removed and nothing is applied, as in A1111.
    """
    loras: list[LoraSpec] = []

    def take(match: re.Match[str]) -> str:
        kind, args = match.group(1).lower(), match.group(2)
        if kind not in ("lora", "lyco"):
            raise unsupported(field, f"the extra network <{match.group(1)}:...> is not available")
        if enabled:
            loras.append(_lora_tag(args, field))
        return ""

    cleaned = _NETWORK_TAG.sub(take, text)
    return re.sub(r"[ \t]{2,}", " ", cleaned).strip(" ,\t"), loras


def _lora_tag(args: str, field: str) -> LoraSpec:
    parts = [p.strip() for p in args.split(":")]
    name, numbers = parts[0], parts[1:]
    if not name:
        raise invalid(field, "a <lora:...> tag has no name")
    try:
        weights = [float(n) for n in numbers if n]
    except ValueError:
        raise invalid(field, f"<lora:{args}>: the weight must be a number") from None
    if len(weights) > 1 and any(w != weights[0] for w in weights[1:]):
        raise unsupported(
            field, f"<lora:{args}>: separate text-encoder and UNet weights are not available"
        )
    return LoraSpec(name, weights[0] if weights else 1.0)


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
        check_option("override_settings", key, value)
        if key == CHECKPOINT_OPTION:
            model = find_checkpoint(library, value)
    return model


# ------------------------------------------------------------------------ plans


def plan_txt2img(
    body: Txt2ImgRequest, settings: Settings, library: ModelLibrary, current_model: str
) -> Plan:
    _check_txt2img(body)
    common = _common(body, settings, library, current_model, body.width, body.height)
    size = (body.width, body.height)
    units = controlnet.parse_units(body.alwayson_scripts, library, settings, size)
    request = _with_units(common.request(Task.TXT2IMG, ImageInputs(), *size), units)
    extra = tuple(units.infotext)
    return _plan("txt2img", body, request, echo=body.model_dump(), paste=None, extra=extra)


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
    fitted = flatten_rgb(images.fit(picture, body.width, body.height, body.resize_mode))
    size = (body.width, body.height)
    units = controlnet.parse_units(body.alwayson_scripts, library, settings, size, fitted)
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
    if body.inpainting_fill == FILL:
        region = images.fill_masked(region, region_mask)
    inputs = ImageInputs(image=region, mask=region_mask, mask_feather=feather, strength=strength)
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
    return _plan("img2img", body, request, echo=echo, paste=Paste(fitted, box), extra=extra)


@dataclass(frozen=True)
class _Common:
    """What txt2img and img2img requests share, checked."""

    conditioning: Conditioning
    sampling: Sampling
    model: str

    def request(
        self, task: Task, inputs: ImageInputs, width: int, height: int
    ) -> GenerationRequest:
        return GenerationRequest(
            task=task,
            conditioning=self.conditioning,
            sampling=self.sampling,
            inputs=inputs,
            model=self.model,
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
    return _Common(
        conditioning=Conditioning(
            prompt=prompt,
            negative_prompt=negative,
            loras=_merge_loras(library, loras + negative_loras),
        ),
        sampling=Sampling(
            sampler=sampler,
            steps=body.steps,
            cfg_scale=body.cfg_scale,
            batch_size=body.batch_size,
        ),
        model=model,
    )


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
