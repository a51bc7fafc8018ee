"""The torch build follows the machine's GPU, and flags override it."""

from pathlib import Path

from installer.platforms import System
from installer.torch_choice import TORCH_PIN, Backend, detect, plan

NOWHERE = Path("/nonexistent-rocm")


def _which(*present: str):
    return lambda name: f"/usr/bin/{name}" if name in present else None


def test_nvidia_smi_means_cuda() -> None:
    found = detect(System.LINUX, "x86_64", _which("nvidia-smi"), lambda cmd: 0, NOWHERE)
    assert found[0] is Backend.CUDA


def test_broken_nvidia_smi_falls_back_to_cpu() -> None:
    found = detect(System.LINUX, "x86_64", _which("nvidia-smi"), lambda cmd: 9, NOWHERE)
    assert found[0] is Backend.CPU


def test_rocm_and_apple_and_cpu() -> None:
    assert (
        detect(System.LINUX, "x86_64", _which("rocminfo"), lambda c: 0, NOWHERE)[0] is Backend.ROCM
    )
    assert detect(System.MACOS, "arm64", _which(), lambda c: 1, NOWHERE)[0] is Backend.MPS
    assert detect(System.LINUX, "x86_64", _which(), lambda c: 1, NOWHERE)[0] is Backend.CPU


def test_cpu_linux_uses_the_plain_pin() -> None:
    """Plain pin: on this kind of machine pip then takes the local +cpu wheel."""
    chosen = plan(System.LINUX, Backend.AUTO, detected=(Backend.CPU, "test"))
    assert chosen.pip_args() == [TORCH_PIN] and TORCH_PIN == "torch==2.13.0"


def test_rocm_and_windows_cuda_use_pytorch_index_and_flags_override() -> None:
    assert plan(System.LINUX, Backend.ROCM).index_url.endswith("/rocm6.4")
    assert plan(System.WINDOWS, Backend.CUDA).index_url.endswith("/cu128")
    assert plan(System.LINUX, Backend.CUDA).index_url is None
    custom = plan(System.LINUX, Backend.CPU, index_url="https://example.invalid/cpu")
    assert custom.pip_args() == [TORCH_PIN, "--index-url", "https://example.invalid/cpu"]
    assert "chosen with --torch" in custom.describe()
