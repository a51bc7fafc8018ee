"""Raw requests (requests) for each A1111 field: what it does here, or the 4xx naming it."""

from __future__ import annotations

import base64
import io
import json
import time
from typing import Any

import numpy as np
import pytest
from a1111.names import EMBEDDED, SECOND
from PIL import Image

from api.live import LiveServer, picture, png_b64, square_mask
from kd_server.api.a1111 import infotext

SMALL = {"width": 64, "height": 64, "steps": 2, "sampler_name": "Euler", "seed": 11}


def txt2img(server: LiveServer, **fields: Any) -> dict[str, Any]:
    response = server.post("/sdapi/v1/txt2img", json={"prompt": "a cup", **SMALL, **fields})
    assert response.status_code == 200, response.text
    return dict(response.json())


def img2img(server: LiveServer, **fields: Any) -> dict[str, Any]:
    body = {"prompt": "a cup", "init_images": [png_b64(picture())], **SMALL, **fields}
    response = server.post("/sdapi/v1/img2img", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def refused(server: LiveServer, path: str, status: int = 422, **body: Any) -> str:
    """The error message; the body is small, so a wrongly accepted one is cheap."""
    response = server.post(f"/sdapi/v1/{path}", json={**SMALL, **body})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message"}
    return str(error["message"])


def info(result: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(result["info"]))


def decoded(result: dict[str, Any], index: int = 0) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(result["images"][index]))) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


# ------------------------------------------------------------------ response shape


def test_response_shape_and_info_fields(server: LiveServer) -> None:
    result = txt2img(server, negative_prompt="fog", batch_size=2, n_iter=2)
    assert set(result) == {"images", "parameters", "info"}
    assert len(result["images"]) == 4
    details = info(result)
    for key in ("seed", "all_seeds", "infotexts", "prompt", "negative_prompt", "sampler_name"):
        assert key in details
    assert details["all_seeds"] == [11, 12, 13, 14]
    assert (details["steps"], details["cfg_scale"], details["width"]) == (2, 7.0, 64)
    assert details["negative_prompt"] == "fog" and len(details["infotexts"]) == 4
    assert result["parameters"]["n_iter"] == 2 and result["parameters"]["steps"] == 2


def test_random_seed_is_reported(server: LiveServer) -> None:
    details = info(txt2img(server, seed=-1, batch_size=2))
    first = details["seed"]
    assert first >= 0 and details["all_seeds"] == [first, first + 1]
    assert f"Seed: {first}" in details["infotexts"][0]


def test_send_images_false(server: LiveServer) -> None:
    result = txt2img(server, send_images=False)
    assert result["images"] == [] and len(info(result)["infotexts"]) == 1


def test_defaults_of_a1111_are_used(server: LiveServer) -> None:
    """Only a prompt: A1111's defaults (512x512, 50 steps, Euler) are echoed."""
    response = server.post(
        "/sdapi/v1/txt2img",
        json={"prompt": "x", "send_images": False, "width": 64, "height": 64, "steps": 1},
    )
    parameters = response.json()["parameters"]
    assert parameters["sampler_index"] == "Euler" and parameters["cfg_scale"] == 7.0
    assert info(response.json())["sampler_name"] == "Euler"


# ---------------------------------------------------------------- samplers, LoRAs


