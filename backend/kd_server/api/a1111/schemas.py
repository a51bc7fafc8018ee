"""Request and response models of the A1111-compatible API, with A1111's field names.

Names, defaults and shapes follow AUTOMATIC1111's `/sdapi/v1` so that scripts and
client libraries written for it work unchanged. Every field A1111 accepts is declared
here, including those we only accept at their harmless values (`translate.py` decides
which values are refused, and says so in a 422 naming the field).

Other fields are set aside, never refused for being there, because real clients send
bodies made for any endpoint or fork (A1111 ignores what it does not know): a field
of the other generation endpoint is ignored, an unknown field is ignored and logged
by the route, and only a field whose loss would change the picture without the user
knowing (`MUST_KNOW_FIELDS`, e.g. a ControlNet payload) is refused, by the route, with
a 422 that says so. `ExtraFields` carries the verdicts from validation to the route.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator


def _empty(value: Any) -> bool:
    return value in (None, False, "", [], {}, 0)


#: Fields of no A1111 endpoint that are harmless only at the given values: ignoring
#: any other value would silently change the picture. (name or prefix*, test, why)
MUST_KNOW_FIELDS: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    (
        "controlnet*",
        _empty,
        "this deprecated form is not available; send ControlNet units in "
        "alwayson_scripts.controlnet.args",
    ),
    (
        "ip_adapter*",
        _empty,
        "this field is not available; send an IP-Adapter as a ControlNet unit with an "
        "ip-adapter module in alwayson_scripts.controlnet.args",
    ),
    (
        "clip_skip",
        lambda value: value in (None, 0, 1),
        "only 1 (no CLIP skip) is available on this server",
    ),
)


@dataclass(frozen=True)
class ExtraFields:
    """Fields a request had beyond this endpoint's own, sorted by what to do with them."""

    other_endpoint: tuple[str, ...] = ()  # A1111 fields of the other endpoint: ignored
    unknown: tuple[str, ...] = ()  # fields nobody here knows: ignored and logged
    refused: tuple[tuple[str, str], ...] = ()  # (field, why): answered with a 422


def _must_know(name: str, value: Any) -> str | None:
    """Why ignoring `name` = `value` would silently change the picture, if it would."""
    lowered = name.lower()
    for pattern, harmless, why in MUST_KNOW_FIELDS:
        matches = lowered.startswith(pattern[:-1]) if pattern.endswith("*") else lowered == pattern
        if matches and not harmless(value):
            return why
    return None


def sort_extra_fields(own: set[str], extras: dict[str, Any]) -> ExtraFields:
    generation = set(Txt2ImgRequest.model_fields) | set(Img2ImgRequest.model_fields)
    other, unknown, refused = [], [], []
    for name in sorted(extras):
        why = _must_know(name, extras[name])
        if why is not None:
            refused.append((name, why))
        elif name in generation and name not in own:
            other.append(name)
        else:
            unknown.append(name)
    return ExtraFields(tuple(other), tuple(unknown), tuple(refused))


class _A1111Request(BaseModel):
    """Extra fields are taken in, sorted into `extra_fields`, and dropped (they are
    neither validated nor echoed back in `parameters`)."""

    model_config = ConfigDict(extra="allow")
    _extra_fields: ExtraFields = PrivateAttr(default_factory=ExtraFields)

    @model_validator(mode="after")
    def _set_extras_aside(self) -> _A1111Request:
        extras = self.__pydantic_extra__
        if extras:
            self._extra_fields = sort_extra_fields(set(type(self).model_fields), dict(extras))
            extras.clear()
        return self

    @property
    def extra_fields(self) -> ExtraFields:
        return self._extra_fields


