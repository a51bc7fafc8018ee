"""Upscaler model files in the artist's model folders: where, which, usable or not.

Why: artists keep ESRGAN-family upscalers (4x-UltraSharp, RealESRGAN_x4plus, SwinIR,
...) where A1111 and ComfyUI look for them: A1111 in `models/ESRGAN`,
`models/RealESRGAN` and `models/SwinIR`, ComfyUI in `models/upscale_models`. Those
folders are read in place, next to our own `upscalers/`; nothing is copied.

Each file is described without loading its weights: tensor names and shapes (the
safetensors header; for a pickle, torch's weights-only unpickler on the meta device,
which builds no tensor data and runs no code) are handed to spandrel on the meta
device, which tells the architecture and the scale. A file that is not an image
upscaler, needs what this server lacks, or holds anything but tensors is listed
unusable with the reason.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Relative to a configured model folder, in scan order: ours, ComfyUI's (its
#: `models/` folder and its root), then A1111's (its `models/` folder and its root).
UPSCALER_SUBDIRS = (
    "upscalers",
    "upscale_models",
    "models/upscale_models",
    "ESRGAN",
    "RealESRGAN",
    "SwinIR",
    "models/ESRGAN",
    "models/RealESRGAN",
    "models/SwinIR",
)
SAFETENSORS = ".safetensors"
PICKLES = (".pth", ".pt", ".ckpt", ".bin")
#: The largest factor an upscaler may have (spandrel knows 1x..16x models).
MAX_SCALE = 8

PICKLE_WITH_CODE = (
    "This pickle file holds more than tensors (objects whose loading would run code), "
    "so the server does not open it. Use the .safetensors version of this upscaler, or "
    "convert a file you trust."
)


@dataclass(frozen=True)
class UpscalerFile:
    """One upscaler file as the library lists it."""

    name: str  # the file's path in its folder, `/` separated, without extension
    path: Path
    found_in: str  # the folder it was found in, relative to its model folder
    usable: bool
    reason: str | None = None
    scale: int | None = None  # how many times larger the model makes a picture
    architecture: str | None = None  # spandrel's name for it: ESRGAN, SwinIR, ...

    @property
    def is_pickle(self) -> bool:
        return self.path.suffix.lower() != SAFETENSORS


@dataclass(frozen=True)
class _Description:
    reason: str | None
    scale: int | None
    architecture: str | None


_cache: dict[tuple[str, int, int], _Description] = {}
_cache_lock = threading.Lock()


def upscaler_folders(folders: list[Path]) -> list[tuple[Path, str]]:
    """(folder, its path relative to the model folder) for each upscaler folder."""
    return [
        (folder / sub, sub)
        for folder in folders
        for sub in UPSCALER_SUBDIRS
        if (Path(folder) / sub).is_dir()
    ]


def find_upscalers(folders: list[Path]) -> list[UpscalerFile]:
    """Every upscaler-like file in the upscaler folders, usable or with the reason.
    Names are unique: a later file with a taken name gets ` (folder)` appended, so a
    .safetensors next to its .pth keeps the plain name (safetensors sort first)."""
    found: list[UpscalerFile] = []
    taken: set[str] = set()
    for folder, found_in in upscaler_folders(folders):
        for path in _model_files(folder):
            name = _unique(_name(path, folder), found_in, path, taken)
            taken.add(name)
            found.append(_examine(name, folder, found_in, path))
    return found


def _model_files(folder: Path) -> list[Path]:
    files = [
        path
        for path in folder.rglob("*")
        if not any(part.startswith(".") for part in path.relative_to(folder).parts)
        and path.name.lower().endswith((SAFETENSORS, *PICKLES))
    ]
    # safetensors before pickles of the same name, then by path
    return sorted(files, key=lambda p: (_name(p, folder).casefold(), _is_pickle(p), str(p)))


def _is_pickle(path: Path) -> bool:
    return not path.name.lower().endswith(SAFETENSORS)


def _name(path: Path, folder: Path) -> str:
    relative = path.relative_to(folder).as_posix()
    return relative.rsplit(".", 1)[0]


def _unique(name: str, found_in: str, path: Path, taken: set[str]) -> str:
    candidates = [name, f"{name} ({path.suffix.lower().lstrip('.')})", f"{name} ({found_in})"]
    candidates += [f"{name} ({found_in} {n})" for n in range(2, 1000)]
    return next(c for c in candidates if c not in taken)


def _examine(name: str, folder: Path, found_in: str, path: Path) -> UpscalerFile:
    if not _regular_inside(path, folder):
        reason = "Not a regular file inside its folder (a link elsewhere is not followed)."
        return UpscalerFile(name, path, found_in, False, reason)
    info = path.stat()
    key = (str(path.resolve()), info.st_size, info.st_mtime_ns)
    with _cache_lock:
        description = _cache.get(key)
    if description is None:
        description = describe(path)
        with _cache_lock:
            _cache[key] = description
    return UpscalerFile(
        name,
        path,
        found_in,
        description.reason is None,
        description.reason,
        description.scale,
        description.architecture,
    )


def describe(path: Path) -> _Description:
    """What spandrel makes of the file's tensor shapes, or why it cannot be used."""
    try:
        shapes = read_shapes(path)
    except UnsafePickle:
        return _Description(PICKLE_WITH_CODE, None, None)
    except ValueError as exc:  # not a safetensors file, or no state dict inside
        return _Description(f"The file cannot be read as a model: {exc}", None, None)
    except Exception as exc:  # a damaged or foreign file: listed, never fatal to a scan
        log.info("Upscaler %s is unreadable: %s", path, exc)
        return _Description(
            f"The file cannot be read as a model ({type(exc).__name__}).", None, None
        )
    return describe_shapes(shapes)