@pytest.mark.parametrize(
    ("fields", "sampler", "schedule"),
    [
        ({"sampler_name": "DPM++ 2M Karras"}, "DPM++ 2M", "Karras"),
        ({"sampler_name": "DPM++ 2M", "scheduler": "karras"}, "DPM++ 2M", "Karras"),
        ({"sampler_name": "DPM++ 2M", "scheduler": "Automatic"}, "DPM++ 2M", "Automatic"),
        ({"sampler_name": None, "sampler_index": "Euler a"}, "Euler a", "Automatic"),
        ({"sampler_name": "k_euler_a"}, "Euler a", "Automatic"),
        ({"sampler_name": "Euler", "scheduler": "normal"}, "Euler", "Normal"),
        ({"sampler_name": "Euler", "scheduler": "SGM Uniform"}, "Euler", "SGM Uniform"),
        ({"sampler_name": "Euler", "scheduler": "sgm_uniform"}, "Euler", "SGM Uniform"),
        ({"sampler_name": "Euler", "scheduler": "SGMUniform"}, "Euler", "SGM Uniform"),
        ({"sampler_name": "Euler", "scheduler": "kl_optimal"}, "Euler", "KL Optimal"),
        ({"sampler_name": "Euler", "scheduler": "Align Your Steps"}, "Euler", "Align Your Steps"),
        ({"sampler_name": "Euler", "scheduler": "BETA"}, "Euler", "Beta"),
        (
            {"sampler_name": "DPM++ 2M SDE", "scheduler": "exponential"},
            "DPM++ 2M SDE",
            "Exponential",
        ),
        ({"sampler_name": "UniPC", "scheduler": "polyexponential"}, "UniPC", "Polyexponential"),
        ({"sampler_name": "DDIM", "scheduler": "ddim"}, "DDIM", "DDIM"),
        ({"sampler_name": "Euler a", "scheduler": "Simple"}, "Euler a", "Simple"),
        ({"sampler_name": "Euler", "scheduler": "uniform"}, "Euler", "Uniform"),
    ],
)
def test_sampler_and_schedule_spellings(
    server: LiveServer, fields: dict[str, Any], sampler: str, schedule: str
) -> None:
    """A1111 1.10 writes the sampler and the schedule type apart, in info and infotext."""
    details = info(txt2img(server, steps=2, send_images=False, **fields))
    assert (details["sampler_name"], details["scheduler"]) == (sampler, schedule)
    text = details["infotexts"][0]
    assert f"Sampler: {sampler}," in text
    if schedule == "Automatic":
        assert "Schedule type" not in text
    else:
        assert f", Schedule type: {schedule}, CFG scale:" in text
    assert "Schedule note" not in text


def test_a_schedule_the_sampler_cannot_run_is_replaced_with_a_note(server: LiveServer) -> None:
    result = txt2img(server, steps=2, sampler_name="DPM++ 2M", scheduler="align_your_steps", seed=5)
    details = info(result)
    note = "Align Your Steps is not available with DPM++ 2M here; Karras was used"
    assert details["scheduler"] == "Karras"
    assert details["extra_generation_params"]["Schedule note"] == note
    assert "Schedule type: Karras, CFG scale: 7, " in details["infotexts"][0]
    assert infotext.parse(details["infotexts"][0])["Schedule note"] == note
    # What the note says is what ran: the same picture as asking for Karras.
    karras = txt2img(server, steps=2, sampler_name="DPM++ 2M", scheduler="karras", seed=5)
    assert np.array_equal(decoded(result), decoded(karras))


def test_unknown_sampler_and_scheduler_are_named(server: LiveServer) -> None:
    assert "sampler_name" in refused(server, "txt2img", prompt="x", sampler_name="Nope")
    message = refused(server, "txt2img", prompt="x", sampler_name="Euler", scheduler="nope")
    assert message.startswith("scheduler:")


def test_lora_tag_in_prompt(server: LiveServer) -> None:
    """The LoRA is applied, and the prompt is written as sent, tag included (A1111 does;
    some metadata readers find LoRAs only there)."""
    plain = txt2img(server, prompt="a cup")
    tagged = txt2img(server, prompt="a cup <lora:bright:0.8>", negative_prompt="fog")
    text = info(tagged)["infotexts"][0]
    assert text.startswith("a cup <lora:bright:0.8>\nNegative prompt: fog\n")
    assert "Lora weights" not in text  # the tag carries the weight, as in A1111
    assert info(tagged)["prompt"] == "a cup <lora:bright:0.8>"
    with Image.open(io.BytesIO(base64.b64decode(tagged["images"][0]))) as image:
        assert image.info["parameters"] == text
    assert np.abs(decoded(plain) - decoded(tagged)).mean() > 0.5
    ignored = txt2img(server, prompt="a cup <lora:bright:0.8>", disable_extra_networks=True)
    assert np.array_equal(decoded(plain), decoded(ignored))


def test_bad_network_tags_are_refused(server: LiveServer) -> None:
    response = server.post("/sdapi/v1/txt2img", json={"prompt": "<lora:missing:1>", **SMALL})
    assert response.status_code == 404 and "missing" in response.json()["error"]["message"]
    assert "hypernet" in refused(server, "txt2img", prompt="<hypernet:x:1>")
    assert "weight" in refused(server, "txt2img", prompt="<lora:bright:strong>")


# ----------------------------------------------------------------------- models


