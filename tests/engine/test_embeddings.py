"""Textual-inversion embeddings: found in A1111's and ComfyUI's folders from the header,
and, named in a prompt (A1111's plain name or ComfyUI's `embedding:name`), they change
the picture on the tiny SD 1.5 and SDXL models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kd_server.embeddings import comfy_names, find_embeddings
from kd_server.engine import Engine
from kd_server.families import Family
from kd_server.library import ModelLibrary
from modelkit import ldm_layout
from modelkit.embeddings import write_sd15_embedding, write_sdxl_embedding
from support.jobs import make_request

TINY_WIDTH = 32  # the embedded model's and the tiny SDXL's first text encoder
TINY_XL_WIDTHS = (32, 64)


# ---------------------------------------------------------------- finding files


def test_files_are_found_in_a1111_and_comfyui_folders_and_read_from_the_header(tmp_path):
    a1111, comfy = tmp_path / "webui", tmp_path / "ComfyUI"
    write_sd15_embedding(a1111 / "embeddings" / "easynegative.safetensors", 768, vectors=8)
    write_sd15_embedding(
        a1111 / "embeddings" / "styles" / "cat-toy.safetensors", 768, 1, key="<cat-toy>"
    )
    write_sdxl_embedding(comfy / "models" / "embeddings" / "xl-style.safetensors", (768, 1280))
    (comfy / "models" / "embeddings" / "old.pt").write_bytes(b"\x80\x02}q\x00.")
    (a1111 / "embeddings" / "notes.txt").write_text("not a model")
    found = {e.name: e for e in find_embeddings([a1111, comfy])}
    assert sorted(found) == ["cat-toy", "easynegative", "old", "xl-style"]
    assert (found["easynegative"].family, found["easynegative"].vectors) == (Family.SD15, 8)
    assert found["cat-toy"].usable and found["cat-toy"].vectors == 1
    assert found["xl-style"].family is Family.SDXL and found["xl-style"].widths == (768, 1280)
    assert not found["old"].usable and "safetensors" in (found["old"].reason or "")


def test_comfyui_spelling_is_the_plain_name():
    assert comfy_names("a cat, embedding:ink-style, (embedding:grain.safetensors:1.2)") == (
        "a cat, ink-style, (grain:1.2)"
    )
    assert comfy_names("embedding:sub/folder/x.pt done") == "x done"
    assert comfy_names("no embedding here") == "no embedding here"


# --------------------------------------------------------------- in the picture


def picture(engine: Engine, prompt: str, model: str | None = None) -> np.ndarray:
    request = make_request(prompt=prompt, steps=2, seed=5, width=64, height=64, model=model)
    return np.asarray(engine.generate(request)[0].image)


@pytest.fixture(scope="module")
def sd15_engines(tmp_path_factory):
    """The embedded model without and with an A1111 embeddings folder."""
    webui = tmp_path_factory.mktemp("webui")
    write_sd15_embedding(webui / "embeddings" / "inkstyle.safetensors", TINY_WIDTH, seed=1)
    write_sdxl_embedding(webui / "embeddings" / "xlonly.safetensors", TINY_XL_WIDTHS, seed=2)
    plain = Engine(ModelLibrary([]), device="cpu")
    return plain, Engine(ModelLibrary([webui]), device="cpu")


def test_a_named_embedding_changes_the_sd15_picture(sd15_engines):
    plain, with_embeddings = sd15_engines
    words = picture(plain, "a cat, inkstyle")
    named = picture(with_embeddings, "a cat, inkstyle")
    assert not np.array_equal(words, named)
    assert np.array_equal(named, picture(with_embeddings, "a cat, embedding:inkstyle"))
    assert not np.array_equal(named, picture(with_embeddings, "a cat, (inkstyle:1.4)"))
    # once loaded, prompts that do not name it are as they were
    assert np.array_equal(picture(plain, "a dog"), picture(with_embeddings, "a dog"))


def test_an_embedding_of_another_family_is_read_as_words(sd15_engines):
    plain, with_embeddings = sd15_engines
    assert np.array_equal(
        picture(plain, "a cat, xlonly"), picture(with_embeddings, "a cat, xlonly")
    )


def test_a_named_embedding_changes_the_sdxl_picture(tmp_path):
    models, extra = tmp_path / "models", tmp_path / "extra"
    pipe = ldm_layout.build_tiny_components("sdxl", seed=3)
    checkpoint = models / "checkpoints" / "tiny-sdxl.safetensors"
    ldm_layout.write_ldm_checkpoint(pipe, checkpoint)
    ldm_layout.save_config_folder(pipe, checkpoint.with_suffix(".config"))
    write_sdxl_embedding(extra / "models" / "embeddings" / "xlstyle.safetensors", TINY_XL_WIDTHS)
    plain = Engine(ModelLibrary([models], include_embedded=False), device="cpu")
    with_embeddings = Engine(ModelLibrary([models, extra], include_embedded=False), device="cpu")
    words = picture(plain, "a vase, xlstyle", "tiny-sdxl")
    named = picture(with_embeddings, "a vase, embedding:xlstyle", "tiny-sdxl")
    assert not np.array_equal(words, named)


def test_loaded_vectors_are_the_files(sd15_engines, tmp_path: Path):
    """The text encoder's table holds the file's vectors under the embedding's tokens."""
    import torch
    from safetensors.torch import load_file

    from kd_server.embeddings import tokens_for

    _, with_embeddings = sd15_engines
    picture(with_embeddings, "inkstyle")
    pipe = with_embeddings._cache["tiny-sd15-embedded"].base
    (inkstyle,) = [e for e in with_embeddings.library.embeddings() if e.name == "inkstyle"]
    ((tokens,),) = tokens_for(pipe, [inkstyle])
    table = pipe.text_encoder.get_input_embeddings().weight
    expected = load_file(str(inkstyle.path))["emb_params"]
    assert torch.equal(table[list(tokens.ids)], expected.to(table.dtype))
