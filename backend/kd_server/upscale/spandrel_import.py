"""Import spandrel on a machine without a working torchvision.

Why: spandrel (which reads ESRGAN, SwinIR, HAT... files) imports torchvision when it
is imported, but only for two architectures that are not upscalers (LaMa, an
inpainter, and RestoreFormer, a face restorer). On a CPU-only machine torchvision
often cannot be installed (PyPI's wheel is built against CUDA and fails to import
there), and a broken torchvision breaks transformers and diffusers too. So when
torchvision cannot be imported, placeholder modules stand in for it while spandrel
is imported and are removed from `sys.modules` right after: nothing else ever sees
a fake torchvision. Files of the two architectures that would call it are refused by
name (`NEEDS_TORCHVISION`). With a real torchvision (the installer puts one next to
a GPU torch) nothing is replaced.
"""

from __future__ import annotations

import importlib
import sys
import threading
import types
from typing import Any

#: spandrel architectures whose code calls torchvision (refused without it).
NEEDS_TORCHVISION = frozenset({"LaMa", "RestoreFormer"})

#: The modules spandrel imports from torchvision (package, subpackage, module).
_PLACEHOLDERS = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")

_lock = threading.Lock()
_state: dict[str, Any] = {}


class TorchvisionMissing(RuntimeError):
    """Raised by a placeholder function if spandrel ever calls torchvision."""


def _missing(*_args: Any, **_kwargs: Any) -> Any:
    raise TorchvisionMissing(
        "This model needs torchvision, which is not installed with this server's torch."
    )


def _placeholder(name: str) -> types.ModuleType:
    module = types.ModuleType(name, "Placeholder: torchvision is not importable here.")
    module.__path__ = []  # a package, so `torchvision.transforms` can be imported from it

    def attribute(attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _missing  # InterpolationMode, rotate, normalize: never called for upscalers

    module.__getattr__ = attribute  # type: ignore[method-assign]
    return module


def torchvision_available() -> bool:
    """Whether the real torchvision imports (a CUDA-only wheel on a CPU torch does not)."""
    if "torchvision_available" not in _state:
        try:
            importlib.import_module("torchvision")
            _state["torchvision_available"] = True
        except Exception:  # ImportError, or RuntimeError from a wheel of another build
            for name in [n for n in sys.modules if n.split(".")[0] == "torchvision"]:
                del sys.modules[name]  # a half-imported broken torchvision leaves nothing
            _state["torchvision_available"] = False
    return bool(_state["torchvision_available"])


def import_spandrel() -> Any:
    """The `spandrel` module, imported once; see the module's docstring."""
    with _lock:
        if "spandrel" in _state:
            return _state["spandrel"]
        if torchvision_available():
            _state["spandrel"] = importlib.import_module("spandrel")
            return _state["spandrel"]
        placeholders = {name: _placeholder(name) for name in _PLACEHOLDERS}
        sys.modules.update(placeholders)
        try:
            _state["spandrel"] = importlib.import_module("spandrel")
        finally:
            for name, module in placeholders.items():
                if sys.modules.get(name) is module:
                    del sys.modules[name]
        return _state["spandrel"]
