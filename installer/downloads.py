"""Model downloads from the catalogue: resumable, verified, and invisible until verified.

A download streams into `<name>.safetensors.part` (the model library lists only
`*.safetensors`, so it never sees a partial or corrupt file), resumes with an HTTP
Range request after a cut connection or a re-run, and is renamed into place only
after its size and sha256 match the catalogue. The free space is checked first.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

from installer.checks import FreeSpace, disk_free, require_space
from installer.errors import InstallError

CHUNK = 1024 * 1024
SPACE_MARGIN = 64 * 1024 * 1024  # room left over after the download
ATTEMPTS = 4  # one try plus resumes after cut connections, per command
USER_AGENT = "krita-diffusers-installer/0.1"


@dataclass(frozen=True)
class Entry:
    """One catalogue model. `kind` is "checkpoint", "lora", a control model's kind
    (stored with the checkpoints, which the library lists by content) or "tokenizer"
    (the T5 tokenizer of Flux / SD 3.5: `tokenizer-t5/`, kd_server.t5_tokenizer)."""

    name: str
    filename: str
    url: str
    size: int
    sha256: str
    kind: str = "checkpoint"
    family: str = ""
    description: str = ""
    license: str = ""


def default_catalogue() -> Path:
    return Path(__file__).resolve().parent.parent / "resources" / "catalogue.json"


def load_catalogue(path: Path) -> dict[str, Entry]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InstallError(
            f"Cannot read the model catalogue {path}: {exc}.",
            "Use a complete checkout, or pass --catalogue with a valid catalogue file.",
        ) from exc
    entries = {}
    for item in data.get("models", []):
        entry = Entry(**item)
        entries[entry.name] = entry
    return entries


def find(catalogue: dict[str, Entry], name: str) -> Entry:
    if name in catalogue:
        return catalogue[name]
    known = ", ".join(sorted(catalogue)) or "(none)"
    raise InstallError(
        f"There is no model called {name!r} in the catalogue.",
        f"Pick one of: {known} (`python3 -m installer download --list` describes them).",
    )


#: Folders of the kinds that do not go to `checkpoints/`.
KIND_FOLDERS = {"lora": "loras", "tokenizer": "tokenizer-t5"}


def destination(models_dir: Path, entry: Entry) -> Path:
    """Our layout, which the server reads: `checkpoints/`, `loras/` and `tokenizer-t5/`
    (where kd_server.t5_tokenizer looks for the T5 tokenizer)."""
    folder = models_dir / KIND_FOLDERS.get(entry.kind, "checkpoints")
    return folder / entry.filename


class Progress:
    """A one-line bar on a terminal; a line per tenth otherwise (logs, CI)."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.label, self.total = label, max(total, 1)
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self.start_bytes: int | None = None
        self.last_tenth = -1

    def update(self, done: int) -> None:
        if self.start_bytes is None:
            self.start_bytes = done
        fraction = done / self.total
        if self.tty:
            elapsed = max(time.monotonic() - self.started, 1e-6)
            rate = (done - self.start_bytes) / elapsed / 1e6
            bar = "#" * int(fraction * 30)
            self.stream.write(
                f"\r  {self.label} [{bar:<30}] {fraction:6.1%} "
                f"{done / 1e9:.2f}/{self.total / 1e9:.2f} GB {rate:6.1f} MB/s"
            )
            self.stream.flush()
        elif int(fraction * 10) > self.last_tenth:
            self.last_tenth = int(fraction * 10)
            print(f"  {self.label}: {fraction:.0%}", file=self.stream, flush=True)

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


Opener = Callable[..., BinaryIO]


def _hash_file(path: Path, digest: hashlib._Hash) -> int:
    size = 0
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
            size += len(block)
    return size