class UnsafePickle(Exception):
    """The pickle holds objects besides tensors and plain containers."""


def read_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, without reading weights (and without running any code)."""
    if not _is_pickle(path):
        from kd_server.library import HeaderError, read_safetensors_header

        try:
            return read_safetensors_header(path)
        except HeaderError as exc:
            raise ValueError(exc.detection.reason) from exc
    tensors = load_pickle(path, device="meta")
    return {key: tuple(value.shape) for key, value in tensors.items()}


def load_pickle(path: Path, device: str) -> dict[str, Any]:
    """A pickled state dict through torch's weights-only unpickler, which accepts
    tensors and plain containers only: a file that asks for anything else (a class, a
    function such as `os.system`) is refused before any of it runs."""
    import pickle

    import torch

    try:
        loaded = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafePickle(str(exc)) from exc
    return state_dict_of(loaded)


def state_dict_of(loaded: Any) -> dict[str, Any]:
    """The tensors of a loaded file: unwrapped from the containers trainers save
    (`params_ema`, `params`, `state_dict`, `model`), non-tensors dropped."""
    import torch

    for key in ("params_ema", "params", "state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
            break
    if not isinstance(loaded, dict):
        raise ValueError("the file holds no state dict")
    return {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}


def describe_shapes(shapes: dict[str, tuple[int, ...]]) -> _Description:
    """spandrel's reading of the shapes on the meta device (no memory, no weights)."""
    import torch

    from kd_server.upscale.spandrel_import import import_spandrel

    spandrel = import_spandrel()
    meta = {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}
    try:
        with torch.device("meta"):
            descriptor = spandrel.MAIN_REGISTRY.load(meta)
    except spandrel.UnsupportedModelError:
        return _Description(
            "Not an upscaler this server knows (spandrel does not recognise its tensors).",
            None,
            None,
        )
    except Exception as exc:
        return _Description(f"The model cannot be read ({type(exc).__name__}: {exc}).", None, None)
    return _Description(refusal(descriptor), int(descriptor.scale), descriptor.architecture.name)


def refusal(descriptor: Any) -> str | None:
    """Why a model spandrel recognised cannot serve as an upscaler here, or None."""
    from kd_server.upscale.spandrel_import import NEEDS_TORCHVISION, torchvision_available

    architecture = descriptor.architecture.name
    if str(descriptor.architecture.id) in NEEDS_TORCHVISION and not torchvision_available():
        return f"{architecture} models need torchvision, which this server's torch lacks."
    if descriptor.purpose not in ("SR", "Restoration"):
        return f"This is a {architecture} model for {descriptor.purpose}, not an upscaler."
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        return f"This {architecture} model does not work on RGB pictures."
    if not 1 <= descriptor.scale <= MAX_SCALE:
        return f"This model enlarges {descriptor.scale}x; at most {MAX_SCALE}x is supported."
    return None


def _regular_inside(path: Path, folder: Path) -> bool:
    try:
        return path.is_file() and path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False
