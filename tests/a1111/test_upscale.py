"""A1111's upscalers and extras (`upscalers`, `latent-upscale-modes`,
`extra-single-image`, `extra-batch-images`) through the real `webuiapi` client and raw
requests, against the real server with a tiny 4x ESRGAN in `models/ESRGAN`."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import webuiapi
from a1111.names import UPSCALER
from PIL import Image

from api.live import LiveServer, picture, png_b64
from kd_server.api.a1111.upscaling import extras_size, hires_size, resolve
from kd_server.api.errors import ApiError
from kd_server.upscale.files import UpscalerFile


def photo(width: int = 40, height: int = 24) -> Image.Image:
    return picture().resize((width, height))


def extras(server: LiveServer, path: str, status: int = 200, **body: Any) -> dict[str, Any]:
    response = server.post(f"/sdapi/v1/{path}", json=body)
    assert response.status_code == status, response.text
    return dict(response.json())


def b64_image(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


# ------------------------------------------------------------------------ the lists


def test_upscalers_list_built_ins_first_then_models(api: webuiapi.WebUIApi) -> None:
    items = api.get_upscalers()
    assert [item["name"] for item in items[:3]] == ["None", "Lanczos", "Nearest"]
    for item in items:
        assert set(item) == {"name", "model_name", "model_path", "model_url", "scale"}
    model = next(item for item in items if item["name"] == UPSCALER)
    assert model["scale"] == 4 and model["model_name"] == UPSCALER
    assert model["model_path"].endswith(f"{UPSCALER}.safetensors")
    assert api.get_latent_upscale_modes()[0] == {"name": "Latent"}


# -------------------------------------------------------------------------- extras


def test_single_image_by_factor_with_lanczos(api: webuiapi.WebUIApi) -> None:
    result = api.extra_single_image(photo(), upscaler_1="Lanczos", upscaling_resize=2)
    assert result.image.size == (80, 48)
    assert "Postprocess upscale by: 2" in result.info
    assert "Postprocess upscaler: Lanczos" in result.info
    assert result.info.startswith("<p>")


def test_single_image_to_a_size_with_the_model_and_crop(api: webuiapi.WebUIApi) -> None:
    result = api.extra_single_image(
        photo(),
        resize_mode=1,
        upscaling_resize_w=100,
        upscaling_resize_h=100,
        upscaling_crop=True,
        upscaler_1=UPSCALER,
    )
    assert result.image.size == (100, 100)
    assert f"Postprocess upscaler: {UPSCALER}" in result.info
    assert "Postprocess crop to: 100x100" in result.info
    uncropped = api.extra_single_image(
        photo(), resize_mode=1, upscaling_resize_w=100, upscaling_resize_h=100,
        upscaling_crop=False, upscaler_1="Lanczos",
    )  # fmt: skip
    # The factor that covers 100x100 (100/24), the aspect kept, rounded down to 8s.
    assert uncropped.image.size == (160, 96)


def test_upscaler_1_none_returns_the_image_as_it_is(api: webuiapi.WebUIApi) -> None:
    """webuiapi's default upscaler_1 is "None": A1111 then leaves the image alone."""
    source = photo()
    result = api.extra_single_image(source)
    assert result.image.size == source.size
    assert np.array_equal(np.asarray(result.image.convert("RGB")), np.asarray(source))


def test_second_upscaler_is_blended_in(api: webuiapi.WebUIApi) -> None:
    def run(**fields: Any) -> np.ndarray:
        out = api.extra_single_image(photo(), upscaling_resize=2, **fields)
        return np.asarray(out.image.convert("RGB"), dtype=np.int16)

    lanczos = run(upscaler_1="Lanczos")
    nearest = run(upscaler_1="Nearest")
    half = run(upscaler_1="Lanczos", upscaler_2="Nearest", extras_upscaler_2_visibility=0.5)
    assert not np.array_equal(lanczos, nearest)
    assert np.abs(half - (lanczos + nearest) / 2).max() <= 1
    # Visibility 0 leaves upscaler 2 out, as A1111 does.
    assert np.array_equal(run(upscaler_1="Lanczos", upscaler_2="Nearest"), lanczos)


def test_batch_images_in_order(api: webuiapi.WebUIApi) -> None:
    sources = [photo(40, 24), photo(16, 32)]
    result = api.extra_batch_images(sources, upscaler_1=UPSCALER, upscaling_resize=2)
    assert [image.size for image in result.images] == [(80, 48), (32, 64)]
    assert f"Postprocess upscaler: {UPSCALER}" in result.info


