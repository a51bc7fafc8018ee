"""Hires fix on `/sdapi/v1/txt2img` (`enable_hr`): the sizes, the upscalers, the
infotext and `info` as A1111 writes them, and the refusals; through the real `webuiapi`
client and raw requests against the real server (tiny sizes: the machine is shared)."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest
import webuiapi
from a1111.names import UPSCALER
from PIL import Image

from api.live import LiveServer
from kd_server.api.a1111 import infotext

SMALL = {"prompt": "a cup", "width": 64, "height": 64, "steps": 2, "sampler_name": "Euler"}


def txt2img(server: LiveServer, status: int = 200, **fields: Any) -> dict[str, Any]:
    body = {**SMALL, "seed": 3, "enable_hr": True, **fields}
    response = server.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == status, response.text
    return dict(response.json())


def size_of(result: dict[str, Any], index: int = 0) -> tuple[int, int]:
    with Image.open(io.BytesIO(base64.b64decode(result["images"][index]))) as image:
        return image.size


def test_webuiapi_hires_with_its_defaults(api: webuiapi.WebUIApi) -> None:
    """webuiapi sends hr_upscaler "Latent" and denoising_strength 0.7 by default."""
    result = api.txt2img(
        prompt="a cup", width=64, height=64, seed=5, enable_hr=True, alwayson_scripts={}
    )
    assert result.image.size == (128, 128)
    info = result.info
    assert (info["width"], info["height"]) == (64, 64)  # A1111 reports the first pass
    assert info["denoising_strength"] == 0.7
    text = info["infotexts"][0]
    parsed = infotext.parse(text)
    assert (parsed["Size-1"], parsed["Size-2"]) == ("64", "64")
    assert parsed["Denoising strength"] == "0.7"
    assert parsed["Hires upscale"] == "2" and parsed["Hires upscaler"] == "Latent"
    assert "Hires note" in parsed  # latent modes run as Lanczos here
    assert info["extra_generation_params"]["Hires upscale"] == "2"
    assert result.image.info["parameters"] == text


def test_hires_with_a_model_and_resize_to_a_box(server: LiveServer) -> None:
    """Both hr_resize_x and hr_resize_y at another aspect: cover the box, cut to it."""
    result = txt2img(
        server,
        hr_upscaler=UPSCALER,
        hr_resize_x=96,
        hr_resize_y=64,
        hr_second_pass_steps=1,
        denoising_strength=0.5,
    )
    assert size_of(result) == (96, 64)
    parsed = infotext.parse(json.loads(result["info"])["infotexts"][0])
    assert (parsed["Hires resize-1"], parsed["Hires resize-2"]) == ("96", "64")
    assert parsed["Hires upscaler"] == UPSCALER and parsed["Hires steps"] == "1"
    assert "Hires note" not in parsed and parsed["Denoising strength"] == "0.5"


def test_hires_one_resize_side_keeps_the_aspect_and_none_is_lanczos(server: LiveServer) -> None:
    result = txt2img(server, width=96, height=64, hr_resize_x=144, hr_upscaler="None")
    assert size_of(result) == (144, 96)
    parsed = infotext.parse(json.loads(result["info"])["infotexts"][0])
    assert parsed["Hires upscaler"] == "None" and "Hires note" not in parsed


def test_hires_defaults_without_denoising_strength(server: LiveServer) -> None:
    """A1111's processing default for the second pass is 0.75; batches keep their size."""
    result = txt2img(server, hr_scale=1.5, hr_upscaler="Lanczos", batch_size=2)
    assert [size_of(result, i) for i in range(2)] == [(96, 96), (96, 96)]
    assert json.loads(result["info"])["denoising_strength"] == 0.75


def test_hires_fields_meaning_the_same_as_the_first_pass_are_accepted(
    server: LiveServer,
) -> None:
    result = txt2img(
        server,
        hr_scale=1,
        hr_upscaler="Lanczos",
        hr_sampler_name="Use same sampler",
        hr_scheduler="Use same scheduler",
        hr_checkpoint_name="Use same checkpoint",
        hr_prompt="a cup",
        hr_negative_prompt="",
        hr_additional_modules=["Use same choices"],
    )
    assert size_of(result) == (64, 64)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"hr_upscaler": "R-ESRGAN 4x+"}, "hr_upscaler"),
        ({"hr_upscaler": "Nearest"}, "hr_upscaler"),
        ({"hr_scale": 0.5}, "hr_scale"),
        ({"hr_scale": 9}, "hr_scale"),
        ({"hr_resize_x": 32}, "hr_resize_x"),
        ({"hr_second_pass_steps": 500}, "hr_second_pass_steps"),
        ({"hr_sampler_name": "DDIM"}, "hr_sampler_name"),
        ({"hr_sampler_name": "no such sampler"}, "hr_sampler_name"),
        ({"hr_scheduler": "Karras"}, "hr_scheduler"),
        ({"hr_prompt": "a dog"}, "hr_prompt"),
        ({"hr_negative_prompt": "fog"}, "hr_negative_prompt"),
        ({"firstphase_width": 64}, "firstphase_width"),
    ],
)
def test_hires_refusals_name_the_field(
    server: LiveServer, fields: dict[str, Any], named: str
) -> None:
    answer = txt2img(server, 422, **fields)
    assert set(answer["error"]) == {"code", "message"}
    assert answer["error"]["message"].startswith(named), answer["error"]["message"]


def test_hires_fields_are_ignored_without_enable_hr(server: LiveServer) -> None:
    result = txt2img(server, enable_hr=False, hr_scale=0, hr_upscaler="nope", hr_prompt="x")
    assert size_of(result) == (64, 64)
    assert "Hires" not in json.loads(result["info"])["infotexts"][0]
