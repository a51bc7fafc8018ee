"""A client as strict as the ones issue 14 met: it sends A1111's full default bodies
(every field, fields of the other endpoint, fields of forks) and validates every
answer with strict types. Expected hashes are computed here with hashlib from A1111's
documented algorithms, never read from the server.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import re
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from a1111.names import EMBEDDED, SECOND
from PIL import Image
from pydantic import BaseModel, ConfigDict

from api.live import LiveServer, picture, png_b64, square_mask

TINY = {"width": 64, "height": 64, "steps": 2, "seed": 3}

#: POST /sdapi/v1/txt2img with every field at A1111 1.10's API default.
TXT2IMG_DEFAULTS: dict[str, Any] = {
    "prompt": "",
    "negative_prompt": "",
    "styles": None,
    "seed": -1,
    "subseed": -1,
    "subseed_strength": 0,
    "seed_resize_from_h": -1,
    "seed_resize_from_w": -1,
    "sampler_name": None,
    "scheduler": None,
    "batch_size": 1,
    "n_iter": 1,
    "steps": 50,
    "cfg_scale": 7.0,
    "width": 512,
    "height": 512,
    "restore_faces": None,
    "tiling": None,
    "do_not_save_samples": False,
    "do_not_save_grid": False,
    "eta": None,
    "denoising_strength": None,
    "s_min_uncond": None,
    "s_churn": None,
    "s_tmax": None,
    "s_tmin": None,
    "s_noise": None,
    "override_settings": None,
    "override_settings_restore_afterwards": True,
    "refiner_checkpoint": None,
    "refiner_switch_at": None,
    "disable_extra_networks": False,
    "firstpass_image": None,
    "comments": None,
    "enable_hr": False,
    "firstphase_width": 0,
    "firstphase_height": 0,
    "hr_scale": 2.0,
    "hr_upscaler": None,
    "hr_second_pass_steps": 0,
    "hr_resize_x": 0,
    "hr_resize_y": 0,
    "hr_checkpoint_name": None,
    "hr_sampler_name": None,
    "hr_scheduler": None,
    "hr_prompt": "",
    "hr_negative_prompt": "",
    "force_task_id": None,
    "sampler_index": "Euler",
    "script_name": None,
    "script_args": [],
    "send_images": True,
    "save_images": False,
    "alwayson_scripts": {},
    "infotext": None,
}

#: POST /sdapi/v1/img2img with every field at A1111 1.10's API default.
IMG2IMG_DEFAULTS: dict[str, Any] = {
    **{
        key: value
        for key, value in TXT2IMG_DEFAULTS.items()
        if not key.startswith(("hr_", "firstphase_")) and key != "enable_hr"
    },
    "init_images": None,
    "resize_mode": 0,
    "image_cfg_scale": None,
    "mask": None,
    "mask_blur_x": 4,
    "mask_blur_y": 4,
    "mask_blur": None,
    "mask_round": True,
    "inpainting_fill": 0,
    "inpaint_full_res": True,
    "inpaint_full_res_padding": 0,
    "inpainting_mask_invert": 0,
    "initial_noise_multiplier": None,
    "latent_mask": None,
    "include_init_images": False,
}

#: What a painting app's client sends to txt2img: one body for every endpoint, with
#: the UI's values filled in, img2img's fields included, and fields of Forge/SD.Next.
CLIENT_TXT2IMG: dict[str, Any] = {
    **TXT2IMG_DEFAULTS,
    "prompt": "a lighthouse <lora:bright:0.7>",
    "negative_prompt": "blurry",
    "styles": [],
    "sampler_name": "DPM++ 2M",
    "scheduler": "Karras",
    "restore_faces": False,
    "tiling": False,
    "eta": 0,
    "denoising_strength": 0.75,
    "s_min_uncond": 0,
    "s_churn": 0,
    "s_tmax": 0,
    "s_tmin": 0,
    "s_noise": 1,
    "override_settings": {"sd_vae": "Automatic", "CLIP_stop_at_last_layers": 1},
    "refiner_checkpoint": "",
    "refiner_switch_at": 0.8,
    "comments": {},
    "hr_upscaler": "Latent",
    "hr_checkpoint_name": "Use same checkpoint",
    "hr_sampler_name": "Use same sampler",
    "hr_scheduler": "Use same scheduler",
    "script_name": "",
    "infotext": "",
    # img2img's fields, which A1111 ignores on txt2img:
    "init_images": [],
    "resize_mode": 0,
    "mask_blur": 4,
    "inpainting_fill": 1,
    "inpaint_full_res": False,
    "inpaint_full_res_padding": 32,
    "image_cfg_scale": 1.5,
    "include_init_images": False,
    # Forge's and SD.Next's:
    "distilled_cfg_scale": 3.5,
    "hr_distilled_cfg": 3.5,
    "hr_additional_modules": ["Use same choices"],
    "vae_type": "Full",
}


# -------------------------------------------------------------- the strict client


class StrictInfo(BaseModel):
    """`info` as a strict client reads it: A1111's types, no coercion."""

    model_config = ConfigDict(strict=True, extra="forbid")

    prompt: str
    all_prompts: list[str]
    negative_prompt: str
    all_negative_prompts: list[str]
    seed: int
    all_seeds: list[int]
    subseed: int
    all_subseeds: list[int]
    subseed_strength: int | float
    width: int
    height: int
    sampler_name: str
    scheduler: str
    cfg_scale: int | float
    steps: int
    batch_size: int
    n_iter: int
    restore_faces: bool
    face_restoration_model: str | None
    sd_model_name: str
    sd_model_hash: str
    sd_vae_name: str | None
    sd_vae_hash: str | None
    seed_resize_from_w: int
    seed_resize_from_h: int
    denoising_strength: int | float | None
    extra_generation_params: dict[str, str | int | float]
    index_of_first_image: int
    infotexts: list[str]
    styles: list[str]
    job_timestamp: str
    clip_skip: int
    is_using_inpainting_conditioning: bool
    version: str