def _open(entry: Entry, offset: int, opener: Opener, timeout: float):
    request = urllib.request.Request(entry.url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        return opener(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset >= entry.size:
            return None  # we already have every byte
        raise InstallError(
            f"Downloading {entry.name} failed: the server answered {exc.code} {exc.reason} "
            f"for {entry.url}.",
            "The catalogue entry may be out of date, or the site may need you to accept a "
            "licence in a browser first; try again later or download the file by hand.",
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InstallError(
            f"Cannot reach {urllib.parse.urlparse(entry.url).netloc} to download "
            f"{entry.name} ({reason}).",
            "Check the network connection (or proxy settings), then run the same command "
            "again: a partial download resumes where it stopped.",
        ) from exc


def _receive(
    entry: Entry, part: Path, digest: hashlib._Hash, have: int, opener: Opener,
    timeout: float, progress: Progress,
) -> tuple[int, hashlib._Hash]:  # fmt: skip
    """One HTTP request; returns how many bytes `part` then holds, and their hash."""
    response = _open(entry, have, opener, timeout)
    if response is None:
        return have, digest
    with response:
        if have and getattr(response, "status", 200) != 206:
            have, digest = 0, hashlib.sha256()  # the server ignored Range: start over
        mode = "ab" if have else "wb"
        with part.open(mode) as out:
            while block := response.read(CHUNK):
                try:
                    out.write(block)
                except OSError as exc:
                    raise InstallError(
                        f"Writing {part} failed ({exc.strerror}); the disk may be full.",
                        "Free some space and run the same command again to resume.",
                    ) from exc
                digest.update(block)
                have += len(block)
                progress.update(have)
                if have > entry.size:
                    break
    return have, digest


def download(
    entry: Entry,
    target: Path,
    *,
    free_space: FreeSpace = disk_free,
    opener: Opener = urllib.request.urlopen,
    timeout: float = 60.0,
    stream: TextIO | None = None,
    attempts: int = ATTEMPTS,
) -> bool:
    """Fetch `entry` to `target`; True if downloaded, False if it was already there."""
    if target.is_file():
        if target.stat().st_size == entry.size:
            return False
        raise InstallError(  # never replace someone's model that happens to share the name
            f"{target} already exists and is not {entry.name} (its size differs from the "
            "catalogue's); it was left as it is.",
            "Move or rename that file if you want this download, or skip it.",
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    have = _hash_file(part, digest) if part.is_file() else 0
    if have > entry.size:
        part.unlink()
        have, digest = 0, hashlib.sha256()
    require_space(target.parent, entry.size - have + SPACE_MARGIN, entry.name, free_space)
    progress = Progress(entry.name, entry.size, stream)
    progress.update(have)
    problem: BaseException | None = None
    for _ in range(attempts):
        try:
            have, digest = _receive(entry, part, digest, have, opener, timeout, progress)
        except (http.client.HTTPException, ConnectionError, TimeoutError) as exc:
            problem = exc
            digest = hashlib.sha256()
            have = _hash_file(part, digest) if part.is_file() else 0
        if have >= entry.size:
            break
    progress.finish()
    if have < entry.size:  # keep the .part: the next run resumes from it
        why = f" ({problem})" if problem else ""
        raise InstallError(
            f"The download of {entry.name} was interrupted{why} after "
            f"{have / 1e6:.1f} of {entry.size / 1e6:.1f} MB.",
            "Run the same command again: it resumes where it stopped.",
        )
    return _finish(entry, part, target, have, digest.hexdigest())


def _finish(entry: Entry, part: Path, target: Path, have: int, sha: str) -> bool:
    if have != entry.size or sha != entry.sha256.lower():
        part.unlink(missing_ok=True)  # corrupt: resuming it would not help
        found = f"{have} bytes with sha256 {sha}"
        raise InstallError(
            f"The download of {entry.name} does not match the catalogue "
            f"(expected {entry.size} bytes with sha256 {entry.sha256}, got {found}); "
            "it was deleted and nothing was installed.",
            "Run the command again; if it fails the same way, the file on the server changed "
            "and the catalogue needs updating (please report it).",
        )
    os.replace(part, target)
    return True
