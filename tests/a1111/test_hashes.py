"""Model hashes as A1111 computes them (kd_server.hashes), checked against hashlib.

A1111 1.x: a checkpoint's hash is sha256 of the whole file (`sd_model_hash` and
`Model hash` are its first 10 hex digits; the legacy 8-digit `model_hash` of 64 KiB at
offset 1 MiB is not what 1.x sends); a LoRA's is the trainer's `sshs_model_hash` if
stored, else sha256 of the bytes after the safetensors header (first 12 digits).
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import torch
from safetensors.torch import save_file

from kd_server.families import Family
from kd_server.hashes import (
    EMBEDDED,
    PENDING,
    UNREADABLE,
    HashKind,
    HashStore,
    file_sha256,
    library_files,
    lora_sha256,
)
from kd_server.library import (
    EMBEDDED_ENTRY,
    EntryKind,
    EntryStatus,
    ModelEntry,
    ModelFormat,
)


def whole_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def after_header(path: Path) -> str:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return hashlib.sha256(data[8 + length :]).hexdigest()


def write_lora(path: Path, metadata: dict[str, str] | None = None) -> Path:
    tensors = {"lora_unet_x.lora_down.weight": torch.arange(12, dtype=torch.float32)}
    save_file(tensors, str(path), metadata=metadata)
    return path


def test_checkpoint_hash_is_sha256_of_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 17))  # crosses the 1 MiB offset
    assert file_sha256(path) == whole_file(path)


def test_lora_hash_skips_the_header_or_uses_the_stored_one(tmp_path: Path) -> None:
    plain = write_lora(tmp_path / "plain.safetensors", {"ss_output_name": "plain"})
    assert lora_sha256(plain) == after_header(plain) != whole_file(plain)
    # Editing the metadata changes the header only: the hash stays.
    edited = write_lora(tmp_path / "edited.safetensors", {"ss_output_name": "renamed, longer"})
    assert lora_sha256(edited) == lora_sha256(plain)
    stored = "AB" * 32
    trained = write_lora(tmp_path / "trained.safetensors", {"sshs_model_hash": stored})
    assert lora_sha256(trained) == stored.lower()
    bogus = write_lora(tmp_path / "bogus.safetensors", {"sshs_model_hash": "not a hash"})
    assert lora_sha256(bogus) == after_header(bogus)


def checkpoint_entry(path: Path) -> ModelEntry:
    return ModelEntry(
        path.stem,
        EntryKind.CHECKPOINT,
        path,
        ModelFormat.SAFETENSORS,
        Family.SD15,
        EntryStatus.USABLE,
    )


def test_a_large_file_is_hashed_in_the_background(tmp_path: Path) -> None:
    """A lookup never waits for hashing: it answers at once with a labelled
    placeholder, and the hash comes later."""
    big = tmp_path / "big.safetensors"
    with big.open("wb") as handle:  # sparse: no disk space, still 256 MiB to read
        handle.truncate(256 * 1024 * 1024)
        handle.seek(0)
        handle.write(b"header")
    store = HashStore()
    store.schedule([(big, HashKind.FILE)])
    first = store.entry_hash(checkpoint_entry(big))
    # the answer came before the hash existed: the lookup did not wait for the reading
    assert first.sha256 is None and first.short(10) == PENDING
    assert store.wait_idle(timeout=120)
    digest = hashlib.sha256()
    with big.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    assert store.get(big, HashKind.FILE) == digest.hexdigest()


def test_each_file_version_is_hashed_once(tmp_path: Path) -> None:
    path = tmp_path / "a.safetensors"
    path.write_bytes(b"first version")
    store = HashStore()
    store.schedule([(path, HashKind.FILE)])
    assert store.wait_idle(timeout=30)
    first = store.get(path, HashKind.FILE)
    assert first == whole_file(path)
    store.schedule([(path, HashKind.FILE)])  # a rescan: nothing new to do
    assert store.wait_idle(timeout=30) and store.get(path, HashKind.FILE) == first
    path.write_bytes(b"a replaced file, another size")
    # A changed file is not known until it is hashed again, even before a rescan.
    assert store.get(path, HashKind.FILE) is None
    assert store.wait_idle(timeout=30)
    assert store.get(path, HashKind.FILE) == whole_file(path) != first


def test_a_split_checkpoint_is_hashed_by_its_transformer_file(tmp_path: Path) -> None:
    transformer = tmp_path / "flux1-dev-Q8_0.gguf"
    transformer.write_bytes(os.urandom(64 * 1024))
    entry = ModelEntry(
        "flux1-dev-Q8_0.gguf",
        EntryKind.CHECKPOINT,
        transformer,
        ModelFormat.SPLIT,
        Family.FLUX_DEV,
        EntryStatus.USABLE,
    )
    store = HashStore()
    store.schedule(library_files([entry]))
    assert store.wait_idle(timeout=30)
    assert store.entry_hash(entry).sha256 == whole_file(transformer)


def test_models_without_a_file_get_a_label() -> None:
    assert HashStore().entry_hash(EMBEDDED_ENTRY).short(10) == EMBEDDED


def test_an_unreadable_file_is_reported_not_retried(tmp_path: Path) -> None:
    lora = tmp_path / "short.safetensors"
    lora.write_bytes(b"\x01\x00")  # not even a header length
    store = HashStore()
    store.schedule([(lora, HashKind.LORA)])
    assert store.wait_idle(timeout=30)
    assert store.get(lora, HashKind.LORA) is None and store.failed(lora, HashKind.LORA)
    entry = ModelEntry(
        "short", EntryKind.LORA, lora, ModelFormat.SAFETENSORS, None, EntryStatus.USABLE
    )
    assert store.entry_hash(entry).short(12) == UNREADABLE
    assert store.wait_idle(timeout=1)  # asking again did not queue it again
