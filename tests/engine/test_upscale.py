"""The upscale task and the hi-res txt2img on the embedded model with the tiny ESRGAN
(modelkit.upscalers), through the engine as the API calls it: sizes, the recipe in
the PNG, seams, one progress stream, cancel between tiles, refused inputs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kd_server.generation import (
    Cancelled,
    EngineError,
    EngineErrorCode,
    Progress,
    Task,
    Upscaling,
)
from kd_server.upscale.models import TILE
from modelkit.upscalers import write_esrgan, write_malicious_pickle
from support.jobs import make_request


@pytest.fixture(scope="module")
def upscale_engine(tmp_path_factory, kd_device):
    """The embedded model, and tiny 4x and 2x ESRGANs where A1111 and ComfyUI keep them."""
    from kd_server.engine import Engine
    from kd_server.library import ModelLibrary

    root = tmp_path_factory.mktemp("models")
    write_esrgan(root / "models/ESRGAN/4x-tiny.safetensors")
    write_esrgan(root / "upscale_models/2x-tiny.pth", scale=2)
    write_malicious_pickle(root / "models/ESRGAN/evil.pth", root / "pwned")
    return Engine(ModelLibrary([root]), device=kd_device)


def gradient(width: int = 256, height: int = 256) -> Image.Image:
    """A smooth picture: a diagonal ramp in red, its mirror in green."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    ramp = 0.7 * x + 0.3 * y
    planes = [ramp, 255 - ramp, np.full_like(ramp, 128)]
    return Image.fromarray(np.stack(planes, axis=2).astype(np.uint8), "RGB")


def column_steps(image: Image.Image) -> np.ndarray:
    """Mean jump between neighbouring columns, per column border (rows averaged)."""
    values = np.asarray(image, dtype=np.float32).mean(axis=2)
    return np.abs(np.diff(values, axis=1)).mean(axis=0)


def upscale(upscaler: str | None, width: int, height: int, **fields) -> object:
    return make_request(
        task=Task.UPSCALE,
        prompt="a smooth gradient",
        steps=4,
        sampler="Euler",
        seed=7,
        image=fields.pop("image", gradient()),
        upscaling=Upscaling(width, height, upscaler=upscaler, **fields),
    )


def test_a_4x_upscale_through_the_tiny_esrgan(upscale_engine) -> None:
    """strength 0: the upscaler alone. The 256x256 picture comes back 1024x1024, close to
    its plain enlargement (the tiny model is a textured nearest-neighbour), with the
    upscale in its PNG recipe."""
    source = gradient()
    (result,) = upscale_engine.generate(upscale("4x-tiny", 1024, 1024, strength=0.0))
    assert result.image.size == (1024, 1024)
    plain = source.resize((1024, 1024), Image.Resampling.NEAREST)
    difference = np.abs(np.asarray(result.image, float) - np.asarray(plain, float)).mean()
    assert difference < 20, difference
    assert "Upscaled from: 256x256" in result.parameters
    assert "Upscale upscaler: 4x-tiny" in result.parameters
    assert "Upscale resize: 1024x1024" in result.parameters


def test_the_model_tiles_leave_no_seam_on_a_gradient(upscale_engine) -> None:
    """The 256x256 input runs as 2x2 overlapping tiles of 192 px (TILE); at the
    columns where a tile starts or ends in the output, the picture steps no more than
    it does anywhere else away from the picture's own edges."""
    assert TILE < 256  # so this really is tiled
    image = upscale_engine.upscale_image(gradient(), "4x-tiny", 1024, 1024)
    steps = column_steps(image)
    inner = steps[8:-8]
    borders = [64 * 4, 192 * 4]  # the second tile starts at 64, the first ends at 192
    for border in borders:
        assert steps[border - 2 : border + 2].max() <= np.percentile(inner, 99) + 0.1


def test_the_refine_tiles_leave_no_seam_on_a_gradient(upscale_engine) -> None:
    """256x256 refined in tiles of 128 overlapping by 32 (3x3 tiles, at 0, 64 and 128):
    where a tile starts or ends, the picture steps no more than it does elsewhere."""
    request = upscale(None, 256, 256, image=gradient(128, 128), strength=0.5, tile_size=128)
    (result,) = upscale_engine.generate(request)
    steps = column_steps(result.image)
    inner = steps[8:-8]
    for border in (64, 128, 192):
        assert steps[border - 1 : border + 1].max() <= np.percentile(inner, 99) + 0.5


def test_one_progress_stream_across_model_tiles_and_refine_tiles(upscale_engine) -> None:
    """256x256 through the 4x model (4 model tiles), brought to 320x320 and refined at
    strength 0.5 with 4 steps in tiles of 128 (3x3 tiles of 2 steps): 22 units, the
    step rising by one each time."""
    seen: list[Progress] = []
    (result,) = upscale_engine.generate(
        upscale("4x-tiny", 320, 320, strength=0.5, tile_size=128), on_progress=seen.append
    )
    assert result.image.size == (320, 320)
    assert [p.step for p in seen] == list(range(1, len(seen) + 1))
    assert {p.total for p in seen} == {len(seen)} == {4 + 9 * 2}


def test_a_cancel_between_model_tiles_stops_the_upscale(upscale_engine) -> None:
    seen: list[Progress] = []
    with pytest.raises(Cancelled):
        upscale_engine.generate(
            upscale("4x-tiny", 1024, 1024, strength=0.5),
            on_progress=seen.append,
            should_cancel=lambda: len(seen) >= 2,
        )
    assert [p.step for p in seen] == [1, 2]  # the third tile never ran


