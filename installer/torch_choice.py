"""Which torch build to install: CUDA, ROCm, Apple MPS or CPU.

The server pins torch==2.13.0 (setup.py). The pin alone is right for most machines:
PyPI's Linux wheel is the CUDA build, macOS's wheel has MPS, and on a CPU machine of
the project's kind pip takes the local `+cpu` wheel. ROCm and CUDA on Windows need
PyTorch's own package index; any choice can be overridden with --torch and
--torch-index-url. Torch is installed first, with that index, so the later
`pip install <server>` finds the pin already satisfied and keeps it.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from installer.platforms import System

TORCH_PIN = "torch==2.13.0"
PYTORCH_INDEX = "https://download.pytorch.org/whl"
GB = 1024**3


class Backend(Enum):
    AUTO = "auto"
    CUDA = "cuda"
    ROCM = "rocm"
    MPS = "mps"
    CPU = "cpu"


@dataclass(frozen=True)
class TorchPlan:
    backend: Backend
    requirement: str
    index_url: str | None  # None: the user's usual pip configuration (PyPI, local wheels)
    reason: str
    venv_bytes: int  # rough size of the whole server venv with this build
    #: torchvision from the same index, so pip picks the build that matches this torch:
    #: spandrel (upscalers) imports it. CPU installs go without: PyPI's torchvision is
    #: CUDA-linked and fails to import next to a CPU torch (docs/upscale.md).
    with_torchvision: bool = False

    def pip_args(self) -> list[str]:
        args = [self.requirement]
        if self.with_torchvision:
            args.append("torchvision")
        if self.index_url:
            args += ["--index-url", self.index_url]
        return args

    def describe(self) -> str:
        where = f" from {self.index_url}" if self.index_url else ""
        return f"{self.requirement} ({self.backend.value}: {self.reason}){where}"


Which = Callable[[str], str | None]
Runner = Callable[[list[str]], int]


def _run_quietly(cmd: list[str]) -> int:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=20).returncode
    except (OSError, subprocess.TimeoutExpired):
        return 1


def detect(
    system: System,
    machine: str | None = None,
    which: Which = shutil.which,
    run: Runner = _run_quietly,
    rocm_root: Path = Path("/opt/rocm"),
) -> tuple[Backend, str]:
    """The best backend for this machine and why (a working nvidia-smi means CUDA)."""
    machine = (machine or platform.machine()).lower()
    if system is System.MACOS:
        if machine in {"arm64", "aarch64"}:
            return Backend.MPS, "Apple silicon"
        return Backend.CPU, "Intel Mac (no MPS)"
    if which("nvidia-smi") and run(["nvidia-smi", "-L"]) == 0:
        return Backend.CUDA, "nvidia-smi found an NVIDIA GPU"
    has_rocm = system is System.LINUX and (which("rocminfo") or rocm_root.is_dir())
    if has_rocm and (which("rocminfo") is None or run(["rocminfo"]) == 0):
        return Backend.ROCM, "ROCm is installed"
    return Backend.CPU, "no NVIDIA, AMD ROCm or Apple GPU found"


def plan(
    system: System,
    requested: Backend = Backend.AUTO,
    index_url: str | None = None,
    detected: tuple[Backend, str] | None = None,
) -> TorchPlan:
    """A TorchPlan for `requested` (AUTO: detect); `index_url` overrides the index."""
    if requested is Backend.AUTO:
        backend, reason = detected or detect(system)
    else:
        backend, reason = requested, "chosen with --torch"
    default_index: str | None = None
    size = 2 * GB
    if backend is Backend.CUDA:
        size = 7 * GB
        if system is System.WINDOWS:
            default_index = f"{PYTORCH_INDEX}/cu128"
    elif backend is Backend.ROCM:
        size = 12 * GB
        default_index = f"{PYTORCH_INDEX}/rocm6.4"
    gpu = backend in (Backend.CUDA, Backend.ROCM, Backend.MPS)
    return TorchPlan(backend, TORCH_PIN, index_url or default_index, reason, size, gpu)