def test_override_settings_model(server: LiveServer) -> None:
    once = txt2img(
        server,
        steps=1,
        override_settings={"sd_model_checkpoint": f"{SECOND}.safetensors [0123abcd]"},
    )
    assert info(once)["sd_model_name"] == SECOND
    options = server.get("/sdapi/v1/options").json()
    assert options["sd_model_checkpoint"] == EMBEDDED  # restored afterwards
    kept = {"sd_model_checkpoint": SECOND}
    txt2img(
        server,
        steps=1,
        send_images=False,
        override_settings=kept,
        override_settings_restore_afterwards=False,
    )
    assert server.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == SECOND


def test_override_settings_other_keys(server: LiveServer) -> None:
    txt2img(server, steps=1, send_images=False, override_settings={"CLIP_stop_at_last_layers": 1})
    message = refused(  # 1..12 is honoured per request (tests/a1111/test_prompt_syntax.py)
        server, "txt2img", prompt="x", override_settings={"CLIP_stop_at_last_layers": 13}
    )
    assert "override_settings.CLIP_stop_at_last_layers" in message
    assert "override_settings.sd_vae_x" in refused(
        server, "txt2img", prompt="x", override_settings={"sd_vae_x": 1}
    )


def test_options_post(server: LiveServer) -> None:
    assert server.post("/sdapi/v1/options", json={"samples_format": "png"}).status_code == 200
    bad = server.post(
        "/sdapi/v1/options", json={"sd_model_checkpoint": SECOND, "samples_format": "jpg"}
    )
    assert bad.status_code == 422 and "options.samples_format" in bad.json()["error"]["message"]
    assert server.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == EMBEDDED  # unchanged
    missing = server.post("/sdapi/v1/options", json={"sd_model_checkpoint": "nope"})
    assert missing.status_code == 404


def test_sd_models_shape(server: LiveServer) -> None:
    models = server.get("/sdapi/v1/sd-models").json()
    assert {m["title"] for m in models} == {EMBEDDED, SECOND}
    assert set(models[0]) == {"title", "model_name", "hash", "sha256", "filename", "config"}


# ----------------------------------------------------------------------- images


def test_base64_with_and_without_data_uri(server: LiveServer) -> None:
    raw = png_b64(picture())
    plain = img2img(server, init_images=[raw], denoising_strength=0.5)
    prefixed = img2img(server, init_images=["data:image/png;base64," + raw], denoising_strength=0.5)
    assert np.array_equal(decoded(plain), decoded(prefixed))


def test_jpeg_init_image(server: LiveServer) -> None:
    buffer = io.BytesIO()
    picture().save(buffer, format="JPEG")
    result = img2img(
        server, init_images=[base64.b64encode(buffer.getvalue()).decode()], denoising_strength=0.5
    )
    assert decoded(result).shape == (64, 64, 3)


def test_bad_images_are_named(server: LiveServer) -> None:
    assert "init_images[0]" in refused(server, "img2img", init_images=["not base64!"])
    assert "init_images" in refused(server, "img2img", prompt="x")
    assert "init_images" in refused(server, "img2img", init_images=[png_b64(picture())] * 2)
    message = refused(server, "img2img", init_images=[png_b64(picture())], mask="AAAA")
    assert message.startswith("mask:")


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_resize_mode_gives_the_requested_size(server: LiveServer, mode: int) -> None:
    wide = png_b64(picture(96, 48))
    result = img2img(
        server, init_images=[wide], resize_mode=mode, width=64, height=72, denoising_strength=0.5
    )
    assert decoded(result).shape == (72, 64, 3)


def test_denoising_strength(server: LiveServer) -> None:
    gentle = img2img(server, denoising_strength=0.5)
    assert info(gentle)["denoising_strength"] == 0.5
    message = refused(
        server,
        "img2img",
        init_images=[png_b64(picture())],
        steps=1,
        denoising_strength=0.1,
        prompt="x",
    )
    assert "strength" in message


# ------------------------------------------------------------------------ masks


def _inpaint(server: LiveServer, **fields: Any) -> np.ndarray:
    body = {"mask": png_b64(square_mask()), "denoising_strength": 1.0, "mask_blur": 0, **fields}
    return decoded(img2img(server, **body))