def test_extras_png_keeps_the_source_parameters(server: LiveServer) -> None:
    from kd_server.pngmeta import encode_png

    png = encode_png(photo(), "a cup\nSteps: 2, Sampler: Euler, Seed: 1")
    body = {"image": base64.b64encode(png).decode(), "upscaler_1": "Lanczos"}
    image = b64_image(extras(server, "extra-single-image", **body)["image"])
    assert image.info["parameters"].startswith("a cup")
    assert "Postprocess upscaler: Lanczos" in image.info["postprocessing"]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"gfpgan_visibility": 0.5, "upscaler_1": "Lanczos"}, "gfpgan_visibility"),
        ({"codeformer_visibility": 1, "upscaler_1": "Lanczos"}, "codeformer_visibility"),
        ({"upscaler_1": "R-ESRGAN 4x+"}, "upscaler_1"),
        (
            {"upscaler_1": "Lanczos", "upscaler_2": "nope", "extras_upscaler_2_visibility": 1},
            "upscaler_2",
        ),
        ({"upscaler_1": "Latent"}, "upscaler_1"),
        ({"upscaler_1": "Lanczos", "resize_mode": 2}, "resize_mode"),
        ({"upscaler_1": "Lanczos", "upscaling_resize": 0}, "upscaling_resize"),
        ({"upscaler_1": "Lanczos", "upscaling_resize": 0.01}, "upscaling_resize"),
    ],
)
def test_extras_refusals_name_the_field(
    server: LiveServer, body: dict[str, Any], named: str
) -> None:
    answer = extras(server, "extra-single-image", 422, image=png_b64(photo()), **body)
    message = answer["error"]["message"]
    assert message.startswith(named), message
    if named == "upscaler_1" and "R-ESRGAN" in str(body):
        assert UPSCALER in message and "Lanczos" in message  # the choices


def test_extras_bad_images_are_named(server: LiveServer) -> None:
    single = extras(server, "extra-single-image", 422, image="###", upscaler_1="Lanczos")
    assert single["error"]["message"].startswith("image:")
    batch = extras(
        server,
        "extra-batch-images",
        422,
        imageList=[{"data": png_b64(photo()), "name": "a"}, {"data": "###", "name": "b"}],
        upscaler_1="Lanczos",
    )
    assert batch["error"]["message"].startswith("imageList[1].data:")
    empty = extras(server, "extra-batch-images", 422, imageList=[], upscaler_1="Lanczos")
    assert empty["error"]["message"].startswith("imageList:")


# ------------------------------------------------------------------- the arithmetic


def test_upscaler_names_as_a1111_scripts_send_them(tmp_path: Path) -> None:
    def entry(name: str, usable: bool = True) -> UpscalerFile:
        reason = None if usable else "broken"
        return UpscalerFile(name, tmp_path / f"{name}.pth", "ESRGAN", usable, reason, 4)

    entries = [entry("RealESRGAN_x4plus"), entry("sub/4x-UltraSharp"), entry("bad", False)]
    assert resolve("hr_upscaler", "R-ESRGAN 4x+", entries).model == "RealESRGAN_x4plus"
    assert resolve("x", "4x-ultrasharp.pth", entries).model == "sub/4x-UltraSharp"
    assert resolve("x", "latent (bicubic)", entries).kind == "latent"
    assert resolve("x", None, entries).kind == "none"
    with pytest.raises(ApiError) as unusable:
        resolve("upscaler_1", "bad", entries)
    assert unusable.value.code == "upscaler_unusable" and "broken" in unusable.value.message
    with pytest.raises(ApiError) as unknown:
        resolve("upscaler_1", "R-ESRGAN 4x+ Anime6B", entries)
    assert unknown.value.code == "upscaler_not_found"
    assert "RealESRGAN_x4plus" in unknown.value.message and "bad" not in unknown.value.message


def test_extras_sizes_follow_a1111() -> None:
    by = extras_size((100, 60), 0, 1.5, 512, 512, True)
    assert by.upscale_to == (144, 88) and by.crop is None  # rounded down to 8s
    to = extras_size((100, 60), 1, 2, 300, 300, True)
    assert to.upscale_to == (500, 300) and to.crop == (300, 300)


def test_hires_sizes_follow_a1111() -> None:
    assert hires_size(512, 512, 1.5, 0, 0).final == (768, 768)
    assert hires_size(512, 768, 2, 1024, 0).final == (1024, 1536)
    assert hires_size(512, 768, 2, 0, 1024).final == (682, 1024)
    both = hires_size(512, 512, 2, 1024, 768)  # cover, then cut to the box
    assert both.upscale_to == (1024, 1024) and both.final == (1024, 768)
