"""Hand-made bad input: the cases a fuzzer rarely builds on its own.

Broken and hostile PNGs (corrupt, cut off, decompression bombs, zero-size), the PNG
flavours artists' tools do write (16-bit, palette, greyscale), masks of the wrong
size, bodies that are not UTF-8 or not JSON, very long prompts, NaN and infinity,
huge batches and step counts, and model/LoRA names that try to walk out of the
model folders. Each is refused at submit time with the uniform error body and a
message naming the field, or accepted and then run to the end.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from PIL import Image

from api.live import LiveServer, job
from hardening import pngs
from hardening.figures import record
from hardening.support import assert_error, error_problem, wait_job

_tried: list[str] = []


def img2img(image: str, **overrides: Any) -> dict[str, Any]:
    return job(task="img2img", image=image, strength=0.5, **overrides)


def inpaint(image: str, mask: str, **overrides: Any) -> dict[str, Any]:
    return job(task="inpaint", image=image, mask=mask, strength=0.5, **overrides)


GOOD = pngs.b64(pngs.encode(pngs.rgb()))
GOOD_MASK = pngs.b64(pngs.encode(pngs.mask()))
REAL = pngs.encode(pngs.rgb())

REFUSED_IMAGES = {
    "corrupt": pngs.SIGNATURE + b"\x00\x00\x00\rIHDR" + b"garbage" * 20,
    "truncated": REAL[: len(REAL) // 2],
    "signature only": pngs.SIGNATURE,
    "bomb 100000x100000": pngs.header_only_png(100_000, 100_000),
    "bomb 2**31-1 wide": pngs.header_only_png(2**31 - 1, 1),
    "bomb 16-bit 30000x30000": pngs.header_only_png(30_000, 30_000, depth=16),
    "zero width": pngs.header_only_png(0, 64),
    "zero size": pngs.header_only_png(0, 0),
    "too small 7x7": pngs.encode(pngs.rgb(7, 7)),
    "jpeg": b"\xff\xd8\xff\xe0" + b"\x00" * 64,
    "gif": b"GIF89a" + b"\x00" * 64,
    "empty": b"",
}


@pytest.mark.parametrize("name", sorted(REFUSED_IMAGES))
@pytest.mark.parametrize("field", ["image", "mask"])
def test_broken_images_are_refused_naming_the_field(token_server: LiveServer, name, field):
    data = pngs.b64(REFUSED_IMAGES[name])
    body = inpaint(GOOD, GOOD_MASK)
    body[field] = data
    message = assert_error(token_server.post("/v1/jobs", json=body), 422, "invalid_request")
    assert message.startswith(f"{field}: "), message
    _tried.append(f"{field}: {name}")


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("not base64", "this is not base64!"),
        ("bad padding", "iVBORw0KGgo"),
        ("data URL of a JPEG", "data:image/jpeg;base64,/9j/4AAQSkZJRg=="),
        ("whitespace only", "   \n  "),
    ],
)
def test_undecodable_text_is_refused(token_server: LiveServer, name, text):
    message = assert_error(token_server.post("/v1/jobs", json=img2img(text)), 422)
    assert message.startswith("image: "), message
    _tried.append(f"image text: {name}")


ACCEPTED_IMAGES = {
    "greyscale": pngs.encode(pngs.rgb().convert("L")),
    "greyscale+alpha": pngs.encode(pngs.rgb().convert("LA")),
    "palette": pngs.palette(),
    "palette+transparency": pngs.palette(transparent=True),
    "16-bit greyscale": pngs.grey16(),
    "16-bit RGB": pngs.rgb16(),
    "RGBA": pngs.encode(pngs.rgb().convert("RGBA")),
    "1-bit": pngs.encode(pngs.rgb().convert("1")),
    "8x8 minimum": pngs.encode(pngs.rgb(8, 8)),
    "odd 61x37": pngs.encode(pngs.rgb(61, 37)),
}


#: Run to the end (img2img works at the model's working size: slow on a CPU); the
#: others are decoded at submit time, so being accepted is the proof, and are cancelled.
RUN_TO_THE_END = {"16-bit RGB", "odd 61x37"}


def accept(live: LiveServer, body: dict[str, Any], run: bool) -> None:
    reply = live.post("/v1/jobs", json=body)
    assert reply.status_code == 202, reply.text
    job_id = reply.json()["job_id"]
    if not run:
        assert live.delete(f"/v1/jobs/{job_id}").status_code in (200, 202, 409)
        return
    state = wait_job(live.url, live.headers, job_id)
    assert state["status"] == "finished", state
    png = live.get(state["images"][0]["url"]).content
    size = Image.open(io.BytesIO(pngs.b64decode(body["image"]))).size
    assert Image.open(io.BytesIO(png)).size == size


@pytest.mark.parametrize("name", sorted(ACCEPTED_IMAGES))
def test_every_png_flavour_is_accepted(token_server: LiveServer, name):
    accept(token_server, img2img(pngs.b64(ACCEPTED_IMAGES[name])), name in RUN_TO_THE_END)
    _tried.append(f"accepted: {name}")


@pytest.mark.parametrize(
    ("name", "mask", "expected"),
    [
        ("wider", pngs.encode(pngs.mask(72, 64)), "same size"),
        ("taller", pngs.encode(pngs.mask(64, 72)), "same size"),
        ("16-bit", pngs.grey16(), "8-bit"),
        ("all black", pngs.encode(Image.new("L", (64, 64), 0)), "selects nothing"),
    ],
)
def test_unusable_masks_are_refused(token_server: LiveServer, name, mask, expected):
    reply = token_server.post("/v1/jobs", json=inpaint(GOOD, pngs.b64(mask)))
    message = assert_error(reply, 422)
    assert expected in message, message
    _tried.append(f"mask: {name}")


@pytest.mark.parametrize(
    "mask",
    [pngs.palette(), pngs.encode(pngs.rgb()), pngs.encode(pngs.mask().convert("LA"))],
    ids=["palette", "colour", "grey+alpha"],
)
def test_colour_and_palette_masks_are_accepted(token_server: LiveServer, mask):
    accept(token_server, inpaint(GOOD, pngs.b64(mask)), run=False)


# ------------------------------------------------------------------ bodies and numbers

RAW_BODIES = {
    "latin-1 bytes": ('{"task": "txt2img", "prompt": "caf\xe9"}'.encode("latin-1"), "json"),
    "invalid UTF-8": (b'{"task": "txt2img", "prompt": "\xff\xfe\xfd"}', "json"),
    "UTF-16": ('{"task": "txt2img"}'.encode("utf-16"), "json"),
    "binary": (bytes(range(256)), "json"),
    "empty": (b"", "json"),
    "truncated JSON": (b'{"task": "txt2img", "prompt": "a', "json"),
    "JSON array": (b'[{"task": "txt2img"}]', "json"),
    "JSON string": (b'"txt2img"', "json"),
    "JSON null": (b"null", "json"),
    "deeply nested": (
        b'{"task": "txt2img", "loras": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "json",
    ),
    "duplicate keys": (b'{"task": "txt2img", "task": "nonsense"}', "json"),
    "form": (b"task=txt2img&prompt=a", "application/x-www-form-urlencoded"),
    "no content type": (b'{"task": "txt2img"}', ""),
    "NaN token": (b'{"task": "txt2img", "cfg_scale": NaN}', "json"),
    "Infinity token": (b'{"task": "txt2img", "strength": Infinity}', "json"),
    "-Infinity weight": (
        b'{"task": "txt2img", "loras": [{"name": "x", "weight": -Infinity}]}',
        "json",
    ),
    "1e999 overflow": (b'{"task": "txt2img", "cfg_scale": 1e999}', "json"),
    "huge integer": (b'{"task": "txt2img", "seed": ' + b"9" * 5000 + b"}", "json"),
}


@pytest.mark.parametrize("name", sorted(RAW_BODIES))
def test_malformed_bodies_get_a_useful_422(token_server: LiveServer, name):
    data, kind = RAW_BODIES[name]
    content_type = "application/json" if kind == "json" else kind
    headers = {"Content-Type": content_type} if content_type else {}
    reply = token_server.post("/v1/jobs", data=data, headers=headers)
    message = assert_error(reply, 422)
    assert ":" in message, message  # "field: rule", e.g. "body: ..." or "cfg_scale: ..."
    _tried.append(f"body: {name}")


FIELD_RULES = {
    "prompt 4001 chars": ({"prompt": "a" * 4001}, "prompt"),
    "prompt 1 MB": ({"prompt": "word " * 200_000}, "prompt"),
    "negative 10000 chars": ({"negative_prompt": "b" * 10_000}, "negative_prompt"),
    "batch 1000": ({"batch_size": 1000}, "batch_size"),
    "batch 0": ({"batch_size": 0}, "batch_size"),
    "steps 10**9": ({"steps": 10**9}, "steps"),
    "steps 0": ({"steps": 0}, "steps"),
    "steps 2.5": ({"steps": 2.5}, "steps"),
    "steps text": ({"steps": "many"}, "steps"),
    "width 10**6": ({"width": 10**6}, "width"),
    "width 65": ({"width": 65}, "width"),
    "height -64": ({"height": -64}, "height"),
    "cfg 1e308": ({"cfg_scale": 1e308}, "cfg_scale"),
    "seed 2**64": ({"seed": 2**64}, "seed"),
    "seed -2": ({"seed": -2}, "seed"),
    "strength 1.0001": ({"strength": 1.0001}, "strength"),
    "100 LoRAs": ({"loras": [{"name": "x"}] * 100}, "loras"),
    "LoRA weight 1e9": ({"loras": [{"name": "x", "weight": 1e9}]}, "loras[0].weight"),
    "unknown field": ({"colour": "red"}, "colour"),
    "task unknown": ({"task": "outpaint"}, "task"),
    "client_id with slash": ({"client_id": "../../etc"}, "client_id"),
    "client_id 129 chars": ({"client_id": "c" * 129}, "client_id"),
    "sampler 10000 chars": ({"sampler": "s" * 10_000}, "sampler"),
    "model 10000 chars": ({"model": "m" * 10_000}, "model"),
    "image on txt2img": ({"image": GOOD}, "image"),
    "pixel budget": ({"width": 2048, "height": 2048}, "width"),
}


@pytest.mark.parametrize("name", sorted(FIELD_RULES))
def test_out_of_range_fields_are_named(token_server: LiveServer, name):
    overrides, field = FIELD_RULES[name]
    message = assert_error(token_server.post("/v1/jobs", json=job(**overrides)), 422)
    assert field in message, message
    _tried.append(f"field: {name}")


HOSTILE_NAMES = [
    "../../../../etc/passwd",
    "..",
    "../tiny-sd15-embedded",
    "tiny-sd15-embedded/../../x",
    "/etc/passwd",
    "C:\\Windows\\win.ini",
    "..\\..\\boot.ini",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "..%252f..%252fetc",
    "file:///etc/passwd",
    "http://127.0.0.1:1/model",
    "~/.ssh/id_rsa",
    "a\u0000b",
    "\u202etxt.exe",
    " ",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_model_names_that_leave_the_library_are_not_found(token_server: LiveServer, name):
    message = assert_error(token_server.post("/v1/jobs", json=job(model=name)), 404)
    assert "root:" not in message
    _tried.append(f"model name: {name!r}")


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_lora_names_that_leave_the_library_are_not_found(token_server: LiveServer, name):
    body = job(loras=[{"name": name, "weight": 0.5}])
    assert_error(token_server.post("/v1/jobs", json=body), 404, "lora_not_found")
    _tried.append(f"LoRA name: {name!r}")


@pytest.mark.parametrize("field", ["model", "sampler", "lora"])
@pytest.mark.parametrize("name", ["\ud800", "\udfff x", "a\u0000b"])
def test_names_that_are_not_text_are_refused(token_server: LiveServer, field, name):
    body = job(loras=[{"name": name}]) if field == "lora" else job(**{field: name})
    reply = token_server.post("/v1/jobs", json=body)
    assert reply.status_code in (404, 422), reply.text
    assert error_problem(reply) is None, reply.text
    _tried.append(f"{field} name: {name!r}")


def test_unknown_sampler_model_and_lora_are_explained(token_server: LiveServer):
    sampler = assert_error(
        token_server.post("/v1/jobs", json=job(sampler="Euler z")), 422, "sampler_not_found"
    )
    model = assert_error(
        token_server.post("/v1/jobs", json=job(model="ghost")), 404, "model_not_found"
    )
    lora = assert_error(
        token_server.post("/v1/jobs", json=job(loras=[{"name": "ghost"}])), 404, "lora_not_found"
    )
    assert "Euler z" in sampler and "ghost" in model and "ghost" in lora


@pytest.mark.parametrize(
    "prompt",
    ["\ud800 lone surrogate", "nul \u0000 inside", "\u202e\u0661\u0662 mixed ŔŤĹ", "😀" * 500],
    ids=["lone surrogate", "NUL", "bidi", "emoji"],
)
def test_odd_unicode_prompts_run_or_are_refused_cleanly(token_server: LiveServer, prompt):
    raw = json.dumps(job(prompt=prompt, steps=1, preview_every=0))  # keeps \ud800 escaped
    reply = token_server.post(
        "/v1/jobs", data=raw.encode("ascii"), headers={"Content-Type": "application/json"}
    )
    if reply.status_code == 422:
        assert error_problem(reply) is None
        return
    assert reply.status_code == 202, reply.text
    state = wait_job(token_server.url, token_server.headers, reply.json()["job_id"])
    assert state["status"] == "finished", state


@pytest.mark.parametrize(
    "path",
    [
        "/v1/jobs/" + "f" * 65,
        "/v1/jobs/..%2F..%2Fetc%2Fpasswd",
        "/v1/jobs/%00",
        "/v1/jobs/x/images/-1",
        "/v1/jobs/x/images/64",
        "/v1/jobs/x/images/1e3",
        "/v1/jobs/x/images/" + "9" * 400,
        "/v1/../../etc/passwd",
        "/v1/jobs/%2e%2e/images/0",
    ],
)
def test_odd_paths_get_the_error_body(token_server: LiveServer, path):
    reply = token_server.get(path)
    assert 400 <= reply.status_code < 500, reply.text
    assert error_problem(reply) is None, reply.text


def test_bodies_over_the_limit_are_refused_before_being_read(server_factory):
    live = server_factory(max_body_bytes=1000)
    body = json.dumps(job(prompt="p" * 5000)).encode()
    assert_error(
        live.post("/v1/jobs", data=body, headers={"Content-Type": "application/json"}), 413
    )

    def chunks():  # no Content-Length: counted as it streams
        yield body[:500]
        yield body[500:]

    chunked = live.post("/v1/jobs", data=chunks(), headers={"Content-Type": "application/json"})
    assert_error(chunked, 413, "payload_too_large")


def test_zz_record_figures():
    record("bad_input_cases", len(_tried))