def test_inpainting_mask_invert(server: LiveServer) -> None:
    original = np.asarray(picture(), dtype=np.int16)
    out = _inpaint(server, inpainting_mask_invert=1, inpaint_full_res=False)
    assert np.abs(out[28:36, 28:36] - original[28:36, 28:36]).max() == 0  # was white: kept
    assert np.abs(out[:8, :8] - original[:8, :8]).mean() > 1  # was black: repainted


def test_inpaint_full_res_crops_to_mask_and_padding(server: LiveServer) -> None:
    """Only masked: the region is the mask's box + padding (+ blur); the rest is kept."""
    original = np.asarray(picture(), dtype=np.int16)
    out = _inpaint(server, inpaint_full_res=True, inpaint_full_res_padding=4, mask_blur=2)
    assert np.abs(out[:8] - original[:8]).max() == 0  # far outside box + padding
    assert np.abs(out[24:40, 24:40] - original[24:40, 24:40]).mean() > 1
    whole = _inpaint(server, inpaint_full_res=False, mask_blur=2)
    assert not np.array_equal(out, whole)  # the model saw a different region


def test_mask_blur_feathers_the_edge(server: LiveServer) -> None:
    original = np.asarray(picture(), dtype=np.int16)
    sharp = _inpaint(server, inpaint_full_res=False, mask_blur=0)
    soft = _inpaint(server, inpaint_full_res=False, mask_blur=6)
    ring = (slice(12, 15), slice(20, 44))  # just outside the mask's top edge (y = 16)
    assert np.abs(sharp[ring] - original[ring]).max() == 0
    assert np.abs(soft[ring] - original[ring]).max() > 0
    result = img2img(server, mask=png_b64(square_mask()), mask_blur=6, denoising_strength=1.0)
    assert "Mask blur: 6" in info(result)["infotexts"][0]


def test_inpainting_fill_all_four_modes_at_any_strength(server: LiveServer) -> None:
    """0 fill (blur), 1 original (keep), 2 latent noise (noise), 3 latent nothing
    (grey): each runs below strength 1, and each starts the model from other pixels."""
    names = ("fill", "original", "latent noise", "latent nothing")
    results = []
    for fill, name in enumerate(names):
        result = img2img(
            server,
            mask=png_b64(square_mask()),
            inpainting_fill=fill,
            denoising_strength=0.5,
            inpaint_full_res=False,
        )
        assert f"Masked content: {name}" in info(result)["infotexts"][0]
        results.append(decoded(result))
    inside = (slice(24, 40), slice(24, 40))
    for a in range(4):
        for b in range(a + 1, 4):
            assert not np.array_equal(results[a][inside], results[b][inside]), (a, b)
    assert refused(server, "img2img", inpainting_fill=4).startswith("inpainting_fill")


def test_transparent_init_pixels_are_filled_not_white(server: LiveServer) -> None:
    """An RGBA init image whose masked half is transparent: the engine fills it
    (docs/fill.md) instead of starting from A1111's white background."""
    canvas = picture().convert("RGBA")
    canvas.paste((255, 255, 255, 0), (32, 0, 64, 64))
    white = picture()
    white.paste((255, 255, 255), (32, 0, 64, 64))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (32, 0, 64, 64))
    fields = {
        "mask": png_b64(mask),
        "inpainting_fill": 1,  # original: what is there (transparent pixels: grey)
        "denoising_strength": 0.5,
        "inpaint_full_res": False,
        "mask_blur": 0,
    }
    filled = decoded(img2img(server, init_images=[png_b64(canvas)], **fields))
    flat = decoded(img2img(server, init_images=[png_b64(white)], **fields))
    assert np.abs(filled[:, 40:] - flat[:, 40:]).mean() > 2
    assert np.array_equal(filled[:, :32], flat[:, :32])  # outside the mask: pasted back


def test_empty_mask_is_refused(server: LiveServer) -> None:
    empty = png_b64(Image.new("L", (64, 64), 0))
    message = refused(server, "img2img", init_images=[png_b64(picture())], mask=empty)
    assert message.startswith("mask:")


