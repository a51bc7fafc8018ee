"""Where the engine runs and in which precision, and how it recovers from running out
of memory.

CUDA and MPS run in fp16 (half the memory, tensor cores); the CPU runs fp32 because
fp16 on a CPU is ~35x slower. Attention uses PyTorch's SDPA, which diffusers picks by
default on torch 2.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DeviceChoice:
    device: torch.device
    dtype: torch.dtype

    @property
    def name(self) -> str:
        if self.device.type == "cuda":
            return f"cuda ({torch.cuda.get_device_name(self.device)})"
        return self.device.type

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


class DeviceError(ValueError):
    """The asked-for device is not available on this machine."""


def choose_device(wanted: str = "auto") -> DeviceChoice:
    wanted = (wanted or "auto").strip().lower()
    has_mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if wanted == "auto":
        if torch.cuda.is_available():
            wanted = "cuda"
        elif has_mps:
            wanted = "mps"
        else:
            wanted = "cpu"
    if wanted.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError("CUDA was asked for but no CUDA GPU is visible; use --device cpu.")
        return DeviceChoice(torch.device(wanted), torch.float16)
    if wanted == "mps":
        if not has_mps:
            raise DeviceError("Apple MPS was asked for but is not available; use --device cpu.")
        return DeviceChoice(torch.device("mps"), torch.float16)
    if wanted == "cpu":
        return DeviceChoice(torch.device("cpu"), torch.float32)
    raise DeviceError(f"Unknown device '{wanted}': use auto, cuda, cuda:N, mps or cpu.")


def is_out_of_memory(error: BaseException) -> bool:
    """torch raises OutOfMemoryError on CUDA; MPS and some allocators raise RuntimeError."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def free_memory() -> None:
    """Give cached blocks back after a failed job so the next one starts clean."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        torch.mps.empty_cache()