class _GenerationFields(_A1111Request):
    """Fields that txt2img and img2img share, with A1111's API defaults."""

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] | None = None
    seed: int = Field(-1, ge=-1, description="-1: random.")
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str | None = Field(None, max_length=64)
    scheduler: str | None = Field(None, max_length=64)
    sampler_index: str = Field("Euler", max_length=64, description="Deprecated: sampler_name.")
    batch_size: int = Field(1, ge=1, le=8)
    n_iter: int = Field(1, ge=1, le=32)
    steps: int = Field(50, ge=1, le=150)
    cfg_scale: float = Field(7.0, ge=0, le=30, allow_inf_nan=False)
    #: Forge's Flux guidance ("Distilled CFG Scale"); only Flux.1 dev and Fill read it,
    #: other checkpoints ignore it as Forge does (its UI sends it with every request)
    distilled_cfg_scale: float | None = Field(None, ge=0, le=30, allow_inf_nan=False)
    width: int = Field(512, ge=64, le=4096)
    height: int = Field(512, ge=64, le=4096)
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = None
    denoising_strength: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool = False
    firstpass_image: str | None = None
    comments: dict[str, Any] | None = None
    script_name: str | None = None
    script_args: list[Any] = Field(default_factory=list)
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    force_task_id: str | None = None
    infotext: str | None = None
    # Gone from A1111's processing classes but still sent by older scripts.
    seed_enable_extras: bool | None = None
    sampler_noise_scheduler_override: Any = None
    outpath_samples: str | None = None
    outpath_grids: str | None = None


class Txt2ImgRequest(_GenerationFields):
    """`POST /sdapi/v1/txt2img`; `enable_hr` runs hires fix (a second, upscaled pass)."""

    enable_hr: bool = False
    # Checked in translate.py only with enable_hr: clients send them in every body.
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = Field(2.0, allow_inf_nan=False)
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    hr_additional_modules: list[str] | None = None


class Img2ImgRequest(_GenerationFields):
    """`POST /sdapi/v1/img2img`: img2img, or inpainting when `mask` is given."""

    init_images: list[str] | None = None
    resize_mode: int = Field(0, ge=0, le=3)
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur_x: int = Field(4, ge=0, le=256)
    mask_blur_y: int = Field(4, ge=0, le=256)
    mask_blur: int | None = Field(None, ge=0, le=256)
    mask_round: bool = True
    inpainting_fill: int = Field(0, ge=0, le=3)
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = Field(0, ge=0, le=1024)
    inpainting_mask_invert: int = Field(0, ge=0, le=1)
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool = False


class _ExtrasFields(_A1111Request):
    """A1111's extras (postprocessing): upscaling only; face restoration is refused."""

    resize_mode: int = Field(0, ge=0, le=1, description="0: by upscaling_resize; 1: to _w x _h.")
    show_extras_results: bool = True
    gfpgan_visibility: float = Field(0, ge=0, le=1, allow_inf_nan=False)
    codeformer_visibility: float = Field(0, ge=0, le=1, allow_inf_nan=False)
    codeformer_weight: float = Field(0, ge=0, le=1, allow_inf_nan=False)
    upscaling_resize: float = Field(2, gt=0, le=16, allow_inf_nan=False)
    upscaling_resize_w: int = Field(512, ge=8, le=16384)
    upscaling_resize_h: int = Field(512, ge=8, le=16384)
    upscaling_crop: bool = True
    upscaler_1: str | None = Field("None", max_length=256)
    upscaler_2: str | None = Field("None", max_length=256)
    extras_upscaler_2_visibility: float = Field(0, ge=0, le=1, allow_inf_nan=False)
    upscale_first: bool = False


class ExtrasSingleImageRequest(_ExtrasFields):
    """`POST /sdapi/v1/extra-single-image`."""

    image: str = Field("", description="Base64 image (PNG, JPEG or WebP).")


class FileData(BaseModel):
    data: str = Field(description="Base64 image (PNG, JPEG or WebP).")
    name: str = ""


class ExtrasBatchImagesRequest(_ExtrasFields):
    """`POST /sdapi/v1/extra-batch-images`."""

    imageList: list[FileData] = Field(default_factory=list)  # A1111 spells it so


