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
from kd_server.api.v1.schemas import ControlRequest, JobRequest, ReferenceRequest
from kd_server.config import Settings
from kd_server.generation import (
    Conditioning,
    ControlInput,
    GenerationRequest,
    ImageInputs,
    LoraSpec,
    ReferenceInput,
    Sampling,
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
    image, mask = _decode_images(body, settings.max_pixels)
    if image is not None:
        policy.check_budget("batch_size", *image.size, body.batch_size, settings)
    else:
        policy.check_budget(
            "width, height, batch_size", body.width, body.height, body.batch_size, settings
        )
    return GenerationRequest(
        task=body.task,
        conditioning=Conditioning(
            prompt=body.prompt,
            negative_prompt=body.negative_prompt,
            loras=[LoraSpec(lora.name, lora.weight) for lora in body.loras],
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
        ),
        inputs=ImageInputs(
            image=image,
            mask=mask,
            mask_grow=body.mask_grow,
            mask_feather=body.mask_feather,
            strength=body.strength,
        ),
        model=body.model,
        width=body.width,
        height=body.height,
        preview_every=body.preview_every,
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
