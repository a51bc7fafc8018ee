"""The shipped CLIP tokenizer gives openai/clip-vit-large-patch14's ids, offline."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from transformers import CLIPTokenizer

from kd_server.families import resources_dir, tokenizer_dir
from kd_server.tokenizer import load_tokenizer, tokenizer_settings

CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]
VOCAB = tokenizer_dir() / "vocab.json"
MERGES = tokenizer_dir() / "merges.txt"
CONFIGS = resources_dir() / "model-configs"


def test_shipped_files_have_clip_sizes() -> None:
    vocab = json.loads(VOCAB.read_text(encoding="utf-8"))
    assert len(vocab) == 49408
    assert sorted(vocab.values()) == list(range(49408))
    assert vocab["<|startoftext|>"] == 49406
    assert vocab["<|endoftext|>"] == 49407
    lines = MERGES.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("#version")
    assert len(lines) - 1 == 48894


def test_files_encode_like_openai_clip() -> None:
    tokenizer = CLIPTokenizer(vocab=str(VOCAB), merges=str(MERGES))
    assert tokenizer("a photo of a cat").input_ids == CAT_IDS
    assert len(tokenizer) == 49408
    # Known ids of CLIP's vocabulary: words end in </w>, punctuation is split off.
    assert tokenizer("Hello, World!").input_ids == [49406, 3306, 267, 1002, 256, 49407]


def test_from_pretrained_beside_a_family_tokenizer_config(tmp_path: Path) -> None:
    folder = tmp_path / "tokenizer"
    shutil.copytree(CONFIGS / "sd15" / "tokenizer", folder)
    shutil.copy(VOCAB, folder)
    shutil.copy(MERGES, folder)
    tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    assert tokenizer("a photo of a cat").input_ids == CAT_IDS
    assert tokenizer.model_max_length == 77


@pytest.mark.parametrize(
    ("folder", "pad_id"),
    [("sd15/tokenizer", 49407), ("sdxl/tokenizer", 49407), ("sdxl/tokenizer_2", 0)],
)
def test_load_tokenizer_uses_the_folder_settings(folder: str, pad_id: int) -> None:
    tokenizer = load_tokenizer(CONFIGS / folder)
    ids = tokenizer("a photo of a cat", padding="max_length").input_ids
    assert len(ids) == 77
    assert ids[:7] == CAT_IDS
    assert ids[7:] == [pad_id] * 70  # SDXL's second tokenizer pads with "!" (id 0)


def test_load_tokenizer_pad_override() -> None:
    tokenizer = load_tokenizer(CONFIGS / "sd15" / "tokenizer", pad_token="!")
    assert tokenizer.pad_token == "!"
    assert tokenizer.pad_token_id == 0


def test_settings_read_from_config_and_token_objects(tmp_path: Path) -> None:
    (tmp_path / "special_tokens_map.json").write_text(
        json.dumps({"pad_token": {"content": "!", "lstrip": False}}), encoding="utf-8"
    )
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"model_max_length": 64, "tokenizer_class": "CLIPTokenizer"}), encoding="utf-8"
    )
    assert tokenizer_settings(tmp_path) == {"model_max_length": 64, "pad_token": "!"}


def _fake_bpe_text() -> str:
    """A BPE file with the real shape (header + enough merge lines) but dummy pairs.

    Real merges are distinct concatenations; dummy ones use unique multi-char tokens.
    """
    lines = ["bpe_simple_vocab_16e6.txt#version: 0.2"]
    lines += [f"x{i} y{i}</w>" for i in range(48894)]
    lines += ["extra line beyond the merges CLIP uses"]
    return "\n".join(lines) + "\n"


def test_script_reads_the_member_from_a_wheel(tmp_path: Path) -> None:
    wheel = tmp_path / "open_clip_torch-0-py3-none-any.whl"
    payload = io.BytesIO()
    with zipfile.ZipFile(payload, "w") as archive:
        archive.writestr(
            "open_clip/bpe_simple_vocab_16e6.txt.gz", gzip.compress(_fake_bpe_text().encode())
        )
    wheel.write_bytes(payload.getvalue())
    out = tmp_path / "out"
    script = resources_dir() / "make_tokenizer.py"
    run = subprocess.run(
        [sys.executable, str(script), str(wheel), "-o", str(out)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    vocab = json.loads((out / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == 49408
    assert vocab["x0y0</w>"] == 512  # first merge comes after the 2 x 256 byte tokens
    assert vocab["<|endoftext|>"] == 49407
    merges = (out / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[1] == "x0 y0</w>"
    assert len(merges) == 48895


def test_script_rejects_a_wheel_without_the_file(tmp_path: Path) -> None:
    wheel = tmp_path / "other.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("other/readme.txt", "nothing here")
    script = resources_dir() / "make_tokenizer.py"
    run = subprocess.run(
        [sys.executable, str(script), str(wheel), "-o", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1
    assert "does not contain bpe_simple_vocab_16e6.txt.gz" in run.stderr
    assert not (tmp_path / "out").exists()