class ExtrasSingleImageResponse(BaseModel):
    html_info: str = Field(description="What was done, as A1111's HTML paragraph.")
    image: str | None = Field(None, description="Base64 PNG.")


class ExtrasBatchImagesResponse(BaseModel):
    html_info: str
    images: list[str] = Field(description="Base64 PNGs, in the order sent.")


class ImageResponse(BaseModel):
    """What txt2img and img2img return: base64 PNGs, the request echoed, `info` as JSON text."""

    images: list[str] | None = Field(description="Base64 PNGs (no data-URI prefix).")
    parameters: dict[str, Any]
    info: str = Field(description="JSON text: seeds, infotexts, sampler, size, model ...")


class ProgressState(BaseModel):
    skipped: bool = False
    interrupted: bool = False
    stopping_generation: bool = False
    job: str = ""
    job_count: int = 0
    job_timestamp: str = "0"
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0


class ProgressResponse(BaseModel):
    progress: float = Field(description="0..1 over all of the current request's iterations.")
    eta_relative: float = Field(description="Seconds left, estimated.")
    state: ProgressState
    current_image: str | None = Field(None, description="Base64 PNG of the latest preview.")
    textinfo: str | None = None


class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, str]


class SchedulerItem(BaseModel):
    name: str
    label: str
    aliases: list[str] | None = None
    default_rho: float = -1
    need_inner_model: bool = False


class SDModelItem(BaseModel):
    title: str
    model_name: str
    hash: str | None = None
    sha256: str | None = None
    filename: str
    config: str | None = None


class LoraItem(BaseModel):
    name: str
    alias: str
    path: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class PngInfoRequest(_A1111Request):
    image: str = Field(description="Base64 image (PNG, JPEG or WebP), data-URI prefix optional.")


class PngInfoResponse(BaseModel):
    info: str = Field(description="The generation parameters text, empty when there is none.")
    items: dict[str, Any] = Field(description="Other text chunks of the image.")
    parameters: dict[str, Any] = Field(description="`info` parsed into A1111's keys.")


class ScriptsList(BaseModel):
    txt2img: list[str] = Field(default_factory=list)
    img2img: list[str] = Field(default_factory=list)


# ------------------------------------------------------------- catalogue answers


class UpscalerItem(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: str
    model_name: str | None = None
    model_path: str | None = None
    model_url: str | None = None
    scale: float | None = None


class LatentUpscaleModeItem(BaseModel):
    name: str


class SDVaeItem(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    filename: str


class SDModuleItem(BaseModel):
    """Forge's `sd-modules` (separate VAEs and text encoders)."""

    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    filename: str


class HypernetworkItem(BaseModel):
    name: str
    path: str | None = None


class FaceRestorerItem(BaseModel):
    name: str
    cmd_dir: str | None = None


class RealesrganItem(BaseModel):
    name: str
    path: str | None = None
    scale: int | None = None


class PromptStyleItem(BaseModel):
    name: str
    prompt: str | None = None
    negative_prompt: str | None = None


class EmbeddingItem(BaseModel):
    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None
    shape: int
    vectors: int


class EmbeddingsResponse(BaseModel):
    loaded: dict[str, EmbeddingItem] = Field(default_factory=dict)
    skipped: dict[str, EmbeddingItem] = Field(default_factory=dict)


class MemoryResponse(BaseModel):
    ram: dict[str, Any] = Field(description="free, used (this process), total; bytes.")
    cuda: dict[str, Any] = Field(description="CUDA memory, or {'error': ...} without CUDA.")


class ScriptArg(BaseModel):
    label: str | None = None
    value: Any | None = None
    minimum: Any | None = None
    maximum: Any | None = None
    step: Any | None = None
    choices: list[str] | None = None


class ScriptInfo(BaseModel):
    name: str | None = None
    is_alwayson: bool | None = None
    is_img2img: bool | None = None
    args: list[ScriptArg]


class ExtensionItem(BaseModel):
    name: str
    remote: str
    branch: str
    commit_hash: str
    version: str
    commit_date: str
    enabled: bool