# ---------------------------------------------------------- refused and ignored


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"enable_hr": True, "hr_upscaler": "Nearest"}, "hr_upscaler"),
        ({"enable_hr": True, "hr_prompt": "something else"}, "hr_prompt"),
        ({"restore_faces": True}, "restore_faces"),
        ({"tiling": True}, "tiling"),
        ({"styles": ["cinematic"]}, "styles"),
        ({"subseed_strength": 0.5}, "subseed_strength"),
        ({"script_name": "x/y/z plot"}, "script_name"),
        (
            {"alwayson_scripts": {"ControlNet": {"args": [{"enabled": True}]}}},
            "alwayson_scripts.ControlNet",
        ),
        ({"s_churn": 0.5}, "s_churn"),
        ({"controlnet_units": [{"enabled": True, "module": "canny"}]}, "controlnet_units"),
        ({"clip_skip": 2}, "clip_skip"),
    ],
)
def test_unsupported_values_are_named(
    server: LiveServer, fields: dict[str, Any], named: str
) -> None:
    assert named in refused(server, "txt2img", prompt="x", **fields)


def test_harmless_fields_are_accepted(server: LiveServer) -> None:
    """What webuiapi and A1111 scripts send by default passes."""
    txt2img(
        server,
        steps=1,
        send_images=False,
        enable_hr=False,
        hr_scale=2,
        hr_upscaler="Latent",
        denoising_strength=0.7,
        styles=[],
        subseed=-1,
        eta=1.0,
        s_churn=0,
        s_noise=1,
        restore_faces=False,
        tiling=False,
        save_images=True,
        do_not_save_grid=True,
        alwayson_scripts={"ControlNet": {"args": []}},
        script_args=[],
        comments={"note": "x"},
    )


def test_unknown_endpoint(server: LiveServer) -> None:
    response = server.post("/sdapi/v1/interrogate", json={})
    assert response.status_code == 404
    assert "A1111-compatible" in response.json()["error"]["message"]
    wrong_method = server.get("/sdapi/v1/txt2img")
    assert wrong_method.status_code == 405 and wrong_method.headers["Allow"] == "POST"


# ----------------------------------------------------------- progress, png-info


def test_progress_idle_and_skip_current_image(server: LiveServer) -> None:
    progress = server.get("/sdapi/v1/progress", params={"skip_current_image": "true"}).json()
    assert set(progress) == {"progress", "eta_relative", "state", "current_image", "textinfo"}
    assert progress["progress"] == 0 and progress["current_image"] is None
    assert progress["state"]["job_count"] == 0
    assert server.post("/sdapi/v1/interrupt").json() == {}
    assert server.post("/sdapi/v1/skip").json() == {}


def test_png_info_without_parameters_and_bad_input(server: LiveServer) -> None:
    plain = server.post("/sdapi/v1/png-info", json={"image": png_b64(picture())}).json()
    assert plain == {"info": "", "items": {}, "parameters": {}}
    assert refused(server, "png-info", image="###").startswith("image:")


def test_refresh_loras(server: LiveServer) -> None:
    assert server.post("/sdapi/v1/refresh-loras").status_code == 200
    assert server.get("/sdapi/v1/loras").json()[0]["name"] == "bright"


# ------------------------------------------------------------------------ auth


def test_auth_bearer_basic_and_none(server_factory: Any) -> None:
    live = server_factory(token="tok")
    url = live.url + "/sdapi/v1/sd-models"
    import requests

    assert requests.get(url, timeout=30).status_code == 401
    assert requests.get(url, headers={"Authorization": "Bearer tok"}, timeout=30).status_code == 200
    assert requests.get(url, auth=("anyone", "tok"), timeout=30).status_code == 200
    wrong = requests.get(url, auth=("anyone", "bad"), timeout=30)
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthorized"
    assert "Basic" in wrong.headers["WWW-Authenticate"]


def test_a1111_requests_wait_in_the_shared_queue(server: LiveServer) -> None:
    """A v1 job runs; an A1111 request submitted after it waits its turn, then runs."""
    import threading

    v1_job = server.submit(steps=30)
    box: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: box.update(result=txt2img(server, steps=1)))
    worker.start()
    waiting: dict[str, Any] = {}
    while worker.is_alive() and not waiting:
        progress = server.get("/sdapi/v1/progress").json()
        if progress["state"]["job"] == "txt2img" and progress["textinfo"]:
            waiting = progress
        time.sleep(0.01)
    worker.join(120)
    assert waiting and waiting["state"]["sampling_step"] == 0
    assert "queue" in waiting["textinfo"]
    assert server.wait(v1_job)["status"] == "finished"
    assert len(box["result"]["images"]) == 1
