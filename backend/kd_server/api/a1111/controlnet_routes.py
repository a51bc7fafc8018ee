"""The ControlNet extension's own endpoints, at the server root as it serves them:
`/controlnet/version`, `/controlnet/model_list`, `/controlnet/module_list`,
`/controlnet/detect` (a preprocessor run on images, without generating)."""

from __future__ import annotations

import asyncio
import base64
import io
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends

from kd_server.api.a1111.auth import require_sdapi_auth
from kd_server.api.a1111.controlnet import MODULES, REFERENCE_PREFIX, _module
from kd_server.api.a1111.images import decode_image
from kd_server.api.errors import ApiError
from kd_server.api.imaging import ImageInputError, as_picture
from kd_server.api.services import Services, ServicesDep
from kd_server.library import EntryKind

router = APIRouter(prefix="/controlnet", tags=["a1111"], dependencies=[Depends(require_sdapi_auth)])

#: The extension's API version that its clients check.
API_VERSION = 2


@router.get("/version", summary="The ControlNet extension's API version")
def version() -> dict[str, int]:
    return {"version": API_VERSION}


@router.get("/model_list", summary="Control models, as 'name [hash]'")
def model_list(services: ServicesDep) -> dict[str, list[str]]:
    """Usable ControlNets and IP-Adapters; the short hash once it is computed."""
    library = services.library
    names = []
    for entry in library.entries(EntryKind.CONTROL):
        if entry.usable:
            sha256 = library.hashes.entry_hash(entry).sha256
            names.append(f"{entry.name} [{sha256[:8]}]" if sha256 else entry.name)
    return {"model_list": names}


@router.get("/module_list", summary="Preprocessor modules this server runs")
def module_list() -> dict[str, Any]:
    modules = [*MODULES, "ip-adapter_clip_sd15", "ip-adapter_clip_sdxl"]
    return {
        "module_list": modules,
        "module_detail": {name: {"model_free": False, "sliders": []} for name in modules},
    }


@router.post("/detect", summary="Run a preprocessor on images")
async def detect(services: ServicesDep, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    """`controlnet_module`, `controlnet_input_images` (or webuiapi's
    `controlnet_images`), `controlnet_processor_res`, `controlnet_threshold_a`/`_b`."""
    services.check_open()
    return await asyncio.to_thread(_detect, services, body)


def _detect(services: Services, body: dict[str, Any]) -> dict[str, Any]:
    module = str(body.get("controlnet_module") or "none").strip().lower()
    if module.startswith(REFERENCE_PREFIX):
        raise ApiError(
            422, "unsupported_field", "controlnet_module: an IP-Adapter module makes no image"
        )
    mode, _ = _module(module, "controlnet_module")
    pictures = body.get("controlnet_input_images", body.get("controlnet_images")) or []
    if not isinstance(pictures, list) or not pictures:
        raise ApiError(
            422, "invalid_request", "controlnet_input_images: is required: base64 images"
        )
    resolution = _resolution(body.get("controlnet_processor_res"))
    low, high = (
        _int(body.get(k), d)
        for k, d in (("controlnet_threshold_a", 100), ("controlnet_threshold_b", 200))
    )
    results = []
    for index, data in enumerate(pictures):
        field = f"controlnet_input_images[{index}]"
        try:
            picture = as_picture(decode_image(str(data), field, services.settings.max_pixels))
        except ImageInputError as exc:
            raise ApiError(422, "invalid_request", f"{exc}.") from exc
        if mode is None:
            image = picture.convert("RGB")
        else:
            image = services.preprocess(picture, mode, low, high, resolution)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        results.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return {"images": results, "info": "Success"}


def _int(value: Any, default: int) -> int:
    try:
        number = default if value in (None, -1) else round(float(value))
    except (TypeError, ValueError, OverflowError):
        number = default
    return max(0, min(255, number))


def _resolution(value: Any) -> int | None:
    """The extension's processor_res, used where it is a sane short side (64..2048);
    -1, absent or absurd: the picture's own size."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value) if 64 <= value <= 2048 else None
