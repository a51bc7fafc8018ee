"""Flux.1 (dev, schnell, Fill) and SD 3.5 (medium, large) through the real engine, on
tiny pipelines of the real classes saved as diffusers folders (support.flow_models):
every task per family, the distilled guidance, Flux LoRAs in three key layouts,
previews of 16-channel (and Flux's packed) latents, the PNG recipe and the refusals.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kd_server.families import Family
from kd_server.generation import (
    ControlInput,
    EngineError,
    EngineErrorCode,
    GenerationRequest,
    LoraSpec,
    Task,
    Upscaling,
)
from modelkit.embeddings import write_sd15_embedding
from modelkit.loras import write_test_lora
from support.flow_models import (
    FLOW_MODELS,
    LORA_LAYOUTS,
    write_flow_models,
    write_flux_lora,
    write_sd3_lora,
)
from support.jobs import make_request

FAMILY_OF = {
    "tiny-flux-dev": Family.FLUX_DEV,
    "tiny-flux-schnell": Family.FLUX_SCHNELL,
    "tiny-flux-fill": Family.FLUX_FILL,
    "tiny-sd35-medium": Family.SD35_MEDIUM,
    "tiny-sd35-large": Family.SD35_LARGE,
}
SIZE = (64, 48)  # not square: a packed latent unpacked the wrong way round shows
BOX = (16, 16, 48, 40)  # the inpaint selection


@pytest.fixture(scope="module")
def flow_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("flow-models")
    write_flow_models(root / "diffusers")
    for layout in LORA_LAYOUTS:
        write_flux_lora(root / "loras", f"flux-{layout}", layout, seed=3)
    write_test_lora(root / "loras", "sd15-lora", seed=4)
    write_sd3_lora(root / "loras", "sd3-lora", seed=5)
    write_sd15_embedding(root / "embeddings" / "grain.safetensors", 32, seed=4)
    return root


@pytest.fixture(scope="module")
def flow_engine(flow_root: Path, kd_device: str):
    from kd_server.engine import Engine
    from kd_server.library import ModelLibrary

    return Engine(ModelLibrary([flow_root]), device=kd_device, cache_size=len(FLOW_MODELS))


def picture(width: int = SIZE[0], height: int = SIZE[1]) -> Image.Image:
    ramp = Image.linear_gradient("L")
    bands = [ramp.resize((width, height)), ramp.rotate(90).resize((width, height))]
    return Image.merge("RGB", [*bands, ramp.rotate(45).resize((width, height))])


def selection() -> Image.Image:
    mask = Image.new("L", SIZE, 0)
    mask.paste(255, BOX)
    return mask


def request(model: str, task: Task = Task.TXT2IMG, **overrides) -> GenerationRequest:
    fields = {
        "task": task,
        "model": model,
        "prompt": "a (red:1.3) fox BREAK in snow",
        "negative_prompt": "blurry",
        "sampler": "Euler",
        "steps": 3,
        "seed": 11,
        "width": SIZE[0],
        "height": SIZE[1],
    }
    if task is not Task.TXT2IMG:
        fields.update(image=picture(), strength=0.8)
    if task is Task.INPAINT:
        fields.update(mask=selection())
    fields.update(overrides)
    return make_request(**fields)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def test_the_library_lists_each_family(flow_engine) -> None:
    for name, family in FAMILY_OF.items():
        assert flow_engine.check_model(name).family is family


@pytest.mark.parametrize("model", list(FLOW_MODELS))
def test_every_task_runs_and_inpaint_keeps_the_outside(flow_engine, model: str) -> None:
    made = flow_engine.generate(request(model))[0]
    assert made.image.size == SIZE and made.image.mode == "RGB"
    assert pixels(made.image).std() > 1  # a picture, not a flat colour

    source = pixels(picture())
    changed = flow_engine.generate(request(model, Task.IMG2IMG))[0].image
    assert changed.size == SIZE
    assert np.abs(pixels(changed) - source).mean() > 1

    painted = flow_engine.generate(request(model, Task.INPAINT))[0].image
    assert painted.size == SIZE and painted.mode == "RGBA"
    alpha = np.asarray(painted.getchannel("A"))
    outside = np.ones_like(alpha, dtype=bool)
    left, top, right, bottom = BOX
    outside[top:bottom, left:right] = False
    assert (alpha[outside] == 0).all()  # laid over the painting, nothing outside changes
    assert (alpha[top + 2 : bottom - 2, left + 2 : right - 2] == 255).all()
    inside = (slice(top + 2, bottom - 2), slice(left + 2, right - 2))
    assert np.abs(pixels(painted)[inside] - source[inside]).mean() > 1


def test_the_png_recipe_is_forges_for_flux_and_a1111s_for_sd35(flow_engine) -> None:
    flux = flow_engine.generate(request("tiny-flux-dev", guidance=2.5))[0].parameters
    assert "Negative prompt" not in flux  # Flux never read it
    assert "Sampler: Euler, CFG scale: 1, Distilled CFG Scale: 2.5, Seed: 11" in flux
    schnell = flow_engine.generate(request("tiny-flux-schnell"))[0].parameters
    assert "CFG scale: 1, Seed" in schnell and "Distilled" not in schnell
    sd35 = flow_engine.generate(request("tiny-sd35-medium", cfg_scale=4.5))[0].parameters
    assert "Negative prompt: blurry" in sd35 and "CFG scale: 4.5" in sd35
    # another sampler runs as the flow-match Euler, and the recipe says what ran
    other = flow_engine.generate(request("tiny-sd35-large", sampler="DPM++ 2M Karras"))[0]
    assert "Sampler: Euler," in other.parameters


def test_guidance_steers_flux_dev_and_cfg_does_not(flow_engine) -> None:
    low = pixels(flow_engine.generate(request("tiny-flux-dev", guidance=1.0))[0].image)
    high = pixels(flow_engine.generate(request("tiny-flux-dev", guidance=8.0))[0].image)
    assert np.abs(low - high).mean() > 0.5
    default = pixels(flow_engine.generate(request("tiny-flux-dev"))[0].image)
    same = pixels(flow_engine.generate(request("tiny-flux-dev", guidance=3.5))[0].image)
    assert np.array_equal(default, same)  # 3.5 is dev's default
    # CFG and the negative prompt are not Flux's: they change nothing
    plain = pixels(
        flow_engine.generate(request("tiny-flux-dev", cfg_scale=12, negative_prompt="x"))[0].image
    )
    assert np.array_equal(plain, default)


def test_sd35_reads_cfg_and_the_negative_prompt(flow_engine) -> None:
    base = pixels(flow_engine.generate(request("tiny-sd35-medium"))[0].image)
    cfg = pixels(flow_engine.generate(request("tiny-sd35-medium", cfg_scale=2.0))[0].image)
    negative = pixels(
        flow_engine.generate(request("tiny-sd35-medium", negative_prompt="a cat"))[0].image
    )
    assert np.abs(base - cfg).mean() > 0.5
    assert np.abs(base - negative).mean() > 0.5


@pytest.mark.parametrize(
    ("model", "overrides", "words"),
    [
        ("tiny-flux-schnell", {"guidance": 3.5}, "has no distilled guidance"),
        ("tiny-sd35-large", {"guidance": 3.5}, "use cfg_scale instead"),
        ("tiny-flux-dev", {"clip_skip": 2}, "Clip skip applies to SD 1.5 and SDXL only"),
        ("tiny-sd35-medium", {"clip_skip": 2}, "set it to 1"),
    ],
)
def test_what_a_family_cannot_do_is_refused(flow_engine, model, overrides, words) -> None:
    with pytest.raises(EngineError) as caught:
        flow_engine.check(request(model, **overrides))
    assert caught.value.code is EngineErrorCode.INVALID_INPUT
    assert words in caught.value.message


def test_embeddings_are_refused_on_flux_and_sd35(flow_engine) -> None:
    for prompt in ("a grain fox", "a fox, embedding:grain.safetensors"):
        with pytest.raises(EngineError, match="names the embedding 'grain'"):
            flow_engine.check(request("tiny-flux-dev", prompt=prompt))
    with pytest.raises(EngineError, match=r"SD 3\.5 medium cannot read them"):
        flow_engine.check(request("tiny-sd35-medium", negative_prompt="(grain:1.2)"))
    flow_engine.check(request("tiny-flux-dev", prompt="a fox, grainy"))  # another word
    flow_engine.check(request("tiny-flux-dev", negative_prompt="grain"))  # Flux: unread


def test_control_layers_and_references_are_refused(flow_engine) -> None:
    control = ControlInput(model="any-controlnet", image=picture())
    with pytest.raises(EngineError, match=r"ControlNets are not available for Flux\.1 dev"):
        flow_engine.check(request("tiny-flux-dev", control=[control]))


def test_flux_loras_load_in_every_key_layout(flow_engine) -> None:
    plain = pixels(flow_engine.generate(request("tiny-flux-dev"))[0].image)
    results = {}
    for layout in LORA_LAYOUTS:
        lora = [LoraSpec(f"flux-{layout}", 1.0)]
        results[layout] = pixels(
            flow_engine.generate(request("tiny-flux-dev", loras=lora))[0].image
        )
        assert np.abs(results[layout] - plain).mean() > 0.5, layout
    # the same LoRA in three spellings is the same picture
    assert np.abs(results["kohya"] - results["diffusers"]).max() <= 1
    assert np.abs(results["comfyui"] - results["diffusers"]).max() <= 1
    # switched off again for the next job
    again = pixels(flow_engine.generate(request("tiny-flux-dev"))[0].image)
    assert np.array_equal(again, plain)


def test_an_sd3_lora_changes_sd35(flow_engine) -> None:
    plain = pixels(flow_engine.generate(request("tiny-sd35-medium"))[0].image)
    lora = [LoraSpec("sd3-lora", 1.0)]
    changed = pixels(flow_engine.generate(request("tiny-sd35-medium", loras=lora))[0].image)
    assert np.abs(changed - plain).mean() > 0.5


def test_an_sd15_lora_on_flux_is_refused_not_ignored(flow_engine) -> None:
    with pytest.raises(EngineError) as caught:
        flow_engine.generate(request("tiny-flux-dev", loras=[LoraSpec("sd15-lora")]))
    assert caught.value.code is EngineErrorCode.LORA_UNUSABLE
    assert "does not fit the model 'tiny-flux-dev' (Flux.1 dev)" in caught.value.message


@pytest.mark.parametrize("model", ["tiny-flux-dev", "tiny-sd35-medium"])
def test_previews_have_the_pictures_shape(flow_engine, model: str) -> None:
    previews = []
    flow_engine.generate(request(model, preview_every=1), on_preview=previews.append)
    assert [p.step for p in previews] == [1, 2, 3]
    for preview in previews:
        assert preview.image.size == (256, 192)  # 64x48 scaled to the 256 preview side
        assert np.asarray(preview.image).std() > 0


def test_hires_and_upscale_refine_run_on_flux_and_sd35(flow_engine) -> None:
    hires = request("tiny-flux-dev", upscaling=Upscaling(width=96, height=72, strength=0.5))
    image = flow_engine.generate(hires)[0]
    assert image.image.size == (96, 72)
    assert "Hires upscale" in image.parameters
    upscale = request(
        "tiny-sd35-medium",
        Task.UPSCALE,
        upscaling=Upscaling(width=128, height=96, strength=0.4, tile_size=64),
    )
    enlarged = flow_engine.generate(upscale)[0].image
    assert enlarged.size == (128, 96)


def test_flow_families_run_the_flow_match_euler() -> None:
    from kd_server.samplers import build_scheduler, canonical_name, realized

    config = {"shift": 3.0, "use_dynamic_shifting": False, "num_train_timesteps": 1000}
    scheduler = build_scheduler("Euler", config, "Karras", family=Family.SD35_LARGE)
    assert type(scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert scheduler.config.shift == 3.0 and scheduler.config.use_karras_sigmas
    other = realized("DPM++ 2M", "Karras", Family.FLUX_DEV)
    assert other.name == "Euler"
    assert other.note == (
        "DPM++ 2M does not run Flux.1 dev (a flow-matching model); Euler was used"
    )
    assert canonical_name("Euler", "Simple", Family.FLUX_SCHNELL) == "Euler Simple"
    assert realized("Euler", "Simple", Family.FLUX_SCHNELL).note is None
    # the UNet families keep every sampler
    assert canonical_name("DPM++ 2M", "Karras", Family.SDXL) == "DPM++ 2M Karras"


def test_schnell_and_sd35_turbo_are_fast_modes() -> None:
    from kd_server.fast_modes import SCHNELL, family_fast_mode, mode_from_text

    assert family_fast_mode(Family.FLUX_SCHNELL, None) == SCHNELL
    assert (SCHNELL.sampler, SCHNELL.steps, SCHNELL.cfg_scale) == ("Euler", 4, 1.0)
    assert family_fast_mode(Family.FLUX_DEV, None) is None
    turbo = family_fast_mode(Family.SD35_LARGE, mode_from_text("sd3.5_large_turbo", "name"))
    assert turbo is not None and (turbo.sampler, turbo.steps, turbo.cfg_scale) == ("Euler", 4, 1.0)
    lightning = mode_from_text("sdxl_lightning_4step", "name")
    assert family_fast_mode(Family.SDXL, lightning) == lightning


def test_t5_reads_the_weights_as_forge_does() -> None:
    from kd_server.prompt_encoding import emphasize, weighted_t5
    from modelkit.flux_sd3 import build_tiny_flux

    pipe = build_tiny_flux("dev")
    tokenizer, encoder = pipe.tokenizer_2, pipe.text_encoder_2
    plain = weighted_t5(tokenizer, encoder, "a snowy (fox:1.0)", 16)  # weights 1: as is
    weighted = weighted_t5(tokenizer, encoder, "a snowy (fox:1.5)", 16)
    first = len(tokenizer("a snowy ", add_special_tokens=False)["input_ids"])
    second = len(tokenizer("fox", add_special_tokens=False)["input_ids"])
    weights = [1.0] * first + [1.5] * second + [1.0] * (16 - first - second)
    assert weighted.shape == plain.shape == (1, 16, encoder.config.d_model)
    assert (weighted - emphasize(plain, weights)).abs().max() < 1e-5


@pytest.mark.parametrize("model", ["tiny-flux-dev", "tiny-sd35-medium"])
def test_weights_change_flux_and_sd35_pictures(flow_engine, model: str) -> None:
    def made(prompt: str, batch: int = 1) -> list[np.ndarray]:
        job = request(model, prompt=prompt, batch_size=batch, negative_prompt="")
        return [pixels(image.image) for image in flow_engine.generate(job)]

    (plain,) = made("a red fox in snow")
    (neutral,) = made("a (red fox:1.0) in snow BREAK")  # no weight: the plain text
    (weighted,) = made("a (red fox:1.8) in snow")
    assert np.array_equal(plain, neutral)
    assert np.abs(weighted - plain).max() > 0
    batch = made("a (red fox:1.8) in snow", batch=2)
    assert len(batch) == 2  # one image per seed, the first the single one's (up to the
    assert np.abs(batch[0] - weighted).max() <= 2  # rounding of batched arithmetic)


def test_a_taef1_decoder_makes_the_flux_previews(flow_root: Path, tmp_path: Path) -> None:
    """A TAESD decoder for Flux (`taef1_decoder`, 16 channels) in ComfyUI's vae_approx
    decodes every Flux family's previews; here one that paints a flat colour."""
    import torch
    from safetensors.torch import save_file

    from kd_server.engine import Engine
    from kd_server.library import ModelLibrary
    from kd_server.taesd import build_decoder
    from modelkit.taesd import original_layout

    decoder = build_decoder(8, latent_channels=16)
    with torch.no_grad():
        decoder.layers[-1].weight.zero_()
        decoder.layers[-1].bias.copy_(torch.tensor([200.0, 40.0, 90.0]) / 255.0)
    folder = tmp_path / "vae_approx"
    folder.mkdir()
    save_file(original_layout(decoder), str(folder / "taef1_decoder.safetensors"))
    library = ModelLibrary([flow_root, tmp_path])
    (found,) = library.preview_decoders()
    assert found.usable and found.family is Family.FLUX_DEV
    engine = Engine(library, device="cpu")
    for model in ("tiny-flux-schnell", "tiny-flux-fill"):
        previews = []
        engine.generate(request(model, preview_every=2), on_preview=previews.append)
        colours = {tuple(int(c) for c in p.image.getpixel((3, 3))) for p in previews}
        assert colours == {(200, 40, 90)}, model
        assert all(p.image.size == SIZE for p in previews)  # 8x the unpacked latents


def test_img2img_batches_of_two_on_every_family(flow_engine) -> None:
    """Two seeds of one picture per family (SD 3's img2img pipeline needs the picture
    once per image: tasks.img2img gives it so)."""
    for model in FLOW_MODELS:
        made = flow_engine.generate(request(model, Task.IMG2IMG, batch_size=2, steps=2))
        assert [image.seed for image in made] == [11, 12], model
        assert not np.array_equal(pixels(made[0].image), pixels(made[1].image)), model
