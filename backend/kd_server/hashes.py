"""Model file hashes as A1111 reports them, computed in the background.

A1111 clients and PNG-metadata readers identify models by hash: `sd_model_hash` and
`Model hash` (a checkpoint's sha256, first 10 hex digits) and `Lora hashes` (A1111's
LoRA hash, first 12). Hashing a multi-GB checkpoint takes seconds to minutes, so it
never happens while a request waits: the library hands its files to `HashStore` after
every scan, one worker thread hashes them (small files first, a file asked for jumps
the queue), and lookups only read what is ready. Each file version (path, size,
modification time) is hashed once; a replaced file is hashed again.

Until a hash is ready, callers that must send a string use a placeholder
(`PENDING`, or a label for models that are no single file) instead of null.
"""

from __future__ import annotations

import enum
import hashlib
import io
import json
import logging
import re
import struct
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kd_server.library import ModelEntry

log = logging.getLogger(__name__)

#: A1111's short hashes: checkpoints (`sd_model_hash`, `Model hash`) and LoRAs.
CHECKPOINT_SHORT = 10
LORA_SHORT = 12

#: Placeholders, for answers that must hold a string where the hash is not known.
PENDING = "hash-pending"  # the file is queued or being hashed
UNREADABLE = "hash-unavailable"  # reading the file failed (the log says why)
EMBEDDED = "embedded"  # the built-in tiny model: no file
DIFFUSERS_FOLDER = "diffusers-folder"  # a folder of files, which A1111 does not hash

_CHUNK = 8 * 1024 * 1024
_MAX_HEADER = 100 * 1024 * 1024


class HashKind(str, enum.Enum):
    """What is hashed: the whole file (checkpoints), or A1111's LoRA hash."""

    FILE = "file"
    LORA = "lora"


@dataclass(frozen=True)
class FileVersion:
    """A file as it is now; a new size or modification time is a new version."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileVersion | None:
        try:
            info = path.stat()
            resolved = str(path.resolve())
        except OSError:
            return None
        return cls(resolved, info.st_size, info.st_mtime_ns)


@dataclass(frozen=True)
class EntryHash:
    """A model's hash for an answer: the full sha256 when known, else a placeholder."""

    sha256: str | None
    placeholder: str

    def short(self, length: int) -> str:
        return self.sha256[:length] if self.sha256 else self.placeholder


def file_sha256(path: Path) -> str:
    """sha256 of the whole file: A1111's checkpoint hash."""
    digest = hashlib.sha256()
    with path.open("rb", buffering=0) as handle:
        _feed(digest, handle)
    return digest.hexdigest()


def lora_sha256(path: Path) -> str:
    """A1111's LoRA hash: the `sshs_model_hash` the trainer stored in the metadata if
    any, else sha256 of the tensor data after the safetensors header (the header holds
    editable metadata, so the hash survives metadata edits)."""
    with path.open("rb", buffering=0) as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise ValueError("too short for a safetensors file")
        (length,) = struct.unpack("<Q", head)
        if length > _MAX_HEADER:
            raise ValueError(f"a safetensors header of {length} bytes")
        stored = _stored_hash(handle.read(length))
        if stored is not None:
            return stored
        handle.seek(8 + length)
        digest = hashlib.sha256()
        _feed(digest, handle)
    return digest.hexdigest()


def _stored_hash(header: bytes) -> str | None:
    try:
        metadata = json.loads(header.decode("utf-8")).get("__metadata__") or {}
    except (UnicodeDecodeError, ValueError, AttributeError):
        return None
    value = metadata.get("sshs_model_hash") if isinstance(metadata, dict) else None
    if isinstance(value, str) and len(value) == 64:
        try:
            int(value, 16)
        except ValueError:
            return None
        return value.lower()
    return None


def _feed(digest: hashlib._Hash, handle: io.RawIOBase) -> None:
    """Unbuffered reads into one reused buffer: no copy per chunk, and hashlib releases
    the GIL while it digests, so the event loop keeps running."""
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    while True:
        count = handle.readinto(buffer)
        if not count:
            return
        digest.update(view[:count])


_COMPUTE = {HashKind.FILE: file_sha256, HashKind.LORA: lora_sha256}

_Key = tuple[FileVersion, HashKind]


