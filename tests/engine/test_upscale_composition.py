"""The refine keeps the picture's composition: upscale + refine at a low strength,
tile by tile, leaves the low frequencies of the plain enlargement in place.

The embedded tiny model has random weights and loses any picture, so this runs on
`modelkit.structured`: the tiny SD 1.5 architecture with a VAE that averages and copies
pixels and a UNet that predicts zero noise, written as a single-file checkpoint and
loaded as users' files are. Its refine gives the picture plus the noise the strength
adds (8x8 blocks, a few levels): what matters here is what the server does around the
model (tiles, their seeds and places, the blend), and a refine that put a tile in the
wrong place, flipped it or mixed up colours would move the low frequencies.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kd_server.generation import Task, Upscaling
from modelkit.structured import write_structured_sd15
from support.jobs import make_request

MODEL = "structured-sd15"
#: The low-pass: both pictures shrunk to this many pixels a side (box average).
LOW = 16


@pytest.fixture(scope="module")
def structured_engine(tmp_path_factory, kd_device):
    from kd_server.engine import Engine
    from kd_server.library import ModelLibrary

    root = tmp_path_factory.mktemp("a1111")
    write_structured_sd15(root / "models" / "Stable-diffusion" / f"{MODEL}.safetensors")
    return Engine(ModelLibrary([root]), device=kd_device)


def quadrants(size: int = 128) -> Image.Image:
    """Four flat colours, one per quarter, and a grey disc across their meeting point."""
    half = size // 2
    pixels = np.zeros((size, size, 3), dtype=np.uint8)
    pixels[:half, :half] = (200, 40, 40)
    pixels[:half, half:] = (40, 190, 60)
    pixels[half:, :half] = (40, 60, 210)
    pixels[half:, half:] = (230, 220, 50)
    y, x = np.mgrid[:size, :size]
    disc = (x - size * 0.4) ** 2 + (y - size * 0.6) ** 2 < (size * 0.2) ** 2
    pixels[disc] = (128, 128, 128)
    return Image.fromarray(pixels, "RGB")


def low_pass(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB").resize((LOW, LOW), Image.Resampling.BOX), float)


def compare(first: Image.Image, second: Image.Image) -> tuple[float, float]:
    """(mean absolute difference in levels, correlation) of the two low-passed pictures."""
    a, b = low_pass(first).ravel(), low_pass(second).ravel()
    return float(np.abs(a - b).mean()), float(np.corrcoef(a, b)[0, 1])


def refined(engine, source: Image.Image, size: int, strength: float) -> Image.Image:
    request = make_request(
        task=Task.UPSCALE,
        model=MODEL,
        prompt="four coloured squares",
        steps=10,
        sampler="Euler",
        seed=5,
        image=source,
        upscaling=Upscaling(size, size, strength=strength, tile_size=128),
    )
    (result,) = engine.generate(request)
    return result.image


def test_the_refine_keeps_the_composition(structured_engine) -> None:
    """128x128 enlarged to 256x256 (Lanczos) and refined at strength 0.3 in 3x3 tiles
    of 128: at 16x16 the result is the enlargement to within a few levels. The same
    comparison against the picture with its quarters moved (a refine that put tiles in
    the wrong places) is far off, so the measure can fail."""
    source = quadrants()
    result = refined(structured_engine, source, 256, 0.3)
    plain = source.resize((256, 256), Image.Resampling.LANCZOS)
    changed = np.abs(np.asarray(result, float) - np.asarray(plain, float)).mean()
    assert changed > 1, changed  # the refine did run: the noise it adds shows
    difference, correlation = compare(result, plain)
    assert difference < 8 and correlation > 0.98, (difference, correlation)
    for wrong in (plain.transpose(Image.Transpose.ROTATE_180), shuffled(plain)):
        far, unlike = compare(result, wrong)
        assert far > 5 * difference and far > 40 and unlike < 0.5, (far, unlike)


def shuffled(image: Image.Image) -> Image.Image:
    """The picture's four quarters swapped left for right, each flipped upside down."""
    half = image.width // 2
    left = image.crop((0, 0, half, image.height)).transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    right = image.crop((half, 0, image.width, image.height))
    out = Image.new("RGB", image.size)
    out.paste(right.transpose(Image.Transpose.FLIP_TOP_BOTTOM), (0, 0))
    out.paste(left, (half, 0))
    return out
