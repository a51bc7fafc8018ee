"""JobRequest (the v1 wire body) -> GenerationRequest (the engine's nested request).

Everything a client can get wrong is refused here, at submit time, with a 422 naming
the field, by the rules both front doors share (`api/policy.py`): prompts, the pixel
budget, which images a task takes, whether the images decode. The engine's own
`check` (models, LoRAs, sampler, the task's own rules) runs after this.
"""

from __future__ import annotations

from PIL import Image

from kd_server.api import policy
from kd_server.api.errors import ApiError
from kd_server.api.imaging import ImageInputError, as_mask, as_picture, decode_png
from kd_server.api.v1.schemas import ControlRequest, JobRequest, ReferenceRequest, UpscaleRequest
from kd_server.config import Settings
from kd_server.generation import (
    Conditioning,
    ControlInput,
    FillMode,
    GenerationRequest,
    ImageInputs,
    LoraSpec,
    ReferenceInput,
    Sampling,
    Task,
    Upscaling,
)

#: How each image input is described to a client that left it out.
IMAGE_INPUTS = {
    "image": "a base64 PNG",
    "mask": "a base64 8-bit PNG, white = repaint",
}


def to_generation_request(body: JobRequest, settings: Settings) -> GenerationRequest:
    """Check `body` against the server's limits and decode its images."""
    policy.check_prompt("prompt", body.prompt, settings)
    policy.check_prompt("negative_prompt", body.negative_prompt, settings)
    given = [name for name in IMAGE_INPUTS if getattr(body, name) is not None]
    policy.check_image_inputs(body.task, given, IMAGE_INPUTS)
    _check_task_fields(body)
    image, mask = _decode_images(body, settings.max_pixels)
    if image is not None:
        policy.check_budget("batch_size", *image.size, body.batch_size, settings)
    else:
        policy.check_budget(
            "width, height, batch_size", body.width, body.height, body.batch_size, settings
        )
    upscaling = None
    if body.upscale is not None and image is not None:
        upscaling = _upscaling(body.upscale, "upscale", image.size)
    elif body.hires is not None:
        upscaling = _upscaling(body.hires, "hires", (body.width, body.height))
    return GenerationRequest(
        task=body.task,
        conditioning=Conditioning(
            prompt=body.prompt,
            negative_prompt=body.negative_prompt,
            loras=policy.merge_loras(
                "loras",
                [LoraSpec(lora.name, lora.weight) for lora in body.loras]
                + policy.prompt_loras("prompt", body.prompt)
                + policy.prompt_loras("negative_prompt", body.negative_prompt),
            ),
            clip_skip=body.clip_skip,
            control=[
                _control(c, f"control[{i}]", settings.max_pixels)
                for i, c in enumerate(body.control)
            ],
            reference=_reference(body.reference, settings.max_pixels),
        ),
        sampling=Sampling(
            sampler=body.sampler,
            steps=body.steps,
            cfg_scale=body.cfg_scale,
            seed=None if body.seed in (None, -1) else body.seed,
            batch_size=body.batch_size,
            guidance=body.guidance,
        ),
        inputs=ImageInputs(
            image=image,
            mask=mask,
            mask_grow=body.mask_grow,
            mask_feather=body.mask_feather,
            strength=body.strength,
            fill=body.fill,
        ),
        model=body.model,
        vae=body.vae,
        width=body.width,
        height=body.height,
        preview_every=body.preview_every,
        upscaling=upscaling,
        memory_mode=body.memory_mode,
    )


#: The task each since-5 object belongs to; `fill` belongs to the tasks that repaint.
_FILL_TASKS = (Task.IMG2IMG, Task.INPAINT)


def _check_task_fields(body: JobRequest) -> None:
    """`upscale` only (and always) on upscale jobs, `hires` only on txt2img, a `fill`
    other than `keep` only where something is repainted."""
    if body.task is Task.UPSCALE and body.upscale is None:
        raise policy.invalid(
            "upscale", "is required for upscale (a factor, or a width and height)."
        )
    if body.task is not Task.UPSCALE and body.upscale is not None:
        hint = " (txt2img has `hires` for a second pass)" if body.task is Task.TXT2IMG else ""
        raise policy.invalid("upscale", f"only the upscale task uses it{hint}.")
    if body.task is not Task.TXT2IMG and body.hires is not None:
        raise policy.invalid("hires", f"only txt2img uses it; leave it out for {body.task.value}.")
    if body.task not in _FILL_TASKS and body.fill is not FillMode.KEEP:
        raise policy.invalid("fill", f"only img2img and inpaint use it, not {body.task.value}.")


def _upscaling(target: UpscaleRequest, field: str, source: tuple[int, int]) -> Upscaling:
    """The wire's upscale or hires object -> the engine's `Upscaling`: a factor of the
    source size, or a width and height; never smaller than the source."""
    given_size = target.width is not None or target.height is not None
    if (target.factor is None) == (not given_size):
        raise policy.invalid(field, "give either factor, or width and height, not both.")
    if target.factor is not None:
        width = round(source[0] * target.factor)
        height = round(source[1] * target.factor)
    elif target.width is None or target.height is None:
        raise policy.invalid(field, "width and height go together.")
    else:
        width, height = target.width, target.height
    policy.check_upscale_size(field, width, height)
    if width < source[0] or height < source[1]:
        raise policy.invalid(
            field,
            f"{width}x{height} is smaller than the picture ({source[0]}x{source[1]}); an "
            "upscale only enlarges.",
        )
    return Upscaling(
        width=width,
        height=height,
        upscaler=target.upscaler,
        strength=target.strength,
        tile_size=target.tile_size,
        steps=target.steps,
    )


def _decode_images(
    body: JobRequest, max_pixels: int
) -> tuple[Image.Image | None, Image.Image | None]:
    try:
        image = None
        if body.image is not None:  # "" is an empty image, not a missing one
            image = as_picture(decode_png(body.image, "image", max_pixels))
        mask = as_mask(decode_png(body.mask, "mask", max_pixels)) if body.mask is not None else None
    except ImageInputError as exc:
        raise ApiError(422, "invalid_request", f"{exc}.") from exc
    if image is not None and mask is not None and image.size != mask.size:
        raise policy.invalid(
            "mask",
            f"must be the same size as image ({image.width}x{image.height}), "
            f"not {mask.width}x{mask.height}.",
        )
    return image, mask


def _picture(data: str, field: str, max_pixels: int) -> Image.Image:
    try:
        return as_picture(decode_png(data, field, max_pixels))
    except ImageInputError as exc:
        raise ApiError(422, "invalid_request", f"{exc}.") from exc


def _control(control: ControlRequest, field: str, max_pixels: int) -> ControlInput:
    """Since 4: a control layer; its size and model are checked by the engine."""
    if control.end <= control.start:
        raise policy.invalid(
            f"{field}.end", f"must be above start ({control.start:g}), not {control.end:g}."
        )
    return ControlInput(
        model=control.model,
        image=_picture(control.image, f"{field}.image", max_pixels),
        mode=control.mode,
        preprocess=control.preprocess,
        strength=control.strength,
        start=control.start,
        end=control.end,
        low_threshold=control.low_threshold,
        high_threshold=control.high_threshold,
    )


def _reference(reference: ReferenceRequest | None, max_pixels: int) -> ReferenceInput | None:
    if reference is None:
        return None
    image = _picture(reference.image, "reference.image", max_pixels)
    return ReferenceInput(model=reference.model, image=image, weight=reference.weight)
