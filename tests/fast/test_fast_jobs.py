"""Fast models through the real server: what `/v1/models` reports, jobs with
`sampling: "auto"` running the sampling each kind needs unless the body overrides it,
and previews decoded by the tiny VAE in the model folder."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from fast.conftest import FAST_CHECKPOINT, PREVIEW_COLOUR
from PIL import Image

from api.live import LiveServer, picture, png_b64, receive_until_done
from kd_server.pngmeta import read_parameters


def body(**fields: Any) -> dict[str, Any]:
    """A tiny job that leaves sampler, steps and cfg_scale to the server."""
    return {
        "task": "txt2img",
        "prompt": "a red apple",
        "width": 64,
        "height": 64,
        "seed": 7,
        **fields,
    }


def run(server: LiveServer, **fields: Any) -> tuple[dict[str, Any], dict[str, str], bytes]:
    """Submit, wait, download: the job's state, its PNG's parameters and the PNG."""
    response = server.post("/v1/jobs", json=body(**fields))
    assert response.status_code == 202, response.text
    state = server.wait(response.json()["job_id"])
    assert state["status"] == "finished", state
    png = server.get(state["images"][0]["url"]).content
    return state, details(png), png


def details(png: bytes) -> dict[str, str]:
    """The 'Steps: 4, Sampler: LCM, ...' line of a result's parameters, as a dict."""
    text = read_parameters(png)
    assert text is not None
    line = text.splitlines()[-1]
    return dict(part.split(": ", 1) for part in line.split(", "))


def pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_models_report_each_fast_kind_and_where_it_was_read(server: LiveServer) -> None:
    models = server.get("/v1/models").json()
    loras = {lora["name"]: lora["fast"] for lora in models["loras"]}
    assert loras["lcm-lora-sdv1-5"] == {
        "kind": "lcm",
        "sampler": "LCM",
        "steps": 4,
        "cfg_scale": 1.0,
        "found_in": "name",
    }
    hyper = loras["Hyper-SD15-8steps-CFG-lora"]
    assert (hyper["kind"], hyper["sampler"], hyper["steps"], hyper["cfg_scale"]) == (
        "hyper-sd",
        "DDIM SGM Uniform",
        8,
        5.0,
    )
    assert loras["turbo-details"]["sampler"] == "Euler a SGM Uniform"
    assert loras["lightning/pytorch_lora_weights"]["kind"] == "lightning"
    brush = loras["brush-strokes"]
    assert (brush["kind"], brush["steps"], brush["found_in"]) == ("lightning", 2, "ss_output_name")
    assert loras["ink"] is None
    checkpoints = {c["name"]: c["fast"] for c in models["checkpoints"]}
    assert checkpoints[FAST_CHECKPOINT]["kind"] == "lcm"
    assert checkpoints[FAST_CHECKPOINT]["found_in"] == "modelspec.title"
    assert checkpoints["tiny-sd15-embedded"] is None
    samplers = server.get("/v1/samplers").json()
    for fast in [*loras.values(), *checkpoints.values()]:
        assert fast is None or fast["sampler"] in samplers


def test_auto_runs_the_recommended_sampling_exactly(server: LiveServer) -> None:
    lcm = [{"name": "lcm-lora-sdv1-5", "weight": 1.0}]
    state, auto, auto_png = run(server, loras=lcm, sampling="auto")
    assert (auto["Sampler"], auto["Steps"], auto["CFG scale"]) == ("LCM", "4", "1")
    assert state["total"] == 4
    _, manual, manual_png = run(server, loras=lcm, sampler="LCM", steps=4, cfg_scale=1.0)
    assert manual == auto
    assert np.array_equal(pixels(auto_png), pixels(manual_png))


def test_without_auto_a_body_means_what_it_always_meant(server: LiveServer) -> None:
    _, old, _ = run(server, loras=[{"name": "lcm-lora-sdv1-5", "weight": 1.0}], steps=3)
    assert (old["Sampler"], old["Steps"], old["CFG scale"]) == ("DPM++ 2M Karras", "3", "7")


