"""Prompts -> embeddings with the real tiny text encoders (SD 1.5: the embedded model;
SDXL: modelkit's tiny two-encoder pipeline): A1111's weights, chunks and BREAK, and
plain prompts giving exactly what diffusers' own encode_prompt gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kd_server.devices import choose_device
from kd_server.engine import Engine
from kd_server.generation import GenerationRequest
from kd_server.library import ModelLibrary
from kd_server.loading import load_model
from kd_server.prompt_encoding import (
    CHUNK_LENGTH,
    Chunk,
    PromptEncoder,
    chunk_prompt,
    prompt_arguments,
)
from kd_server.prompt_syntax import parse_emphasis
from kd_server.samplers import build_scheduler
from kd_server.tasks import spec_for
from kd_server.tiny_model import build_embedded_pipeline
from modelkit import ldm_layout
from support.jobs import make_request

LONG = ", ".join(["a red cat on a mat"] * 12)  # 83 tokens: two chunks


@pytest.fixture(scope="module")
def sd15():
    return build_embedded_pipeline()


@pytest.fixture(scope="module")
def sdxl():
    return ldm_layout.build_tiny_components("sdxl", seed=3)


def embeds(pipe, prompt: str, negative: str = "", clip_skip: int = 1) -> torch.Tensor:
    return prompt_arguments(pipe, prompt, negative, clip_skip)["prompt_embeds"]


def diffusers_sd15(pipe, prompt: str, negative: str | None = None, clip_skip=None):
    return pipe.encode_prompt(prompt, "cpu", 1, True, negative, clip_skip=clip_skip)


def positions_of(pipe, prompt: str, word: str) -> list[int]:
    """Where `word`'s tokens sit in the 77 ids of a one-chunk prompt (1 = first token)."""
    ids = pipe.tokenizer(prompt)["input_ids"]
    wanted = pipe.tokenizer(word, add_special_tokens=False)["input_ids"]
    for start in range(len(ids)):
        if ids[start : start + len(wanted)] == wanted:
            return list(range(start, start + len(wanted)))
    raise AssertionError(f"{word!r} not in {prompt!r}")


# ------------------------------------------------------------------ plain prompts


@pytest.mark.parametrize("negative", ["", "blurry, dark"])
def test_plain_sd15_prompt_is_what_diffusers_encodes(sd15, negative):
    ours = prompt_arguments(sd15, "a red cat on a mat", negative)
    theirs, theirs_negative = diffusers_sd15(sd15, "a red cat on a mat", negative or None)
    assert torch.equal(ours["prompt_embeds"], theirs)
    assert torch.equal(ours["negative_prompt_embeds"], theirs_negative)