def test_a_cancel_between_refine_steps_stops_the_upscale(upscale_engine) -> None:
    seen: list[Progress] = []
    with pytest.raises(Cancelled):
        upscale_engine.generate(
            upscale(None, 512, 512, strength=0.5, tile_size=64),
            on_progress=seen.append,
            should_cancel=lambda: len(seen) >= 3,
        )
    assert [p.step for p in seen] == [1, 2, 3]


def test_a_2x_pickle_upscaler_and_a_size_that_is_not_its_factor(upscale_engine) -> None:
    source = gradient(100, 60)
    image = upscale_engine.upscale_image(source, "2x-tiny", 300, 180)
    assert image.size == (300, 180)


def test_hires_txt2img_makes_the_final_size_in_one_progress_stream(upscale_engine) -> None:
    seen: list[Progress] = []
    request = make_request(
        task=Task.TXT2IMG,
        prompt="a fox",
        steps=4,
        sampler="Euler",
        seed=3,
        batch_size=2,
        width=64,
        height=64,
        upscaling=Upscaling(160, 128, upscaler="2x-tiny", strength=0.5, tile_size=128),
    )
    results = upscale_engine.generate(request, on_progress=seen.append)
    assert [r.image.size for r in results] == [(160, 128), (160, 128)]
    assert [r.seed for r in results] == [3, 4]
    assert [p.step for p in seen] == list(range(1, len(seen) + 1))
    assert seen[-1].step == seen[-1].total
    # 4 first-pass steps, then per image 1 model tile and 2x1 refine tiles of 2 steps
    assert len(seen) == 4 + 2 * (1 + 2 * 2)
    assert "Hires resize: 160x128" in results[0].parameters
    assert "Hires upscaler: 2x-tiny" in results[0].parameters
    assert "Denoising strength: 0.5" in results[0].parameters


def test_hires_without_refine_is_the_first_pass_enlarged(upscale_engine) -> None:
    plain = make_request(task=Task.TXT2IMG, prompt="a fox", steps=3, seed=5, width=64, height=64)
    first = upscale_engine.generate(plain)[0].image
    plain.upscaling = Upscaling(128, 128, strength=0.0)
    hires = upscale_engine.generate(plain)[0].image
    assert hires.size == (128, 128)
    expected = first.resize((128, 128), Image.Resampling.LANCZOS)
    assert np.array_equal(np.asarray(hires), np.asarray(expected))


def test_a_malicious_upscaler_is_refused_before_it_runs(upscale_engine, tmp_path) -> None:
    with pytest.raises(EngineError) as refused:
        upscale_engine.check(upscale("evil", 512, 512))
    assert refused.value.code is EngineErrorCode.UPSCALER_UNUSABLE
    assert "more than tensors" in refused.value.message
    root = upscale_engine.library.folders[0]
    assert not (root / "pwned").exists()


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"upscaling": None}, "needs its target"),
        ({"batch_size": 2}, "batch_size must be 1"),
        ({"upscaling": Upscaling(9000, 512)}, "outside 1..8192"),
        ({"upscaling": Upscaling(512, 512, strength=0.1)}, "leaves no refine step"),
        ({"upscaling": Upscaling(512, 512, upscaler="nope")}, "no upscaler named 'nope'"),
    ],
)
def test_upscale_requests_that_cannot_run_are_refused(upscale_engine, change, words) -> None:
    request = upscale(None, 512, 512)
    for name, value in change.items():
        if name == "batch_size":
            request.sampling.batch_size = value
        else:
            setattr(request, name, value)
    with pytest.raises(EngineError) as refused:
        upscale_engine.check(request)
    assert words in refused.value.message


def half_transparent(width: int = 64, height: int = 64) -> Image.Image:
    """Left half opaque red, right half fully transparent over white (what a layer's
    erased pixels may hold): the white must never reach the picture."""
    pixels = np.zeros((height, width, 4), dtype=np.uint8)
    pixels[:, : width // 2] = (200, 40, 40, 255)
    pixels[:, width // 2 :] = (255, 255, 255, 0)
    return Image.fromarray(pixels, "RGBA")


@pytest.mark.parametrize("strength", [0.0, 0.3])
def test_an_rgba_upscale_keeps_its_transparency(upscale_engine, strength) -> None:
    """A half-transparent 64x64 picture upscaled 2x (Lanczos; with and without a refine
    in 4 tiles): the result is RGBA, opaque on the left and transparent on the right
    as the source was (alpha enlarged on its own)."""
    request = upscale(None, 128, 128, image=half_transparent(), strength=strength, tile_size=64)
    (result,) = upscale_engine.generate(request)
    assert result.image.mode == "RGBA" and result.image.size == (128, 128)
    alpha = np.asarray(result.image.getchannel("A"), dtype=np.float32)
    assert alpha[:, :60].min() >= 250 and alpha[:, 68:].max() <= 5
    assert 64 <= alpha[:, 62:66].mean() <= 192  # the border stays where it was


def test_transparent_pixels_are_filled_not_white(upscale_engine) -> None:
    """Without a refine the colours are the enlargement's. The transparent half is
    filled grey (FillMode.KEEP) as img2img fills it, not laid on white: under alpha 0
    the result holds grey, and the partly transparent border columns mix red with grey
    (green below 110 wherever alpha >= 32; on white it reaches 210)."""
    request = upscale(None, 128, 128, image=half_transparent(), strength=0.0)
    (result,) = upscale_engine.generate(request)
    pixels = np.asarray(result.image, dtype=np.float32)
    assert np.abs(pixels[:, :56, :3] - (200, 40, 40)).max() <= 2
    assert np.abs(pixels[:, 72:, :3] - 127).max() <= 2  # grey, not white, under alpha 0
    visible = pixels[..., 3] >= 32
    assert pixels[..., 1][visible].max() < 110, pixels[..., 1][visible].max()
