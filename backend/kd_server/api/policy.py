"""One request policy for both front doors: our v1 API and the A1111 layer.

Whatever a client sends, through `/v1/jobs` or `/sdapi/v1/txt2img`, the same rules
decide what is refused and with which answer: prompt length and valid Unicode, the
pixel budget, the number of LoRAs, which image inputs a task takes, and the answer
while the server shuts down. Each front door only maps its own field names.
"""

from __future__ import annotations

from collections.abc import Iterable

from kd_server.api.errors import ApiError
from kd_server.config import Settings
from kd_server.generation import MAX_LORAS, LoraSpec, Task
from kd_server.prompt_syntax import (
    PromptSyntaxError,
    UnavailableNetwork,
    extract_networks,
    lora_weights,
)
from kd_server.tasks import spec_for


def invalid(field: str, message: str) -> ApiError:
    """422 naming the field, the shape every refused value gets."""
    return ApiError(422, "invalid_request", f"{field}: {message}")


def prompt_loras(field: str, text: str) -> list[LoraSpec]:
    """The LoRAs a prompt's `<lora:name:weight>` tags ask for (A1111's syntax, read by
    `kd_server.prompt_syntax`). Extra networks A1111 has and we do not
    (`<hypernet:...>`) and separate text-encoder/UNet weights are refused: ignoring
    them would change the picture; tags of kinds A1111 does not know are ignored, as
    A1111 ignores them."""
    try:
        weights = lora_weights(extract_networks(text)[1])
    except (PromptSyntaxError, UnavailableNetwork) as exc:
        raise invalid(field, f"{exc}.") from None
    return [LoraSpec(name, weight) for name, weight in weights]


def merge_loras(field: str, loras: list[LoraSpec]) -> list[LoraSpec]:
    """One entry per LoRA; the same LoRA twice must have the same weight."""
    merged: dict[str, float] = {}
    for lora in loras:
        if merged.get(lora.name, lora.weight) != lora.weight:
            raise invalid(field, f"the LoRA '{lora.name}' is given twice with different weights.")
        merged[lora.name] = lora.weight
    check_lora_count(field, len(merged))
    return [LoraSpec(name, weight) for name, weight in merged.items()]


def shutting_down() -> ApiError:
    return ApiError(503, "shutting_down", "The server is shutting down; try again soon.")


def check_prompt(field: str, text: str, settings: Settings) -> None:
    """Prompts are bounded, and must be real text: JSON can carry lone surrogate
    escapes ("\\ud800") that no tokenizer can encode, which would fail late."""
    limit = settings.max_prompt_length
    if len(text) > limit:
        raise invalid(field, f"must be at most {limit} characters long (it has {len(text)}).")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid(
            field,
            "contains a lone surrogate escape (e.g. \\ud800), which is not a character; "
            "send valid Unicode text.",
        ) from None


def check_budget(fields: str, width: int, height: int, batch_size: int, settings: Settings) -> None:
    """Output pixels of the whole batch must fit the server's budget."""
    total = width * height * batch_size
    if total > settings.max_pixels:
        raise invalid(
            fields,
            f"{width}x{height} x {batch_size} images = {total} pixels is over this server's "
            f"limit of {settings.max_pixels}; use a smaller size or batch.",
        )


#: The largest side an upscale (the `upscale` task, a hi-res pass, A1111's extras) may
#: reach. It is not held to `max_pixels`: the upscale works tile by tile, so its
#: memory follows the tile size, not the picture's (docs/upscale.md).
MAX_UPSCALE_SIDE = 8192


def check_upscale_size(fields: str, width: int, height: int) -> None:
    """An upscale target: up to `MAX_UPSCALE_SIDE` a side, whatever the pixel budget."""
    if not (1 <= width <= MAX_UPSCALE_SIDE and 1 <= height <= MAX_UPSCALE_SIDE):
        raise invalid(
            fields,
            f"{width}x{height}: an upscale may reach 1..{MAX_UPSCALE_SIDE} pixels a side.",
        )


def check_lora_count(field: str, count: int) -> None:
    if count > MAX_LORAS:
        raise invalid(field, f"{count} LoRAs; at most {MAX_LORAS} can be applied at once.")


def check_image_inputs(task: Task, given: Iterable[str], describe: dict[str, str]) -> None:
    """Each task takes exactly the image inputs its declaration names.

    `given`: the inputs the client sent; `describe`: what to tell a client that left
    one out ("a base64 PNG").
    """
    needed = spec_for(task).image_inputs
    present = set(given)
    for name in sorted(needed - present):
        raise invalid(name, f"is required for {task.value} ({describe.get(name, 'an image')}).")
    for name in sorted(present - needed):
        users = [t.value for t in Task if name in spec_for(t).image_inputs]
        raise invalid(
            name,
            f"only {' and '.join(users)} use{'s' if len(users) == 1 else ''} it; "
            f"leave it out for {task.value}.",
        )
