"""The T5 tokenizer of Flux / SD 3.5: where it is found, and that it loads offline.

The tokenizers here are small Unigram tokenizers built the way T5's tokenizer.json is
(Metaspace pre-tokenizer, `</s>` appended); the real one is checked too when it is on
this machine (`python3 -m installer download t5-tokenizer`, or KD_T5_TOKENIZER).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

from kd_server.families import resources_dir
from kd_server.library import ModelLibrary
from kd_server.t5_tokenizer import (
    FOLDER_NAME,
    MISSING_HINT,
    T5TokenizerMissing,
    candidate_folders,
    find_for_library,
    find_t5_tokenizer,
    is_t5_tokenizer_folder,
    load_t5_tokenizer,
    require_t5_tokenizer,
)

VOCAB = [
    ("<pad>", 0.0),
    ("</s>", 0.0),
    ("<unk>", 0.0),
    ("▁", -2.0),
    ("a", -3.0),
    ("▁photo", -4.0),
    ("▁of", -4.0),
    ("▁cat", -4.0),
    ("▁a", -10.0),  # less likely than "▁" + "a": T5's own split of "a"
]
#: google/t5-v1_1-xxl's ids, as its tokenizer gives them (and our tiny one mimics).
REAL_IDS = {
    "a photo of a cat": [3, 9, 1202, 13, 3, 9, 1712, 1],
    "A serene mountain lake at sunset, 8k, highly detailed": [
        71, 28362, 4180, 6957, 44, 13744, 6, 505, 157, 6, 1385, 3117, 1,
    ],
    "hello": [21820, 1],
}  # fmt: skip
SHIPPED = resources_dir() / FOLDER_NAME


def write_t5(folder: Path) -> Path:
    tokenizer = Tokenizer(models.Unigram(VOCAB, unk_id=2))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"], special_tokens=[("</s>", 1)]
    )
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


def write_clip_like(folder: Path) -> Path:
    """A BPE tokenizer.json, as SD 3's CLIP tokenizer_2 holds."""
    tokenizer = Tokenizer(models.BPE({"a": 0, "<|endoftext|>": 1}, [], unk_token="<|endoftext|>"))
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return folder


def expected(found: Path) -> Path:
    """What the search gives when a developer has put the real one into resources/."""
    return SHIPPED if is_t5_tokenizer_folder(SHIPPED) else found


def test_loads_offline_and_tokenizes_like_t5(tmp_path: Path) -> None:
    folder = write_t5(tmp_path / "t5")
    tokenizer = load_t5_tokenizer(folder, model_max_length=256)
    assert tokenizer("a photo of a cat").input_ids == [3, 4, 5, 6, 3, 4, 7, 1]
    assert tokenizer.model_max_length == 256
    assert (tokenizer.eos_token, tokenizer.pad_token_id) == ("</s>", 0)


def test_search_order(tmp_path: Path) -> None:
    given = write_t5(tmp_path / "given")
    models = tmp_path / "models"
    in_models = write_t5(models / FOLDER_NAME)
    comfy = write_t5(tmp_path / "ComfyUI" / "comfy" / "text_encoders" / "t5_tokenizer")
    sd3 = tmp_path / "sd3"
    write_clip_like(sd3 / "tokenizer_2")
    write_t5(sd3 / "tokenizer_3")

    order = list(candidate_folders([given], [models], [sd3]))
    assert order[:3] == [given, SHIPPED, models / FOLDER_NAME]
    assert order.index(sd3 / "tokenizer_3") < order.index(
        models.parent / "comfy/text_encoders/t5_tokenizer"
    )
    assert find_t5_tokenizer([given], [models], [sd3]) == given
    assert find_t5_tokenizer([], [models], [sd3]) == expected(in_models)
    # SD 3's tokenizer_2 is CLIP's (BPE): skipped for tokenizer_3.
    assert find_t5_tokenizer([], [], [sd3]) == expected(sd3 / "tokenizer_3")
    # ComfyUI's own copy, beside its models/ folder or under the ComfyUI folder.
    assert find_t5_tokenizer([], [tmp_path / "ComfyUI" / "models"]) == expected(comfy)
    assert find_t5_tokenizer([], [tmp_path / "ComfyUI"]) == expected(comfy)


@pytest.mark.skipif(is_t5_tokenizer_folder(SHIPPED), reason="resources/tokenizer-t5 is filled")
def test_missing_says_how_to_get_it(tmp_path: Path) -> None:
    assert find_t5_tokenizer([tmp_path / "nowhere"], [tmp_path]) is None
    with pytest.raises(T5TokenizerMissing, match="installer download t5-tokenizer"):
        require_t5_tokenizer([], [tmp_path])
    with pytest.raises(T5TokenizerMissing) as caught:
        load_t5_tokenizer(tmp_path)
    assert MISSING_HINT in str(caught.value)


def test_found_through_a_library_flux_folder(tmp_path: Path) -> None:
    flux = tmp_path / "checkpoints" / "flux-dev"
    index = {"_class_name": "FluxPipeline", "transformer": ["diffusers", "X"]}
    flux.mkdir(parents=True)
    (flux / "model_index.json").write_text(json.dumps(index), encoding="utf-8")
    write_t5(flux / "tokenizer_2")
    library = ModelLibrary([tmp_path], include_embedded=False)
    assert find_for_library(library) == expected(flux / "tokenizer_2")


def _real_tokenizer() -> Path | None:
    given = os.environ.get("KD_T5_TOKENIZER")
    return find_t5_tokenizer([Path(given)] if given else [])


@pytest.mark.skipif(_real_tokenizer() is None, reason="no real T5 tokenizer on this machine")
def test_real_tokenizer_gives_google_t5_v1_1_xxl_ids() -> None:
    folder = _real_tokenizer()
    assert folder is not None
    tokenizer = load_t5_tokenizer(folder)
    for text, ids in REAL_IDS.items():
        assert tokenizer(text).input_ids == ids, text
    assert len(tokenizer) == 32100
