"""Catalogue downloads against a loopback server: verified, resumable, never half-visible."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from installer import downloads
from installer.downloads import Entry
from installer.errors import InstallError

from .range_server import RangeServer

ROOT = Path(__file__).resolve().parents[2]
PAYLOAD = os.urandom(3 * 1024 * 1024 + 12345)  # a few chunks, not a whole number of them


def _entry(server: RangeServer, data: bytes = PAYLOAD, sha: str | None = None) -> Entry:
    server.behaviour.files["/model.safetensors"] = data
    return Entry(
        name="test-model",
        filename="model.safetensors",
        url=f"{server.base}/model.safetensors",
        size=len(data),
        sha256=sha or hashlib.sha256(data).hexdigest(),
    )


def _quiet() -> io.StringIO:
    return io.StringIO()


def test_success_renames_into_place_after_checking(tmp_path: Path) -> None:
    with RangeServer() as server:
        entry = _entry(server)
        target = tmp_path / "checkpoints" / entry.filename
        stream = _quiet()
        assert downloads.download(entry, target, stream=stream) is True
        assert target.read_bytes() == PAYLOAD
        assert not target.with_name(target.name + ".part").exists()
        assert "100%" in stream.getvalue()  # the progress reached the end
        assert downloads.download(entry, target, stream=_quiet()) is False  # already there
        assert server.behaviour.ranges_seen == [None]


def test_resumes_after_a_cut_connection(tmp_path: Path) -> None:
    with RangeServer() as server:
        entry = _entry(server)
        target = tmp_path / entry.filename
        server.behaviour.cut_after = 1024 * 1024 + 7
        assert downloads.download(entry, target, stream=_quiet()) is True
        assert target.read_bytes() == PAYLOAD
        assert server.behaviour.ranges_seen == [None, f"bytes={1024 * 1024 + 7}-"]


def test_a_rerun_resumes_a_part_left_by_an_earlier_run(tmp_path: Path) -> None:
    with RangeServer() as server:
        entry = _entry(server)
        target = tmp_path / entry.filename
        server.behaviour.cut_after = 5000
        with pytest.raises(InstallError, match="interrupted"):
            downloads.download(entry, target, stream=_quiet(), attempts=1)
        part = target.with_name(target.name + ".part")
        assert part.stat().st_size == 5000 and not target.exists()
        assert downloads.download(entry, target, stream=_quiet()) is True
        assert target.read_bytes() == PAYLOAD
        assert server.behaviour.ranges_seen[-1] == "bytes=5000-"


def test_checksum_mismatch_leaves_nothing_the_library_would_load(tmp_path: Path) -> None:
    with RangeServer() as server:
        entry = _entry(server, sha="0" * 64)
        target = tmp_path / "checkpoints" / entry.filename
        with pytest.raises(InstallError, match="does not match the catalogue") as caught:
            downloads.download(entry, target, stream=_quiet())
        assert "nothing was installed" in str(caught.value)
        assert list(target.parent.iterdir()) == []


def test_partial_download_is_invisible_to_the_model_library(tmp_path: Path) -> None:
    from kd_server import library

    with RangeServer() as server:
        entry = _entry(server)
        target = tmp_path / "checkpoints" / entry.filename
        server.behaviour.cut_after = 4096
        with pytest.raises(InstallError):
            downloads.download(entry, target, stream=_quiet(), attempts=1)
    assert target.with_name(target.name + ".part").exists()
    scanned = library.ModelLibrary([tmp_path])
    names = [entry.name for entry in scanned.checkpoints()]
    assert not any("model" in name for name in names), names


def test_404_is_a_clear_error(tmp_path: Path) -> None:
    with RangeServer() as server:
        entry = _entry(server)
        missing = Entry(**{**entry.__dict__, "url": f"{server.base}/gone.safetensors"})
        with pytest.raises(InstallError, match="404") as caught:
            downloads.download(missing, tmp_path / entry.filename, stream=_quiet())
    assert caught.value.fix
    assert list(tmp_path.iterdir()) == []


def test_no_network_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    entry = Entry("m", "m.safetensors", f"http://127.0.0.1:{port}/m.safetensors", 10, "0" * 64)
    with pytest.raises(InstallError, match="Cannot reach") as caught:
        downloads.download(entry, tmp_path / entry.filename, stream=_quiet())
    assert "network" in caught.value.fix


def test_not_enough_disk_is_refused_before_any_byte(tmp_path: Path) -> None:
    with RangeServer() as server:
        entry = _entry(server)
        target = tmp_path / entry.filename
        with pytest.raises(InstallError, match="Not enough disk space"):
            downloads.download(entry, target, stream=_quiet(), free_space=lambda p: 1024)
        assert server.behaviour.ranges_seen == []
    assert not target.exists() and not target.with_name(target.name + ".part").exists()


def test_catalogue_entries_are_complete() -> None:
    catalogue = downloads.load_catalogue(downloads.default_catalogue())
    assert catalogue
    for entry in catalogue.values():
        suffix = ".json" if entry.kind == "tokenizer" else ".safetensors"
        assert entry.url.startswith("https://") and entry.filename.endswith(suffix)
        assert len(entry.sha256) == 64 and int(entry.sha256, 16) >= 0 and entry.size > 0


def test_the_t5_tokenizer_goes_where_the_server_looks(tmp_path: Path) -> None:
    """Flux / SD 3.5's T5 tokenizer: Google's tokenizer.json pinned by revision, into
    tokenizer-t5/ of the models folder (kd_server.t5_tokenizer searches there)."""
    entry = downloads.find(downloads.load_catalogue(downloads.default_catalogue()), "t5-tokenizer")
    assert "/resolve/3db67ab1af984cf10548a73467f0e5bca2aaaeb2/" in entry.url
    assert downloads.destination(tmp_path, entry) == tmp_path / "tokenizer-t5" / "tokenizer.json"
    lora = Entry("l", "l.safetensors", "https://x/l", 1, "0" * 64, kind="lora")
    assert downloads.destination(tmp_path, lora) == tmp_path / "loras" / "l.safetensors"
    control = Entry("c", "c.safetensors", "https://x/c", 1, "0" * 64, kind="controlnet")
    assert downloads.destination(tmp_path, control) == tmp_path / "checkpoints" / "c.safetensors"


def test_cli_download_reports_errors_without_traceback(tmp_path: Path) -> None:
    with RangeServer() as server:
        entry = _entry(server, sha="1" * 64)
        catalogue = tmp_path / "catalogue.json"
        catalogue.write_text(json.dumps({"models": [entry.__dict__]}), encoding="utf-8")
        cmd = [sys.executable, "-m", "installer", "download", "test-model"]
        cmd += ["--catalogue", str(catalogue), "--models-dir", str(tmp_path / "models")]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "Error:" in done.stderr and "What to do:" in done.stderr
    assert "Traceback" not in done.stderr
    assert list((tmp_path / "models" / "checkpoints").iterdir()) == []


def test_a_different_file_of_the_same_name_is_never_overwritten(tmp_path: Path) -> None:
    """--models-dir may be a folder of the user's own models: a file of that name that
    is not the catalogue's (another size) is theirs, and the download stops."""
    with RangeServer() as server:
        entry = _entry(server)
        target = tmp_path / "checkpoints" / entry.filename
        target.parent.mkdir()
        target.write_bytes(b"the user's own model")
        with pytest.raises(InstallError, match="already exists"):
            downloads.download(entry, target, stream=_quiet())
        assert target.read_bytes() == b"the user's own model"
        assert server.behaviour.ranges_seen == []
