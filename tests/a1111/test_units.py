"""The A1111 layer's pure helpers: resize modes, mask boxes, fill, infotext, prompt tags."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kd_server import fill
from kd_server.api.a1111 import images, infotext
from kd_server.api.a1111.translate import parse_networks
from kd_server.api.errors import ApiError
from kd_server.generation import FillMode, LoraSpec


def test_crop_and_resize_keeps_the_centre() -> None:
    wide = Image.new("RGB", (200, 100), (255, 0, 0))
    wide.paste((0, 0, 255), (80, 0, 120, 100))  # a blue band in the middle
    out = images.fit(wide, 50, 50, images.CROP_AND_RESIZE)
    assert out.size == (50, 50)
    assert out.getpixel((25, 25)) == (0, 0, 255) and out.getpixel((0, 25))[0] > 200


def test_resize_and_fill_stretches_the_edges() -> None:
    wide = Image.new("RGB", (100, 50), (0, 200, 0))
    out = images.fit(wide, 60, 60, images.RESIZE_AND_FILL)
    assert out.size == (60, 60)
    assert out.getpixel((30, 0)) == (0, 200, 0) and out.getpixel((30, 59)) == (0, 200, 0)


def test_mask_box_grows_clamps_and_has_a_minimum() -> None:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (30, 30, 32, 32))
    assert images.mask_box(mask, 0) == (27, 27, 35, 35)  # widened to 8x8
    assert images.mask_box(mask, 40) == (0, 0, 64, 64)
    assert images.mask_box(Image.new("L", (8, 8), 0), 4) is None


def test_fill_paints_the_hole_with_the_surroundings() -> None:
    """inpainting_fill 0 runs as the blur fill (kd_server.fill)."""
    image = Image.new("RGB", (32, 32), (10, 120, 200))
    image.paste((255, 255, 255), (8, 8, 24, 24))
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    filled = np.asarray(fill.apply(image, FillMode.BLUR, mask), dtype=np.int16)
    assert np.abs(filled[16, 16] - np.array([10, 120, 200])).max() <= 2
    assert tuple(filled[0, 0]) == (10, 120, 200)


def test_infotext_parse_and_amend() -> None:
    text = (
        "a cat\nNegative prompt: dog\n"
        'Steps: 2, Sampler: Euler, Seed: 4, Size: 32x40, Lora weights: "a: 1"'
    )
    parsed = infotext.parse(text)
    assert parsed["Prompt"] == "a cat" and parsed["Negative prompt"] == "dog"
    assert (parsed["Size-1"], parsed["Size-2"], parsed["Lora weights"]) == ("32", "40", "a: 1")
    amended = infotext.amend(text, (64, 64), (("Mask blur", "4"),))
    assert amended.endswith('Size: 64x64, Lora weights: "a: 1", Mask blur: 4')
    assert infotext.parse("") == {}


def test_lora_tags() -> None:
    prompt, loras = parse_networks("a <lora:x:0.5> cat, <lyco:y> <lora:z:0.3:0.3>", "prompt", True)
    assert prompt == "a cat" and loras == [LoraSpec("x", 0.5), LoraSpec("y"), LoraSpec("z", 0.3)]
    assert parse_networks("<lora:x:1> b", "prompt", False) == ("b", [])
    with pytest.raises(ApiError, match="separate text-encoder"):
        parse_networks("<lora:x:1:0.5>", "prompt", True)


@pytest.mark.parametrize(
    "raw", [b"RIFF\x10\x00\x00\x00WAVEfmt junk", b"\xff\xd8\xff\xe0 not really a jpeg"]
)
def test_undecodable_uploads_are_described_without_object_reprs(raw: bytes) -> None:
    import base64

    from kd_server.api.imaging import ImageInputError

    with pytest.raises(ImageInputError) as info:
        images.decode_image(base64.b64encode(raw).decode(), "init_images[0]", 1 << 24)
    message = str(info.value)
    assert message.startswith("init_images[0]: is not a readable")
    assert "0x" not in message and "BytesIO" not in message, message


def test_a_pending_hash_is_a_labelled_string_in_info_and_absent_from_the_infotext() -> None:
    """While the checkpoint is still being hashed (hashes.py, in the background)."""
    import json

    from kd_server.api.a1111.metadata import Facts, complete_info, rewrite
    from kd_server.hashes import PENDING, EntryHash
    from kd_server.samplers import Schedule

    facts = Facts(
        prompt="a <lora:x:0.5> cat",
        negative_prompt="dog, fog",
        sampler="DPM++ 2M",
        schedule=Schedule.KARRAS,
        schedule_note=None,
        model_hash=EntryHash(None, PENDING),
        lora_hashes=(),
    )
    engine_text = (
        "a cat\nNegative prompt: dog, fog\nSteps: 2, Sampler: DPM++ 2M Karras, CFG scale: 7, "
        'Seed: 1, Size: 64x64, Model: big, Lora weights: "x: 0.5"'
    )
    text = rewrite(engine_text, facts)
    assert text == (
        "a <lora:x:0.5> cat\nNegative prompt: dog, fog\nSteps: 2, Sampler: DPM++ 2M, "
        "Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 64x64, Model: big"
    )
    info = json.loads(complete_info(json.dumps({"sd_model_hash": None}), facts))
    assert info["sd_model_hash"] == "hash-pending"
    assert (info["sampler_name"], info["scheduler"]) == ("DPM++ 2M", "Karras")


@pytest.mark.parametrize("text", ["plain, text: 1", "ünïcødé 猫 <lora:x:1>\nNegative prompt: ñ"])
def test_the_png_text_is_replaced_without_touching_the_pixels(text: str) -> None:
    import io

    from kd_server.pngmeta import encode_png, replace_parameters

    picture = Image.effect_noise((48, 32), 40).convert("RGB")
    png = encode_png(picture, "old text")
    replaced = replace_parameters(png, text)
    with Image.open(io.BytesIO(replaced)) as image:
        assert image.info["parameters"] == text
        assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(picture))
    assert replaced.count(b"old text") == 0
    with pytest.raises(ValueError, match="not a PNG"):
        replace_parameters(b"GIF89a", text)
