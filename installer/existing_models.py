"""Finds model folders of A1111 and ComfyUI installs so artists never download twice.

The server's model library reads those layouts in place (A1111: models/Stable-diffusion
and models/Lora; ComfyUI: models/checkpoints and models/loras), so the installer only
has to put each install's root folder into the settings' `model_dirs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path


class Kind(Enum):
    A1111 = "AUTOMATIC1111 / Forge"
    COMFYUI = "ComfyUI"


# Where these tools are usually cloned or unpacked, relative to the home folder.
CANDIDATES: tuple[str, ...] = (
    "stable-diffusion-webui",
    "stable-diffusion-webui-forge",
    "stable-diffusion-webui-reForge",
    "sd.webui/webui",
    "webui_forge/webui",
    "ComfyUI",
    "comfyui",
    "ComfyUI_windows_portable/ComfyUI",
    "Documents/ComfyUI",
    "src/stable-diffusion-webui",
    "src/ComfyUI",
)

MARKERS: dict[Kind, str] = {
    Kind.A1111: "models/Stable-diffusion",
    Kind.COMFYUI: "models/checkpoints",
}


@dataclass(frozen=True)
class Found:
    kind: Kind
    root: Path

    def describe(self) -> str:
        return f"{self.kind.value} at {self.root}"


def classify(root: Path) -> Kind | None:
    for kind, marker in MARKERS.items():
        if (root / marker).is_dir():
            return kind
    return None


def detect(home: Path, extra_roots: tuple[Path, ...] = ()) -> list[Found]:
    """Existing installs under `home` (and `extra_roots`), each root once."""
    found: list[Found] = []
    seen: set[Path] = set()
    for root in [home / rel for rel in CANDIDATES] + list(extra_roots):
        try:
            resolved = root.resolve()
        except OSError:
            continue
        if resolved in seen or not root.is_dir():
            continue
        if kind := classify(root):
            seen.add(resolved)
            found.append(Found(kind, root))
    return found
