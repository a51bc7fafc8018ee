"""JobRequest (wire) -> GenerationRequest (engine), with the checks that need settings.

Everything a client can get wrong is refused here, at submit time, with a 422 naming
the field: the pixel budget, the prompt length, which images a task needs, and
whether the images decode. The engine's own `check` (models, LoRAs, sampler) runs
after this, in the route.
"""

from __future__ import annotations

from PIL import Image

from kd_server.api.errors import ApiError
from kd_server.api.imaging import ImageInputError, as_mask, as_picture, decode_png
from kd_server.api.schemas import JobRequest
from kd_server.config import Settings
from kd_server.generation import GenerationRequest, LoraSpec, Task


def invalid(message: str) -> ApiError:
    return ApiError(422, "invalid_request", message)


def to_generation_request(body: JobRequest, settings: Settings) -> GenerationRequest:
    """Check `body` against the server's limits and decode its images."""
    _check_prompts(body, settings.max_prompt_length)
    _check_images_present(body)
    image, mask = _decode_images(body, settings.max_pixels)
    _check_budget(body, image, settings.max_pixels)
    return GenerationRequest(
        task=body.task,
        prompt=body.prompt,
        negative_prompt=body.negative_prompt,
        model=body.model,
        loras=[LoraSpec(lora.name, lora.weight) for lora in body.loras],
        sampler=body.sampler,
        steps=body.steps,
        cfg_scale=body.cfg_scale,
        seed=None if body.seed in (None, -1) else body.seed,
        batch_size=body.batch_size,
        width=body.width,
        height=body.height,
        strength=body.strength,
        image=image,
        mask=mask,
        mask_grow=body.mask_grow,
        mask_feather=body.mask_feather,
        preview_every=body.preview_every,
    )


def _check_prompts(body: JobRequest, limit: int) -> None:
    for name in ("prompt", "negative_prompt"):
        text: str = getattr(body, name)
        if len(text) > limit:
            raise invalid(f"{name}: must be at most {limit} characters long (it has {len(text)}).")
        if not _is_valid_unicode(text):
            # JSON can carry "\ud800" escapes; the tokenizer cannot encode them
            raise invalid(
                f"{name}: contains a lone surrogate escape (e.g. \\ud800), which is not a "
                "character; send valid Unicode text."
            )


def _is_valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_images_present(body: JobRequest) -> None:
    task = body.task
    if task is Task.TXT2IMG and body.image is not None:
        raise invalid("image: only img2img and inpaint use an image; leave it out for txt2img.")
    if task in (Task.IMG2IMG, Task.INPAINT) and body.image is None:
        raise invalid(f"image: is required for {task.value} (a base64 PNG).")
    if task is Task.INPAINT and body.mask is None:
        raise invalid("mask: is required for inpaint (a base64 8-bit PNG, white = repaint).")
    if task is not Task.INPAINT and body.mask is not None:
        raise invalid(f"mask: only inpaint uses a mask; leave it out for {task.value}.")


def _decode_images(
    body: JobRequest, max_pixels: int
) -> tuple[Image.Image | None, Image.Image | None]:
    try:
        image = None
        if body.image is not None:  # "" is an empty image, not a missing one
            image = as_picture(decode_png(body.image, "image", max_pixels))
        mask = as_mask(decode_png(body.mask, "mask", max_pixels)) if body.mask is not None else None
    except ImageInputError as exc:
        raise invalid(f"{exc}.") from exc
    if image is not None and mask is not None and image.size != mask.size:
        raise invalid(
            f"mask: must be the same size as image ({image.width}x{image.height}), "
            f"not {mask.width}x{mask.height}."
        )
    return image, mask


def _check_budget(body: JobRequest, image: Image.Image | None, max_pixels: int) -> None:
    """Output pixels of the whole batch must fit the server's budget."""
    width, height = image.size if image is not None else (body.width, body.height)
    total = width * height * body.batch_size
    if total > max_pixels:
        fields = "batch_size" if image is not None else "width, height, batch_size"
        raise invalid(
            f"{fields}: {width}x{height} x {body.batch_size} images = {total} pixels is over "
            f"this server's limit of {max_pixels}; use a smaller size or batch."
        )
