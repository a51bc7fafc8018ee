"""Step previews are made on the engine's preview thread: the denoising goes on while
a preview is being made, previews arrive in step order with the last one always
there before `generate` returns, and a tiny VAE makes them when the artist has one."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from kd_server.engine import Engine
from kd_server.generation import Preview, Progress
from kd_server.library import ModelLibrary
from modelkit.taesd import write_taesd_decoder
from support.jobs import make_request

COLOUR = (200, 40, 90)


def txt2img(steps: int = 4, preview_every: int = 1):
    return make_request(
        prompt="a red fox", steps=steps, width=64, height=64, seed=3, preview_every=preview_every
    )


def test_denoising_goes_on_while_a_preview_is_being_made(embedded_engine: Engine) -> None:
    """The first preview waits until the last step has been reported: were previews
    made on the denoising thread, that step would never come."""
    last_step = threading.Event()
    threads: set[str] = set()
    previews: list[Preview] = []

    def on_progress(progress: Progress) -> None:
        if progress.step == progress.total:
            last_step.set()

    def on_preview(preview: Preview) -> None:
        threads.add(threading.current_thread().name)
        if not previews:
            assert last_step.wait(120), "the denoising waited for the preview"
        previews.append(preview)

    embedded_engine.generate(txt2img(steps=5), on_progress=on_progress, on_preview=on_preview)

    assert last_step.is_set()
    assert threading.current_thread().name not in threads
    steps = [p.step for p in previews]
    assert steps[-1] == 5 and steps == sorted(set(steps))
    assert len(steps) < 5  # previews that went stale while the first one waited: skipped


def test_a_failing_preview_consumer_does_not_fail_the_job(embedded_engine: Engine) -> None:
    def on_preview(preview: Preview) -> None:
        raise RuntimeError("a consumer bug")

    images = embedded_engine.generate(txt2img(), on_preview=on_preview)
    assert len(images) == 1


@pytest.fixture(scope="module")
def taesd_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    root = tmp_path_factory.mktemp("models")
    write_taesd_decoder(root / "vae_approx" / "taesd_decoder.safetensors", colour=COLOUR)
    return Engine(ModelLibrary([root]), device="cpu")


def test_the_tiny_vae_makes_previews_and_the_map_is_the_fallback(
    taesd_engine: Engine, embedded_engine: Engine
) -> None:
    decoded: list[Preview] = []
    taesd_engine.generate(txt2img(), on_preview=decoded.append)
    mapped: list[Preview] = []
    embedded_engine.generate(txt2img(), on_preview=mapped.append)

    assert decoded and mapped
    for preview in decoded:
        assert preview.image.size == (64, 64)  # the picture itself, at most 256 pixels
        assert np.all(np.asarray(preview.image) == np.array(COLOUR, dtype=np.uint8))
    assert np.asarray(mapped[-1].image).std() > 0  # the latent map: not one flat colour


def test_a_broken_decoder_falls_back_to_the_map(tmp_path: Path) -> None:
    path = write_taesd_decoder(tmp_path / "vae_approx" / "taesd_decoder.safetensors")
    engine = Engine(ModelLibrary([tmp_path]), device="cpu")
    path.write_bytes(path.read_bytes()[:-64])  # truncated after the scan: it cannot load
    previews: list[Preview] = []
    engine.generate(txt2img(steps=2), on_preview=previews.append)
    assert previews and previews[-1].image.size == (256, 256)