def test_clip_skip_2_is_the_penultimate_layer_through_the_final_norm(sd15):
    # diffusers' own clip_skip=1 (A1111's 2) means this, but looks for the final norm
    # where transformers 5 no longer has it, so it is computed here directly
    ids = sd15.tokenizer("a red cat", padding="max_length", return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = sd15.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
        expected = sd15.text_encoder.final_layer_norm(hidden)
    ours = embeds(sd15, "a red cat", clip_skip=2)
    assert torch.equal(ours, expected)
    assert not torch.equal(ours, embeds(sd15, "a red cat"))


@pytest.mark.parametrize("negative", ["", "blurry, dark"])
def test_plain_sdxl_prompt_is_what_diffusers_encodes(sdxl, negative):
    ours = prompt_arguments(sdxl, "a red cat on a mat", negative)
    theirs = sdxl.encode_prompt(
        "a red cat on a mat", device="cpu", negative_prompt=negative or None
    )
    names = (
        "prompt_embeds",
        "negative_prompt_embeds",
        "pooled_prompt_embeds",
        "negative_pooled_prompt_embeds",
    )
    for name, tensor in zip(names, theirs, strict=True):
        assert torch.equal(ours[name], tensor), name
    if not negative:  # SDXL's zeros for no negative prompt, kept
        assert not ours["negative_prompt_embeds"].any()


# ------------------------------------------------------------------------ weights


def test_a_weight_scales_exactly_its_tokens_then_the_mean_is_restored(sd15):
    plain = embeds(sd15, "a red hair cat")
    weighted = embeds(sd15, "a (red hair:1.3) cat")
    assert weighted.shape == plain.shape == (1, 77, 32)
    assert torch.allclose(weighted.mean(), plain.mean(), atol=1e-6)
    ratio = weighted / plain  # one factor everywhere, 1.3 times it on "red hair"
    factor = ratio[0, 0, 0]
    hair = positions_of(sd15, "a red hair cat", "red hair")
    for position in range(77):
        expected = factor * (1.3 if position in hair else 1.0)
        assert torch.allclose(ratio[0, position], expected.expand(32), rtol=1e-4), position
    assert not torch.equal(weighted, plain)


@pytest.mark.parametrize(
    ("written", "same_as"),
    [
        ("a ((red)) cat", "a (red:1.21) cat"),
        ("a [red] cat", f"a (red:{1 / 1.1}) cat"),
        ("a (red) cat", "a (red:1.1) cat"),
        ("a (red cat", "a (red cat:1.1)"),  # left open: to the end
    ],
)
def test_bracket_forms_equal_their_explicit_weights(sd15, written, same_as):
    assert torch.allclose(embeds(sd15, written), embeds(sd15, same_as), atol=1e-6)


def test_escaped_brackets_are_the_literal_characters(sd15):
    theirs, _ = diffusers_sd15(sd15, "a (red) cat")
    assert torch.equal(embeds(sd15, "a \\(red\\) cat"), theirs)
    assert not torch.equal(embeds(sd15, "a (red) cat"), theirs)


def test_sdxl_weights_both_encoders_and_keeps_the_pooled_embedding(sdxl):
    plain = prompt_arguments(sdxl, "a red cat", "")
    weighted = prompt_arguments(sdxl, "a (red:1.5) cat", "")
    assert weighted["prompt_embeds"].shape == (1, 77, 32 + 64)
    red = positions_of(sdxl, "a red cat", "red")[0]
    ratio = weighted["prompt_embeds"] / plain["prompt_embeds"]
    for width in (slice(0, 32), slice(32, 96)):  # each encoder's mean restored on its own
        part = ratio[0, :, width]
        assert torch.allclose(part[red], part[0] * 1.5, rtol=1e-4)
        assert torch.allclose(part[red + 1], part[0], rtol=1e-4)
    assert torch.equal(weighted["pooled_prompt_embeds"], plain["pooled_prompt_embeds"])


# -------------------------------------------------------------- chunks and BREAK


def test_the_tail_of_a_long_prompt_changes_the_conditioning(sd15):
    changed_tail = LONG + ", purple elephant"
    ours, ours_changed = embeds(sd15, LONG), embeds(sd15, changed_tail)
    assert ours.shape == (1, 154, 32)
    assert torch.equal(ours[:, :77], ours_changed[:, :77])
    assert not torch.equal(ours[:, 77:], ours_changed[:, 77:])
    # diffusers' own encoding cut both at 77 tokens: they were the same
    assert torch.equal(diffusers_sd15(sd15, LONG)[0], diffusers_sd15(sd15, changed_tail)[0])


def test_break_starts_a_new_chunk(sd15):
    both = embeds(sd15, "a cat BREAK a dog")
    assert both.shape == (1, 154, 32)
    assert torch.equal(both[:, :77], embeds(sd15, "a cat"))
    assert torch.equal(both[:, 77:], embeds(sd15, "a dog"))


def test_the_shorter_side_is_padded_with_the_empty_chunk(sd15):
    arguments = prompt_arguments(sd15, LONG, "blurry")
    negative = arguments["negative_prompt_embeds"]
    assert arguments["prompt_embeds"].shape == negative.shape == (1, 154, 32)
    assert torch.equal(negative[:, :77], embeds(sd15, "blurry"))
    assert torch.equal(negative[:, 77:], embeds(sd15, ""))


def test_sdxl_long_prompt_pools_the_first_chunk(sdxl):
    long = prompt_arguments(sdxl, LONG, "blurry")
    assert long["prompt_embeds"].shape == long["negative_prompt_embeds"].shape == (1, 154, 96)
    # the first chunk ends at the tenth comma (A1111's comma rule): 70 tokens
    first_chunk = ", ".join(["a red cat on a mat"] * 10) + ","
    first = PromptEncoder.for_pipeline(sdxl).encode(first_chunk)
    assert torch.equal(long["pooled_prompt_embeds"], first.pooled)
    assert torch.equal(long["prompt_embeds"][:, :77], first.chunks[0])


# --------------------------------------------------------- chunking (no encoder)


def letters(text: str) -> list[tuple[int, ...]]:
    """A stand-in tokenizer: one token per character, "," is 0."""
    return [(0,) if c == "," else (ord(c),) for c in text if c != " "]


def test_a_full_chunk_moves_the_words_after_a_recent_comma_to_the_next():
    text = "a" * 70 + "," + "b" * 10  # the comma is 5 tokens before the chunk fills
    first, second = chunk_prompt(parse_emphasis(text), letters, comma=0)
    assert first.tokens == [ord("a")] * 70 + [0]
    assert second.tokens == [ord("b")] * 10


def test_a_comma_too_far_back_is_not_used():
    text = "a" * 40 + "," + "b" * 50
    first, second = chunk_prompt(parse_emphasis(text), letters, comma=0)
    assert len(first.tokens) == CHUNK_LENGTH
    assert second.tokens == [ord("b")] * 16


def test_weights_follow_their_tokens_across_chunks_and_runs_stay_together():
    pieces = parse_emphasis("a" * 74 + "(b:2)")

    def runs(text: str) -> list[tuple[int, ...]]:
        return [(1, 2) if c == "b" else (ord(c),) for c in text]

    first, second = chunk_prompt(pieces, runs, comma=None)
    assert len(first.tokens) == 74
    assert second == Chunk([1, 2], [2.0, 2.0])


def test_empty_prompt_is_one_empty_chunk():
    assert chunk_prompt(parse_emphasis(""), letters, comma=0) == [Chunk()]
    assert len(chunk_prompt(parse_emphasis("a BREAK"), letters, comma=0)) == 1


# ------------------------------------------------------------------ the engine


@pytest.fixture(scope="module")
def sdxl_engine(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    pipe = ldm_layout.build_tiny_components("sdxl", seed=3)
    checkpoint = root / "checkpoints" / "tiny-sdxl.safetensors"
    ldm_layout.write_ldm_checkpoint(pipe, checkpoint)
    ldm_layout.save_config_folder(pipe, checkpoint.with_suffix(".config"))
    return Engine(ModelLibrary([root]), device="cpu")


def engine_picture(engine: Engine, **fields) -> np.ndarray:
    request = make_request(**{"steps": 2, "seed": 11, "width": 64, "height": 64, **fields})
    return np.asarray(engine.generate(request)[0].image)


def picture_from_text(library: ModelLibrary, request: GenerationRequest) -> np.ndarray:
    """The picture as the engine made it before prompts were encoded here: the task's
    own arguments, prompt text and all, straight into diffusers' pipeline."""
    entry = (
        library.default_checkpoint()
        if request.model is None
        else library.get_checkpoint(request.model)
    )
    model = load_model(entry, choose_device("cpu"))
    spec = spec_for(request.task)
    prepared = spec.prepare(request, model)
    pipe = model.pipeline_for(request.task)
    pipe.scheduler = build_scheduler(
        request.sampling.sampler, model.scheduler_config, family=model.family
    )
    assert request.sampling.seed is not None
    output = pipe(
        generator=[torch.Generator("cpu").manual_seed(request.sampling.seed)],
        output_type="pil",
        **spec.pipeline_arguments(request, prepared),
    )
    return np.asarray(spec.finish(output.images[0], prepared))


@pytest.mark.parametrize(
    ("model", "negative"),
    [(None, "blurry, dark"), (None, ""), ("tiny-sdxl", ""), ("tiny-sdxl", "blurry")],
)
def test_plain_prompts_make_the_same_pictures_as_before(
    embedded_engine, sdxl_engine, model, negative
):
    engine = embedded_engine if model is None else sdxl_engine
    fields = {"prompt": "a red cat on a mat", "negative_prompt": negative, "model": model}
    ours = engine_picture(engine, **fields)
    before = picture_from_text(
        engine.library, make_request(steps=2, seed=11, width=64, height=64, **fields)
    )
    assert np.array_equal(ours, before)


@pytest.mark.parametrize("model", [None, "tiny-sdxl"])
def test_weights_and_a_long_tail_change_the_picture(embedded_engine, sdxl_engine, model):
    engine = embedded_engine if model is None else sdxl_engine
    plain = engine_picture(engine, prompt="a red cat on a mat", model=model)
    weighted = engine_picture(engine, prompt="a (red:1.6) cat on a [mat]", model=model)
    assert not np.array_equal(plain, weighted)
    long = engine_picture(engine, prompt=LONG, model=model)
    longer = engine_picture(engine, prompt=LONG + ", purple elephant", model=model)
    assert not np.array_equal(long, longer)


def test_clip_skip_beyond_the_encoders_layers_starts_from_its_embeddings(sd15):
    # the tiny encoder has 2 layers: 3 hidden states; 12 reads the first, as 3 does
    assert torch.equal(
        embeds(sd15, "a red cat", clip_skip=12), embeds(sd15, "a red cat", clip_skip=3)
    )


def test_the_engine_refuses_a_clip_skip_out_of_range(embedded_engine):
    from kd_server.generation import EngineError

    with pytest.raises(EngineError, match="clip_skip"):
        embedded_engine.check(make_request(prompt="x", clip_skip=13))
