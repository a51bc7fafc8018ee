"""Upscaler files: found in every folder A1111 and ComfyUI keep them in, described
from their tensors (spandrel on the meta device), pickles opened only by torch's
weights-only unpickler, and spandrel imported without ever leaving a placeholder
torchvision behind."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from kd_server.devices import choose_device
from kd_server.generation import EngineError, EngineErrorCode
from kd_server.library import ModelLibrary
from kd_server.upscale.files import PICKLE_WITH_CODE, UPSCALER_SUBDIRS, find_upscalers
from kd_server.upscale.models import UpscalerRuntime
from kd_server.upscale.spandrel_import import import_spandrel, torchvision_available
from modelkit.upscalers import write_esrgan, write_malicious_pickle


@pytest.mark.parametrize("folder", UPSCALER_SUBDIRS)
def test_an_upscaler_is_found_in_each_folder_a1111_and_comfyui_use(tmp_path, folder) -> None:
    write_esrgan(tmp_path / folder / "4x-tiny.safetensors")
    write_esrgan(tmp_path / folder / "sub" / "2x-tiny.pth", scale=2)
    found = {u.name: u for u in ModelLibrary([tmp_path]).upscalers()}
    assert set(found) == {"4x-tiny", "sub/2x-tiny"}
    four, two = found["4x-tiny"], found["sub/2x-tiny"]
    assert (four.usable, four.scale, four.architecture, four.found_in) == (
        True,
        4,
        "ESRGAN",
        folder,
    )
    assert (two.usable, two.scale, two.reason) == (True, 2, None)


def test_a_safetensors_file_keeps_the_name_its_pickle_twin_would_take(tmp_path) -> None:
    write_esrgan(tmp_path / "models/ESRGAN/4x-tiny.pth")
    write_esrgan(tmp_path / "models/ESRGAN/4x-tiny.safetensors")
    write_esrgan(tmp_path / "upscale_models/4x-tiny.safetensors")
    names = {u.name: (u.path.suffix, u.found_in) for u in find_upscalers([tmp_path])}
    assert names == {
        "4x-tiny": (".safetensors", "upscale_models"),
        "4x-tiny (safetensors)": (".safetensors", "models/ESRGAN"),
        "4x-tiny (pth)": (".pth", "models/ESRGAN"),
    }


def test_a_malicious_pickle_never_runs_and_the_artist_is_told_why(tmp_path) -> None:
    created = tmp_path / "pwned"
    write_malicious_pickle(tmp_path / "models/ESRGAN/evil.pth", created)
    library = ModelLibrary([tmp_path])
    (entry,) = library.upscalers()
    assert not created.exists()
    assert not entry.usable and entry.reason == PICKLE_WITH_CODE
    with pytest.raises(EngineError) as refused:
        library.get_upscaler("evil")
    assert refused.value.code is EngineErrorCode.UPSCALER_UNUSABLE
    assert "holds more than tensors" in refused.value.message
    # Loading it anyway (as if the scan had missed it) is refused the same way.
    usable_twin = entry.__class__(**{**entry.__dict__, "usable": True, "reason": None})
    with pytest.raises(EngineError) as loading:
        UpscalerRuntime(choose_device("cpu")).load(usable_twin)
    assert loading.value.code is EngineErrorCode.UPSCALER_UNUSABLE
    assert not created.exists()


def test_files_that_are_not_upscalers_are_listed_with_the_reason(tmp_path) -> None:
    folder = tmp_path / "upscalers"
    folder.mkdir()
    (folder / "broken.safetensors").write_bytes(b"not a model")
    import torch
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(3, 3)}, str(folder / "other.safetensors"))
    found = {u.name: u for u in find_upscalers([tmp_path])}
    assert not found["broken"].usable and "cannot be read" in str(found["broken"].reason)
    assert not found["other"].usable and "spandrel" in str(found["other"].reason)


def test_an_unknown_upscaler_name_suggests_the_close_one(tmp_path) -> None:
    write_esrgan(tmp_path / "upscalers/4x-tiny.safetensors")
    with pytest.raises(EngineError) as missing:
        ModelLibrary([tmp_path]).get_upscaler("4x-tiy")
    assert missing.value.code is EngineErrorCode.UPSCALER_NOT_FOUND
    assert "Did you mean '4x-tiny'?" in missing.value.message


def test_a_folder_of_only_upscalers_lists_no_checkpoints(tmp_path) -> None:
    """A plain folder is scanned for every model kind; its upscaler folders are not
    mistaken for checkpoints."""
    write_esrgan(tmp_path / "upscale_models/4x-tiny.safetensors")
    library = ModelLibrary([tmp_path], include_embedded=False)
    assert library.checkpoints() == []
    assert [u.name for u in library.upscalers()] == ["4x-tiny"]


def test_spandrel_leaves_no_placeholder_torchvision_behind() -> None:
    spandrel = import_spandrel()
    assert "ESRGAN" in spandrel.MAIN_REGISTRY
    if not torchvision_available():
        assert not any(name.split(".")[0] == "torchvision" for name in sys.modules)
        import importlib.util

        assert importlib.util.find_spec("torchvision") is None


def test_the_tiny_upscalers_load_as_esrgan_through_the_real_path(tmp_path: Path) -> None:
    write_esrgan(tmp_path / "upscalers/4x.safetensors")
    write_esrgan(tmp_path / "upscalers/2x.pth", scale=2)
    runtime = UpscalerRuntime(choose_device("cpu"))
    for entry in find_upscalers([tmp_path]):
        model = runtime.load(entry)
        assert (model.scale, model.descriptor.architecture.name) == (entry.scale, "ESRGAN")
