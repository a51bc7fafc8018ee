"""`POST extra-single-image` and `POST extra-batch-images`: A1111's extras, upscaling only.

The upscale itself is `Services.upscale_image` (a library upscaler model, or Lanczos;
no diffusion). This module does A1111's part: the sizes (by a factor, or to a size
with an optional centre crop), "Nearest" and "None", the blend of a second upscaler,
the `html_info` line, and the refusal of face restoration, which this server does not
have. docs/a1111.md ("Upscaling") lists what is supported.
"""

from __future__ import annotations

import asyncio
import html
import io
import logging
from collections.abc import Sequence

from fastapi import APIRouter
from PIL import Image, PngImagePlugin

from kd_server.api.a1111 import upscaling
from kd_server.api.a1111.images import decode_image, to_png_base64
from kd_server.api.a1111.schemas import (
    ExtrasBatchImagesRequest,
    ExtrasBatchImagesResponse,
    ExtrasSingleImageRequest,
    ExtrasSingleImageResponse,
    _ExtrasFields,
)
from kd_server.api.a1111.upscaling import UpscalerChoice, UpscalerEntry
from kd_server.api.errors import ENGINE_STATUS, ApiError
from kd_server.api.imaging import ImageInputError
from kd_server.api.services import Services, ServicesDep
from kd_server.generation import EngineError

log = logging.getLogger(__name__)

router = APIRouter()

#: Images one extra-batch-images call may hold: each is upscaled in turn while the
#: client waits, and the answer holds them all.
MAX_BATCH = 32


@router.post(
    "/extra-single-image",
    response_model=ExtrasSingleImageResponse,
    summary="Upscale one image (A1111's extras)",
)
async def extra_single_image(
    body: ExtrasSingleImageRequest, services: ServicesDep
) -> ExtrasSingleImageResponse:
    services.check_open()
    _log_extra_fields(body, "extra-single-image")
    if not body.image:
        raise ApiError(422, "invalid_request", "image: is required: one base64 image.")
    pngs, info = await asyncio.to_thread(_run, services, body, [("image", body.image)])
    return ExtrasSingleImageResponse(html_info=info, image=pngs[0])


@router.post(
    "/extra-batch-images",
    response_model=ExtrasBatchImagesResponse,
    summary="Upscale several images (A1111's extras)",
)
async def extra_batch_images(
    body: ExtrasBatchImagesRequest, services: ServicesDep
) -> ExtrasBatchImagesResponse:
    services.check_open()
    _log_extra_fields(body, "extra-batch-images")
    if not body.imageList:
        raise ApiError(422, "invalid_request", "imageList: is required: [{data, name}, ...].")
    if len(body.imageList) > MAX_BATCH:
        raise ApiError(
            422,
            "invalid_request",
            f"imageList: {len(body.imageList)} images; send at most {MAX_BATCH} per call.",
        )
    sources = [(f"imageList[{i}].data", item.data) for i, item in enumerate(body.imageList)]
    pngs, info = await asyncio.to_thread(_run, services, body, sources)
    return ExtrasBatchImagesResponse(html_info=info, images=pngs)


def _log_extra_fields(body: _ExtrasFields, endpoint: str) -> None:
    extra = body.extra_fields
    names = extra.other_endpoint + extra.unknown + tuple(name for name, _ in extra.refused)
    if names:
        log.info("/sdapi/v1/%s: ignored fields: %s", endpoint, ", ".join(sorted(names)))


# ------------------------------------------------------------------------ the work


def _run(
    services: Services, body: _ExtrasFields, sources: Sequence[tuple[str, str]]
) -> tuple[list[str], str]:
    """Check everything, decode every image, then upscale them in order: a refusal
    comes before any work. Returns the base64 PNGs and the html_info of the last."""
    _refuse_face_restoration(body)
    entries = services.upscalers()
    first = upscaling.resolve("upscaler_1", body.upscaler_1, entries)
    second = _second(body, entries)
    pictures = [_decode(field, data, services.settings.max_pixels) for field, data in sources]
    pngs, info = [], ""
    for picture in pictures:
        result, entries_done = _upscale_one(services, body, picture, first, second)
        info = ", ".join(f"{key}: {value}" for key, value in entries_done)
        pngs.append(to_png_base64(_png(result, picture, info)))
    return pngs, f"<p>{html.escape(info)}</p>"