class StrictImageResponse(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    images: list[str]
    parameters: dict[str, Any]
    info: str


#: A1111's infotext pair: `key: value` or `key: "quoted, value"` (its own regex's shape).
PAIR = re.compile(r'\s*(\w[\w \-/+.()]*):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
HEX10 = re.compile(r"^[0-9a-f]{10}$")
LORA_HASHES = re.compile(r"^[^:,]+: [0-9a-f]{12}(, [^:,]+: [0-9a-f]{12})*$")


def read_infotext(text: str) -> tuple[str, str, dict[str, str]]:
    """(prompt, negative prompt, pairs), read the way A1111's parser does."""
    *lines, last = text.strip().split("\n")
    prompt: list[str] = []
    negative: list[str] = []
    for line in lines:
        if line.startswith("Negative prompt:") or negative:
            negative.append(line.removeprefix("Negative prompt:").strip())
        else:
            prompt.append(line)
    pairs: dict[str, str] = {}
    for key, value in PAIR.findall(last):
        value = value.strip()
        if value.startswith('"'):
            value = value[1:-1].replace('\\"', '"')
        pairs[key.strip()] = value
    return "\n".join(prompt), "\n".join(negative), pairs


def check_infotext(text: str, server: LiveServer) -> dict[str, str]:
    """Every pair parses into the type A1111 writes; returns the pairs."""
    _, _, pairs = read_infotext(text)
    int(pairs["Steps"]), int(pairs["Seed"]), float(pairs["CFG scale"])
    assert re.fullmatch(r"\d+x\d+", pairs["Size"])
    samplers = {item["name"] for item in server.get("/sdapi/v1/samplers").json()}
    assert pairs["Sampler"] in samplers
    if "Schedule type" in pairs:
        labels = {item["label"] for item in server.get("/sdapi/v1/schedulers").json()}
        assert pairs["Schedule type"] in labels
    if "Model hash" in pairs:
        assert HEX10.match(pairs["Model hash"]), pairs["Model hash"]
    if "Lora hashes" in pairs:
        assert LORA_HASHES.match(pairs["Lora hashes"]), pairs["Lora hashes"]
    if "Denoising strength" in pairs:
        float(pairs["Denoising strength"])
    return pairs


def strict(server: LiveServer, response: Any) -> tuple[StrictImageResponse, StrictInfo]:
    """What the strict client does with every answer: validate, then read the PNGs."""
    assert response.status_code == 200, response.text
    answer = StrictImageResponse.model_validate_json(response.text)
    details = StrictInfo.model_validate_json(answer.info)
    assert len(details.infotexts) == len(answer.images)
    for image, text in zip(answer.images, details.infotexts, strict=True):
        with Image.open(io.BytesIO(base64.b64decode(image))) as png:
            assert png.info["parameters"] == text
        check_infotext(text, server)
    return answer, details


# ------------------------------------------------------------- expected hashes


def checkpoint_short_hash(path: Path) -> str:
    """A1111 1.x `sd_model_hash`/`Model hash`: sha256 of the whole file, 10 digits."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:10]


def legacy_model_hash(path: Path) -> str:
    """A1111's pre-1.0 hash (64 KiB at offset 1 MiB, 8 digits): not what 1.x sends."""
    with path.open("rb") as handle:
        handle.seek(0x100000)
        return hashlib.sha256(handle.read(0x10000)).hexdigest()[:8]


def lora_short_hash(path: Path) -> str:
    """A1111's LoRA hash: sha256 of what follows the safetensors header, 12 digits."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return hashlib.sha256(data[8 + length :]).hexdigest()[:12]


@pytest.fixture
def hashed(library: Any) -> Any:
    """The library once its background hashing is done."""
    assert library.hashes.wait_idle(timeout=60)
    return library


# ------------------------------------------------------------------------ tests


@pytest.mark.parametrize("spelling", ["Karras", "normal", "sgm_uniform", "Align Your Steps"])
def test_full_client_body_txt2img(
    server: LiveServer, hashed: Any, spelling: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 14 item 2: A1111's full body with img2img's and forks' fields passes."""
    body = {
        **CLIENT_TXT2IMG,
        **TINY,
        "scheduler": spelling,
        "override_settings": {**CLIENT_TXT2IMG["override_settings"], "sd_model_checkpoint": SECOND},
    }
    with caplog.at_level(logging.DEBUG, logger="kd_server.api.a1111.routes"):
        answer, details = strict(server, server.post("/sdapi/v1/txt2img", json=body))
    assert details.sd_model_hash == checkpoint_short_hash(hashed.get_checkpoint(SECOND).path)
    assert "inpainting_fill" not in answer.parameters  # only txt2img's fields are echoed
    logged = caplog.text
    assert "inpainting_fill" in logged and "belong to the other endpoint" in logged
    # distilled_cfg_scale is known: Flux's guidance, ignored on an SD checkpoint as in Forge
    assert "unknown: hr_distilled_cfg, vae_type" in logged


def test_full_default_bodies_img2img_and_inpaint(server: LiveServer, hashed: Any) -> None:
    base = {**IMG2IMG_DEFAULTS, **TINY, "init_images": [png_b64(picture())]}
    strict(server, server.post("/sdapi/v1/img2img", json={**base, "prompt": "a cup"}))
    inpaint = {**base, "mask": png_b64(square_mask()), "denoising_strength": 1.0}
    _, details = strict(server, server.post("/sdapi/v1/img2img", json=inpaint))
    assert "Inpaint area: Only masked" in details.infotexts[0]
    # txt2img's own fields on img2img are ignored too, as A1111 does.
    hires = {**base, "enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent"}
    strict(server, server.post("/sdapi/v1/img2img", json=hires))


def test_txt2img_full_default_body(server: LiveServer) -> None:
    strict(server, server.post("/sdapi/v1/txt2img", json={**TXT2IMG_DEFAULTS, **TINY}))


def test_txt2img_full_default_body_with_hires_fix(server: LiveServer) -> None:
    """A1111's defaults with enable_hr (hr_upscaler null: its default latent mode)."""
    body = {**TXT2IMG_DEFAULTS, **TINY, "enable_hr": True, "hr_scale": 1.5}
    answer, details = strict(server, server.post("/sdapi/v1/txt2img", json=body))
    assert (details.width, details.height) == (64, 64)
    assert details.denoising_strength == 0.75
    pairs = check_infotext(details.infotexts[0], server)
    assert pairs["Size"] == "64x64" and pairs["Hires upscale"] == "1.5"
    with Image.open(io.BytesIO(base64.b64decode(answer.images[0]))) as png:
        assert png.size == (96, 96)


def test_model_and_lora_hashes_are_a1111s(server: LiveServer, hashed: Any) -> None:
    """Issue 14 items 1 and 5: the hashes A1111 1.x writes, and the tag kept."""
    checkpoint = hashed.get_checkpoint(SECOND).path
    lora = hashed.get_lora("bright").path
    body = {
        **TINY,
        "prompt": "a cup <lora:bright:0.8>, red",
        "override_settings": {"sd_model_checkpoint": SECOND},
    }
    _, details = strict(server, server.post("/sdapi/v1/txt2img", json=body))
    short = checkpoint_short_hash(checkpoint)
    assert details.sd_model_hash == short != legacy_model_hash(checkpoint)[:10]
    prompt, _, pairs = read_infotext(details.infotexts[0])
    assert prompt == "a cup <lora:bright:0.8>, red"
    assert (pairs["Model hash"], pairs["Model"]) == (short, SECOND)
    assert pairs["Lora hashes"] == f"bright: {lora_short_hash(lora)}"
    assert details.extra_generation_params["Lora hashes"] == pairs["Lora hashes"]
    models = {item["title"]: item for item in server.get("/sdapi/v1/sd-models").json()}
    full = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert (models[SECOND]["hash"], models[SECOND]["sha256"]) == (short, full)
    assert models[EMBEDDED]["hash"] is None  # no file: null, as A1111 lists unhashed ones


def test_a_model_without_a_hash_still_gets_a_string(server: LiveServer) -> None:
    """The embedded model has no file: a labelled placeholder, never null; the
    infotext leaves "Model hash" out, as A1111 does when it has none."""
    _, details = strict(server, server.post("/sdapi/v1/txt2img", json={**TINY, "prompt": "x"}))
    assert details.sd_model_hash == "embedded"
    assert "Model hash" not in read_infotext(details.infotexts[0])[2]


def test_options_report_the_hash_and_take_themselves_back(server: LiveServer, hashed: Any) -> None:
    assert server.get("/sdapi/v1/options").json()["sd_checkpoint_hash"] is None  # embedded
    server.post("/sdapi/v1/options", json={"sd_model_checkpoint": SECOND})
    options = server.get("/sdapi/v1/options").json()
    full = hashlib.sha256(hashed.get_checkpoint(SECOND).path.read_bytes()).hexdigest()
    assert options["sd_checkpoint_hash"] == full
    # Scripts send everything back with one change; saving options cannot matter here.
    resent = {**options, "samples_save": False, "outdir_samples": "/tmp/x"}
    assert server.post("/sdapi/v1/options", json=resent).status_code == 200


def test_the_reply_after_an_interrupt_is_strictly_valid(server: LiveServer) -> None:
    box: dict[str, Any] = {}
    body = {**TXT2IMG_DEFAULTS, **TINY, "steps": 30, "n_iter": 3, "prompt": "slow"}
    worker = threading.Thread(
        target=lambda: box.update(response=server.post("/sdapi/v1/txt2img", json=body))
    )
    worker.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = server.get("/sdapi/v1/progress?skip_current_image=true").json()["state"]
        if state["sampling_step"] >= 1:
            break
        time.sleep(0.02)
    assert server.post("/sdapi/v1/interrupt").json() == {}
    worker.join(120)
    answer, details = strict(server, box["response"])
    assert len(answer.images) < 3 and isinstance(details.sd_model_hash, str)


def test_unknown_fields_are_logged_once_with_their_names(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    body = {**TINY, "prompt": "x", "send_images": False, "zz_fork_field": 1, "zz_other": "a"}
    with caplog.at_level(logging.DEBUG, logger="kd_server.api.a1111.routes"):
        for _ in range(2):
            assert server.post("/sdapi/v1/txt2img", json=body).status_code == 200
    records = [r for r in caplog.records if "zz_fork_field, zz_other" in r.getMessage()]
    assert [r.levelno for r in records] == [logging.WARNING, logging.DEBUG]
    assert "/sdapi/v1/txt2img: ignored fields that are unknown" in records[0].getMessage()


def test_fields_whose_loss_changes_the_picture_are_refused(server: LiveServer) -> None:
    units = [{"enabled": True, "module": "canny", "model": "control_canny"}]
    response = server.post("/sdapi/v1/txt2img", json={**TINY, "controlnet_units": units})
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert message.startswith("controlnet_units: this deprecated form is not available")
    assert "without telling" in message


# ------------------------------------------------------------- catalogue endpoints


class Upscaler(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", protected_namespaces=())
    name: str
    model_name: str | None
    model_path: str | None
    model_url: str | None
    scale: float | None


@pytest.mark.parametrize(
    "path",
    [
        "sd-vae",
        "sd-modules",
        "prompt-styles",
        "face-restorers",
        "realesrgan-models",
        "hypernetworks",
        "extensions",
        "script-info",
    ],
)
def test_lists_of_what_this_server_does_not_have_are_empty(server: LiveServer, path: str) -> None:
    response = server.get(f"/sdapi/v1/{path}")
    assert response.status_code == 200 and response.json() == []


def test_embeddings_scripts_memory_and_flags(server: LiveServer, server_factory: Any) -> None:
    assert server.get("/sdapi/v1/embeddings").json() == {"loaded": {}, "skipped": {}}
    assert server.get("/sdapi/v1/scripts").json() == {"txt2img": [], "img2img": []}
    memory = server.get("/sdapi/v1/memory").json()
    ram = memory["ram"]
    assert all(isinstance(ram[key], int) for key in ("free", "used", "total"))
    assert 0 < ram["used"] < ram["total"] and ram["free"] == ram["total"] - ram["used"]
    import torch

    if torch.cuda.is_available():
        assert memory["cuda"]["system"]["total"] > 0
    else:
        assert memory["cuda"] == {"error": "unavailable"}
    flags = server.get("/sdapi/v1/cmd-flags").json()
    assert flags["api"] is True and flags["port"] == server.settings.port
    secured = server_factory(token="secret-token-1")
    answer = secured.get("/sdapi/v1/cmd-flags", headers={"Authorization": "Bearer secret-token-1"})
    assert answer.status_code == 200 and "secret-token-1" not in answer.text
    assert answer.json()["api_auth"] is None


def test_checkpoint_override_by_hash_or_unknown(server: LiveServer, hashed: Any) -> None:
    """Issue 14 item 6. A1111 finds a checkpoint by its hash too (a title from another
    A1111 install, other folders, still names the same file). An unknown name: A1111
    1.6+ drops the override and paints with the loaded model, telling only its console;
    here it stays a 404, because a picture from another model than the one named is a
    change the user must know about (docs/a1111.md)."""
    short = checkpoint_short_hash(hashed.get_checkpoint(SECOND).path)
    for reference in (f"elsewhere/renamed.safetensors [{short}]", short):
        body = {**TINY, "prompt": "x", "override_settings": {"sd_model_checkpoint": reference}}
        _, details = strict(server, server.post("/sdapi/v1/txt2img", json=body))
        assert details.sd_model_name == SECOND and details.sd_model_hash == short
    unknown = {**TINY, "override_settings": {"sd_model_checkpoint": "tiny-sd15-typo"}}
    response = server.post("/sdapi/v1/txt2img", json=unknown)
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found" and f"Did you mean '{SECOND}'" in error["message"]


def test_png_info_ignores_and_logs_other_fields(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    body = {"image": png_b64(picture()), "zz_png_extra": True}
    with caplog.at_level(logging.WARNING, logger="kd_server.api.a1111.routes"):
        response = server.post("/sdapi/v1/png-info", json=body)
    assert response.status_code == 200 and response.json()["info"] == ""
    assert "/sdapi/v1/png-info: ignored fields that are unknown: zz_png_extra" in caplog.text