def test_fields_the_body_sets_override_auto(server: LiveServer) -> None:
    hyper = [{"name": "Hyper-SD15-8steps-CFG-lora", "weight": 0.8}]
    _, chosen, _ = run(server, loras=hyper, sampling="auto", steps=3, cfg_scale=2.5)
    assert (chosen["Sampler"], chosen["Steps"], chosen["CFG scale"]) == (
        "DDIM SGM Uniform",
        "3",
        "2.5",
    )
    _, sampler_only, _ = run(server, loras=hyper, sampling="auto", sampler="Euler")
    assert (sampler_only["Sampler"], sampler_only["Steps"]) == ("Euler", "8")


def test_auto_img2img_runs_the_models_step_count(server: LiveServer) -> None:
    two_step = [{"name": "brush-strokes", "weight": 1.0}]
    state, used, _ = run(
        server,
        task="img2img",
        image=png_b64(picture()),
        strength=0.5,
        loras=two_step,
        sampling="auto",
    )
    assert (used["Sampler"], used["Steps"], used["CFG scale"]) == ("Euler SGM Uniform", "4", "1")
    assert state["total"] == 2  # half of 4 steps: the 2 the LoRA was distilled for


def test_auto_reads_the_checkpoint_and_plain_models_keep_the_body(server: LiveServer) -> None:
    _, merged, _ = run(server, model=FAST_CHECKPOINT, sampling="auto")
    assert (merged["Sampler"], merged["Steps"]) == ("LCM", "4")
    _, plain, _ = run(server, loras=[{"name": "ink", "weight": 1.0}], sampling="auto", steps=2)
    assert (plain["Sampler"], plain["Steps"], plain["CFG scale"]) == ("DPM++ 2M Karras", "2", "7")


def test_a1111_names_run_the_same_as_auto(server: LiveServer) -> None:
    """An A1111 client asking for Euler a with the SGM Uniform schedule gets exactly
    the picture our auto sampling makes for a Turbo LoRA."""
    _, auto, auto_png = run(
        server, loras=[{"name": "turbo-details", "weight": 1.0}], sampling="auto"
    )
    a1111 = server.post(
        "/sdapi/v1/txt2img",
        json={
            "prompt": "a red apple <lora:turbo-details:1>",
            "sampler_name": "Euler a",
            "scheduler": "SGM Uniform",
            "steps": 4,
            "cfg_scale": 1,
            "seed": 7,
            "width": 64,
            "height": 64,
        },
    )
    assert a1111.status_code == 200, a1111.text
    a1111_png = base64.b64decode(a1111.json()["images"][0])
    assert auto["Sampler"] == "Euler a SGM Uniform"
    assert np.array_equal(pixels(auto_png), pixels(a1111_png))


def test_lcm_beyond_its_schedule_is_refused_clearly(server: LiveServer) -> None:
    response = server.post("/v1/jobs", json=body(sampler="LCM", steps=60))
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_input" and "at most 50 steps" in error["message"]


def test_sampling_takes_only_its_two_values(server: LiveServer) -> None:
    response = server.post("/v1/jobs", json=body(sampling="fast"))
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("sampling:")


def test_previews_come_from_the_tiny_vae(server: LiveServer) -> None:
    decoders = {d["name"]: d for d in server.get("/v1/models").json()["preview_decoders"]}
    assert decoders["taesd_decoder"] == {
        "name": "taesd_decoder",
        "family": "sd15",
        "usable": True,
        "reason": None,
    }
    assert not decoders["taesdxl_decoder"]["usable"]
    assert "never opens" in decoders["taesdxl_decoder"]["reason"]
    with server.events("previewer") as ws:
        job = body(steps=3, preview_every=1, client_id="previewer")
        events = receive_until_done(ws, server.post("/v1/jobs", json=job).json()["job_id"])
    types = [e["type"] for e in events]
    previews = [e for e in events if e["type"] == "preview"]
    assert previews and previews[-1]["step"] == 3
    assert types.index("result") > max(i for i, kind in enumerate(types) if kind == "preview")
    for preview in previews:
        with Image.open(io.BytesIO(base64.b64decode(preview["image"]))) as image:
            assert image.format == "JPEG" and image.size == (64, 64)
            colours = np.asarray(image.convert("RGB"), dtype=np.int16)
        assert np.abs(colours - np.array(PREVIEW_COLOUR)).max() <= 3  # JPEG of a flat colour
