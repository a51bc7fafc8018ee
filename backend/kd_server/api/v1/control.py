"""Control layers: turn a picture into a control image without generating (since 4).

The plugin's "From canvas" sends a layer's pixels and a mode and puts the answer on a
new layer, where the artist edits it before using it as a control. The same function
runs for a job's control with `preprocess: true`, so what the artist sees is what a
job would use.
"""

from __future__ import annotations

import base64
import io

from fastapi import APIRouter

from kd_server.api.errors import ApiError
from kd_server.api.imaging import ImageInputError, as_picture, decode_png
from kd_server.api.services import ServicesDep
from kd_server.api.v1.schemas import ErrorResponse, PreprocessRequest, PreprocessResult

router = APIRouter(tags=["control"])


@router.post(
    "/preprocess",
    response_model=PreprocessResult,
    summary="A picture -> the control image of a mode (edges, depth, lines, pose)",
    responses={status: {"model": ErrorResponse} for status in (401, 413, 422, 503)},
)
def preprocess(body: PreprocessRequest, services: ServicesDep) -> PreprocessResult:
    """Runs in a worker thread: decoding and preprocessing are CPU (or GPU) work. A
    `depth` request without a depth estimator on the server is a 422
    `preprocessor_unavailable` naming the installer command that fetches one."""
    services.check_open()
    try:
        picture = as_picture(decode_png(body.image, "image", services.settings.max_pixels))
    except ImageInputError as exc:
        raise ApiError(422, "invalid_request", f"{exc}.") from exc
    result = services.preprocess(
        picture, body.mode, body.low_threshold, body.high_threshold, body.resolution
    )
    buffer = io.BytesIO()
    result.save(buffer, format="PNG")
    return PreprocessResult(
        mode=body.mode,
        image=base64.b64encode(buffer.getvalue()).decode("ascii"),
        width=result.width,
        height=result.height,
    )
