"""The ControlNet extension's API (issue 16): units in `alwayson_scripts.controlnet.args`
sent by the real `webuiapi` client's ControlNetUnit, and `/controlnet/*`."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import webuiapi
from a1111.test_fields import SMALL, refused
from PIL import Image

from api.live import LiveServer, picture, png_b64, square_mask
from support.control import DEPTH, IP_ADAPTER, LINES, disc, outline

SIZE = {"width": 64, "height": 64}


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def txt2img(api: webuiapi.WebUIApi, **fields: Any) -> webuiapi.WebUIApiResult:
    """webuiapi's `alwayson_scripts={}` default is one dict that it fills with the units
    and keeps: a later call without units would send the old ones. A fresh dict each."""
    return api.txt2img(prompt="a ball", seed=4, alwayson_scripts={}, **SIZE, **fields)


def img2img(api: webuiapi.WebUIApi, **fields: Any) -> webuiapi.WebUIApiResult:
    return api.img2img(prompt="a ball", seed=2, alwayson_scripts={}, **SIZE, **fields)


def unit(**fields: Any) -> webuiapi.ControlNetUnit:
    return webuiapi.ControlNetUnit(**{"image": disc(), "module": "none", "model": DEPTH, **fields})


def test_a_unit_steers_txt2img_and_is_recorded(api: webuiapi.WebUIApi) -> None:
    plain = txt2img(api)
    steered = txt2img(api, controlnet_units=[unit()])
    off = txt2img(api, controlnet_units=[unit(weight=0.0)])
    assert np.abs(pixels(steered.image) - pixels(plain.image)).mean() > 2
    assert np.array_equal(pixels(off.image), pixels(plain.image))
    assert (
        'ControlNet 0: "Module: none, Model: tiny-depth, Weight: 1' in steered.info["infotexts"][0]
    )


def test_preprocessor_modules_and_an_ip_adapter_unit(api: webuiapi.WebUIApi) -> None:
    photo = disc(background="navy", ink="orange")
    units = [
        unit(image=photo, module="canny", model=LINES, threshold_a=100, threshold_b=200),
        unit(image=photo, module="depth_anything_v2", guidance_end=0.5),
        unit(image=picture(48, 32), module="ip-adapter_clip_sd15", model=IP_ADAPTER, weight=0.8),
        unit(module="openpose_full", enabled=False),  # disabled units are skipped
    ]
    result = txt2img(api, controlnet_units=units)
    plain = txt2img(api)
    assert np.abs(pixels(result.image) - pixels(plain.image)).mean() > 2
    assert "ControlNet 2" in result.info["infotexts"][0]


def test_img2img_units_use_the_init_image_and_inpaint_crops_them(api: webuiapi.WebUIApi) -> None:
    source = picture(64, 64)
    common = {"images": [source], "denoising_strength": 0.8}
    plain = img2img(api, **common)
    from_init = img2img(api, **common, controlnet_units=[unit(image=None, module="canny")])
    assert np.abs(pixels(from_init.image) - pixels(plain.image)).mean() > 1
    inpainted = img2img(
        api,
        **common,
        mask_image=square_mask(),
        inpaint_full_res=True,
        inpaint_full_res_padding=4,
        controlnet_units=[unit(image=outline(), model=LINES, module="invert")],
    )
    assert inpainted.image.size == (64, 64)


def test_the_extension_endpoints(api: webuiapi.WebUIApi) -> None:
    assert api.controlnet_version() == 2
    models = api.controlnet_model_list()
    assert {m.split(" [")[0] for m in models} == {DEPTH, LINES, IP_ADAPTER}
    assert {"none", "canny", "depth_anything_v2", "invert"} <= set(api.controlnet_module_list())
    detected = api.controlnet_detect(images=[disc((80, 48), "navy", "orange")], module="canny")
    assert detected.image.size == (80, 48)
    edges = np.asarray(detected.image.convert("L"))  # found at processor_res 512, scaled back
    assert set(np.unique(edges)) == {0, 255} and edges[24, 40] == 0 and edges[0, 0] == 0


def test_a_model_title_with_its_hash_is_found(library: Any, api: webuiapi.WebUIApi) -> None:
    assert library.hashes.wait_idle(30)
    title = next(m for m in api.controlnet_model_list() if m.startswith(DEPTH))
    assert title.endswith("]")
    result = txt2img(api, steps=1, controlnet_units=[unit(model=title)])
    assert f"Model: {title}" in result.info["infotexts"][0]


def controlnet(*units: dict[str, Any]) -> dict[str, Any]:
    return {"alwayson_scripts": {"controlnet": {"args": list(units)}}}


def raw(**fields: Any) -> dict[str, Any]:
    return {"enabled": True, "image": png_b64(disc()), "module": "none", "model": DEPTH, **fields}


@pytest.mark.parametrize(
    ("unit_fields", "words"),
    [
        ({"control_mode": "ControlNet is more important"}, "args[0].control_mode"),
        ({"module": "openpose_full"}, "the preprocessor 'openpose_full' needs a model"),
        ({"model": "None"}, "args[0].model: is required"),
        ({"weight": 3}, "args[0].weight: must be between 0 and 2"),
        ({"guidance_start": 0.8, "guidance_end": 0.2}, "args[0].guidance_end"),
        ({"image": {"image": png_b64(disc()), "mask": png_b64(disc())}}, "args[0].mask"),
        ({"image": png_b64(disc((32, 32))), "resize_mode": "Sideways"}, "args[0].resize_mode"),
    ],
)
def test_what_cannot_be_honoured_is_refused_naming_the_unit_field(
    server: LiveServer, unit_fields: dict[str, Any], words: str
) -> None:
    assert words in refused(server, "txt2img", prompt="x", **controlnet(raw(**unit_fields)))


def test_an_unknown_model_is_not_found(server: LiveServer) -> None:
    message = refused(server, "txt2img", 404, prompt="x", **controlnet(raw(model="tiny-dept")))
    assert "Did you mean 'tiny-depth'" in message


def test_txt2img_unit_without_image_is_refused(server: LiveServer) -> None:
    assert "args[0].image: is required for txt2img" in refused(
        server, "txt2img", prompt="x", **controlnet(raw(image=None))
    )


def test_a_small_image_is_fitted_like_the_extension_does(server: LiveServer) -> None:
    body = {**SMALL, "prompt": "x", **controlnet(raw(image=png_b64(disc((20, 30)))))}
    assert server.post("/sdapi/v1/txt2img", json=body).status_code == 200