class HashStore:
    """Hashes of the library's files, computed by one background worker thread.

    `schedule` (after a scan) queues what is not known yet; `get` never reads a file.
    The worker runs only while there is work, so an idle server holds no thread.
    """

    def __init__(self) -> None:
        self._done: dict[_Key, str] = {}
        self._failed: set[_Key] = set()
        self._queue: deque[tuple[_Key, Path]] = deque()
        self._condition = threading.Condition()
        self._worker: threading.Thread | None = None
        self._busy: _Key | None = None

    # -- feeding ---------------------------------------------------------------------

    def schedule(self, files: Iterable[tuple[Path, HashKind]]) -> None:
        """Queue these files (smallest first); forget versions that are not listed."""
        wanted: dict[_Key, Path] = {}
        for path, kind in files:
            version = FileVersion.of(path)
            if version is not None:
                wanted[(version, kind)] = path
        with self._condition:
            self._done = {k: v for k, v in self._done.items() if k in wanted}
            self._failed &= set(wanted)
            todo = [item for item in wanted.items() if item[0] not in self._done]
            todo = [item for item in todo if item[0] not in self._failed]
            todo.sort(key=lambda item: item[0][0].size)
            self._queue = deque(todo)
            self._start_worker()

    def _start_worker(self) -> None:
        """(Condition held.) One worker at a time, started when there is work."""
        if self._queue and self._worker is None:
            self._worker = threading.Thread(target=self._work, name="model-hashes", daemon=True)
            self._worker.start()

    # -- lookups ---------------------------------------------------------------------

    def get(self, path: Path, kind: HashKind) -> str | None:
        """The full hash if it is ready. A queued file asked for moves to the front."""
        version = FileVersion.of(path)
        if version is None:
            return None
        key = (version, kind)
        with self._condition:
            found = self._done.get(key)
            if found is None and key not in self._failed and key != self._busy:
                self._to_front(key, path)
            return found

    def failed(self, path: Path, kind: HashKind) -> bool:
        version = FileVersion.of(path)
        with self._condition:
            return version is not None and (version, kind) in self._failed

    def _to_front(self, key: _Key, path: Path) -> None:
        """(Condition held.) Queue the file first: it is wanted now. A file changed
        since the last scan is not queued yet; it is added here."""
        for index, item in enumerate(self._queue):
            if item[0] == key:
                del self._queue[index]
                break
        self._queue.appendleft((key, path))
        self._start_worker()

    def entry_hash(self, entry: ModelEntry) -> EntryHash:
        """The hash of a library entry, or the placeholder that says why there is none."""
        from kd_server.library import EntryKind, ModelFormat

        if entry.format is ModelFormat.EMBEDDED or entry.path is None:
            return EntryHash(None, EMBEDDED)
        if entry.format is ModelFormat.DIFFUSERS:
            return EntryHash(None, DIFFUSERS_FOLDER)
        kind = HashKind.LORA if entry.kind is EntryKind.LORA else HashKind.FILE
        found = self.get(entry.path, kind)
        if found is not None:
            return EntryHash(found, PENDING)
        return EntryHash(None, UNREADABLE if self.failed(entry.path, kind) else PENDING)

    def find(self, entries: Iterable[ModelEntry], reference: str) -> ModelEntry | None:
        """The usable entry a hash reference names, among those hashed already.

        A1111 accepts a checkpoint by its short hash or sha256, alone or as the
        " [hash]" at the end of a title, so a title from another A1111 (another folder
        layout, another file name) still finds the same file here."""
        wanted = referenced_hash(reference)
        if wanted is None:
            return None
        for entry in entries:
            if entry.usable:
                sha256 = self.entry_hash(entry).sha256
                if sha256 is not None and sha256.startswith(wanted):
                    return entry
        return None

    def wait_idle(self, timeout: float) -> bool:
        """True once nothing is queued or being hashed (tests, benchmarks)."""
        with self._condition:
            return self._condition.wait_for(
                lambda: not self._queue and self._busy is None, timeout=timeout
            )

    # -- the worker ------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._condition:
                if not self._queue:
                    self._worker = None
                    self._busy = None
                    self._condition.notify_all()
                    return
                key, path = self._queue.popleft()
                self._busy = key
            self._hash_one(key, path)

    def _hash_one(self, key: _Key, path: Path) -> None:
        version, kind = key
        try:
            value = _COMPUTE[kind](path)
        except (OSError, ValueError) as exc:
            log.warning("Cannot hash %s: %s", path, exc)
            with self._condition:
                self._failed.add(key)
            return
        with self._condition:
            if FileVersion.of(path) == version:  # unchanged while it was read
                self._done[key] = value
            log.debug("Hashed %s (%s): %s", path, kind.value, value[:LORA_SHORT])


_HASH_REFERENCE = re.compile(r"(?:^|\[)\s*([0-9a-fA-F]{10}|[0-9a-fA-F]{64})\s*\]?\s*$")


def referenced_hash(reference: str) -> str | None:
    """The hash in a checkpoint reference ("0123456789", a sha256, "title [0123456789]")."""
    match = _HASH_REFERENCE.search(reference.strip())
    return match.group(1).lower() if match else None


def library_files(entries: Iterable[ModelEntry]) -> list[tuple[Path, HashKind]]:
    """The usable single-file entries of a scan, with the hash each one needs. A
    checkpoint assembled from split files is hashed by its transformer file (its
    `path`), the file Forge and ComfyUI name such a model by."""
    from kd_server.library import EntryKind, ModelFormat

    hashed = (ModelFormat.SAFETENSORS, ModelFormat.SPLIT)
    return [
        (entry.path, HashKind.LORA if entry.kind is EntryKind.LORA else HashKind.FILE)
        for entry in entries
        if entry.usable and entry.format in hashed and entry.path is not None
    ]