def _refuse_face_restoration(body: _ExtrasFields) -> None:
    for field in ("gfpgan_visibility", "codeformer_visibility"):
        if getattr(body, field) != 0:
            raise ApiError(
                422,
                "unsupported_field",
                f"{field}: face restoration (GFPGAN, CodeFormer) is not available on this "
                "server; send 0.",
            )


def _second(body: _ExtrasFields, entries: Sequence[UpscalerEntry]) -> UpscalerChoice | None:
    """Upscaler 2, blended in at extras_upscaler_2_visibility (None: not used)."""
    choice = upscaling.resolve("upscaler_2", body.upscaler_2, entries)
    if choice.kind == "none" or body.extras_upscaler_2_visibility == 0:
        return None
    if choice.kind == "latent":
        raise _latent("upscaler_2")
    return choice


def _latent(field: str) -> ApiError:
    return ApiError(
        422,
        "invalid_request",
        f"{field}: the latent modes upscale hires fix's latents; extras take Lanczos, "
        "Nearest or a model (GET /sdapi/v1/upscalers).",
    )


def _decode(field: str, data: str, max_pixels: int) -> Image.Image:
    try:
        return decode_image(data, field, max_pixels)
    except ImageInputError as exc:
        raise ApiError(422, "invalid_request", f"{exc}.") from exc


def _upscale_one(
    services: Services,
    body: _ExtrasFields,
    picture: Image.Image,
    first: UpscalerChoice,
    second: UpscalerChoice | None,
) -> tuple[Image.Image, list[tuple[str, str]]]:
    """One picture through A1111's postprocessing upscale: "None" as upscaler_1 leaves
    it as it is (A1111 does the same); otherwise upscaler 1, then upscaler 2 blended in."""
    rgb = picture.convert("RGB")
    if first.kind == "none":
        return rgb, []
    if first.kind == "latent":
        raise _latent("upscaler_1")
    size = upscaling.extras_size(
        rgb.size,
        body.resize_mode,
        body.upscaling_resize,
        body.upscaling_resize_w,
        body.upscaling_resize_h,
        body.upscaling_crop,
    )
    result = _enlarge(services, rgb, first, size)
    info = [*size.info, ("Postprocess upscaler", first.asked)]
    if second is not None:
        other = _enlarge(services, rgb, second, size)
        result = Image.blend(result, other, body.extras_upscaler_2_visibility)
        info.append(("Postprocess upscaler 2", second.asked))
    return result, info


def _enlarge(
    services: Services, rgb: Image.Image, choice: UpscalerChoice, size: upscaling.ExtrasSize
) -> Image.Image:
    width, height = size.upscale_to
    if choice.kind == "nearest":
        out = rgb.resize((width, height), Image.Resampling.NEAREST)
    else:
        try:
            out = services.upscale_image(rgb, choice.engine_name, width, height).convert("RGB")
        except EngineError as exc:
            raise ApiError(ENGINE_STATUS.get(exc.code, 422), exc.code.value, exc.message) from exc
    if size.crop is not None:
        out = out.crop(upscaling.centre_box(out.size, size.crop))
    return out


def _png(image: Image.Image, source: Image.Image, info: str) -> bytes:
    """A PNG as A1111's extras write it: the source's `parameters` kept, and what was
    done in `postprocessing`."""
    meta = PngImagePlugin.PngInfo()
    parameters = source.info.get("parameters")
    if isinstance(parameters, str):
        meta.add_text("parameters", parameters)
    if info:
        meta.add_text("postprocessing", info)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=meta, compress_level=1)
    return buffer.getvalue()
