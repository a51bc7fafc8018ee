"""Through `webuiapi` (a real, unmodified A1111 client from PyPI) against the real server:
a script written for A1111 works with only the URL changed."""

from __future__ import annotations

import base64
import io
import threading
import time
from typing import Any

import numpy as np
import webuiapi
from a1111.names import EMBEDDED, SECOND
from PIL import Image

from api.live import picture, square_mask


def test_txt2img(api: webuiapi.WebUIApi) -> None:
    result = api.txt2img(prompt="a red apple", width=64, height=64, seed=7, batch_size=2)
    assert [image.size for image in result.images] == [(64, 64), (64, 64)]
    assert all(image.mode == "RGB" for image in result.images)
    assert result.info["all_seeds"] == [7, 8]
    assert result.info["sd_model_name"] == EMBEDDED
    assert "Seed: 8" in result.info["infotexts"][1]
    assert "Seed: 7" in result.images[0].info["parameters"]
    assert result.parameters["prompt"] == "a red apple"


def test_same_seed_same_picture(api: webuiapi.WebUIApi) -> None:
    first = api.txt2img(prompt="a boat", width=64, height=64, seed=3, steps=1).image
    again = api.txt2img(prompt="a boat", width=64, height=64, seed=3, steps=1).image
    assert np.array_equal(np.asarray(first), np.asarray(again))


def test_img2img(api: webuiapi.WebUIApi) -> None:
    source = picture(64, 64)
    result = api.img2img(
        images=[source], prompt="a boat", width=64, height=64, denoising_strength=0.5, seed=1
    )
    assert result.image.size == (64, 64)
    assert "Denoising strength: 0.5" in result.info["infotexts"][0]
    assert result.info["denoising_strength"] == 0.5


def test_inpainting_changes_only_the_masked_area(api: webuiapi.WebUIApi) -> None:
    source = picture(64, 64)
    mask = square_mask(64, 64)  # white square in the middle
    result = api.img2img(
        images=[source],
        mask_image=mask,
        prompt="a boat",
        width=64,
        height=64,
        denoising_strength=1.0,
        mask_blur=0,
        inpaint_full_res=False,
        seed=2,
    )
    out = np.asarray(result.image.convert("RGB"), dtype=np.int16)
    original = np.asarray(source, dtype=np.int16)
    assert result.image.size == (64, 64)
    assert np.abs(out[:8, :8] - original[:8, :8]).max() == 0  # outside: untouched
    assert np.abs(out[24:40, 24:40] - original[24:40, 24:40]).mean() > 1  # inside: new
    assert "Inpaint area: Whole picture" in result.info["infotexts"][0]


def test_progress_while_a_job_runs_then_interrupt(api: webuiapi.WebUIApi) -> None:
    """Poll progress from a second thread's view while txt2img waits, then interrupt it."""
    box: dict[str, Any] = {}

    def generate() -> None:
        box["result"] = api.txt2img(prompt="slow", width=64, height=64, steps=30, n_iter=3)

    worker = threading.Thread(target=generate)
    worker.start()
    seen: dict[str, Any] = {}
    while worker.is_alive():
        progress = api.get_progress()
        if progress["state"]["sampling_step"] >= 1 and progress["current_image"]:
            seen = progress
            break
        time.sleep(0.02)
    assert seen, "never saw the job running"
    assert seen["state"]["job"] == "txt2img" and seen["state"]["job_count"] == 3
    assert 0 < seen["progress"] < 1
    with Image.open(io.BytesIO(base64.b64decode(seen["current_image"]))) as preview:
        assert preview.format == "PNG"
    assert api.interrupt() == {}
    worker.join(120)
    assert not worker.is_alive()
    result = box["result"]
    assert len(result.images) < 3  # stopped before the three iterations were done
    assert api.get_progress()["state"]["job_count"] == 0


def test_skip_drops_the_current_iteration_only(api: webuiapi.WebUIApi) -> None:
    box: dict[str, Any] = {}

    def generate() -> None:
        box["result"] = api.txt2img(prompt="skip", width=64, height=64, steps=20, n_iter=2)

    worker = threading.Thread(target=generate)
    worker.start()
    while worker.is_alive():
        state = api.get_progress()["state"]
        if state["job_no"] == 0 and state["sampling_step"] >= 1:
            break
        time.sleep(0.02)
    api.skip()
    worker.join(120)
    images = box["result"].images
    assert 1 <= len(images) <= 2  # the skipped one is missing, the next one ran


def test_models_listing_and_switching(api: webuiapi.WebUIApi) -> None:
    titles = api.util_get_model_names()
    assert EMBEDDED in titles and SECOND in titles
    assert api.util_get_current_model() == EMBEDDED
    api.util_set_model(SECOND)
    assert api.util_get_current_model() == SECOND
    result = api.txt2img(prompt="a tree", width=64, height=64, seed=1, steps=1)
    assert result.info["sd_model_name"] == SECOND
    assert f"Model: {SECOND}" in result.info["infotexts"][0]


def test_lists(api: webuiapi.WebUIApi) -> None:
    assert "Euler a" in api.util_get_sampler_names()
    assert {"automatic", "karras"} <= set(api.util_get_scheduler_names())
    assert [lora["name"] for lora in api.get_loras()] == ["bright"]
    assert api.get_scripts() == {"txt2img": [], "img2img": []}


def test_png_info_reads_our_parameters(api: webuiapi.WebUIApi) -> None:
    image = api.txt2img(prompt="a cat", negative_prompt="blur", width=64, height=64, seed=9).image
    info = api.png_info(image)
    assert info.parameters["Prompt"] == "a cat"
    assert info.parameters["Negative prompt"] == "blur"
    assert info.parameters["Seed"] == "9"
    assert (info.parameters["Size-1"], info.parameters["Size-2"]) == ("64", "64")


def test_refresh_finds_a_new_checkpoint(api: webuiapi.WebUIApi, models_root: Any) -> None:
    folder = models_root / "models" / "Stable-diffusion"
    (folder / "copy.safetensors").write_bytes((folder / f"{SECOND}.safetensors").read_bytes())
    try:
        assert "copy" not in api.util_get_model_names()
        api.refresh_checkpoints()
        assert "copy" in api.util_get_model_names()
    finally:
        (folder / "copy.safetensors").unlink()
        api.refresh_checkpoints()


def test_basic_auth_as_api_auth(server_factory: Any) -> None:
    live = server_factory(token="s3cret")
    good = webuiapi.WebUIApi(baseurl=live.url + "/sdapi/v1", username="me", password="s3cret")
    assert EMBEDDED in good.util_get_model_names()
    bad = webuiapi.WebUIApi(baseurl=live.url + "/sdapi/v1", username="me", password="nope")
    try:
        bad.txt2img(prompt="x", width=64, height=64, steps=1)
    except RuntimeError as exc:
        assert exc.args[0] == 401
    else:
        raise AssertionError("a wrong password was accepted")
