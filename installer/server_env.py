"""The server's own virtual environment: created once, reinstalled only when needed.

The server is installed from this checkout (`pip install <copy of the sources>`,
non-editable, so the checkout can move or be deleted afterwards). A stamp in the venv
records a fingerprint of the sources and the torch choice; a re-run with the same
fingerprint and an importable server skips pip entirely, which keeps re-runs quick.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from installer.errors import InstallError
from installer.pip_progress import PipOutput, log_tail, run_pip
from installer.platforms import System, venv_python, venv_script
from installer.torch_choice import TorchPlan

STAMP = "krita-diffusers-install.json"
SERVER_SCRIPT = "krita-diffusers-server"
#: Upscaler architectures (docs/upscale.md); the same pin as setup.py's SPANDREL_PIN.
SPANDREL_PIN = "spandrel==0.4.2"
SOURCES = (
    "setup.py",
    "setup.cfg",
    "pyproject.toml",
    "MANIFEST.in",
    "backend/kd_server",
    "resources",
)
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")


@dataclass(frozen=True)
class ServerEnv:
    venv: Path
    system: System

    @property
    def python(self) -> Path:
        return venv_python(self.venv, self.system)

    @property
    def script(self) -> Path:
        return venv_script(self.venv, SERVER_SCRIPT, self.system)

    @property
    def stamp(self) -> Path:
        return self.venv / STAMP

    def works(self) -> bool:
        if not self.python.exists():
            return False
        probe = subprocess.run([str(self.python), "-c", "import sys"], capture_output=True)
        return probe.returncode == 0


def _source_files(repo: Path) -> list[Path]:
    files: list[Path] = []
    for rel in SOURCES:
        path = repo / rel
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [
                p for p in path.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
            ]  # fmt: skip
    return sorted(files)


def fingerprint(repo: Path, plan: TorchPlan, python_version: tuple[int, int]) -> str:
    digest = hashlib.sha256(f"{plan.describe()}|{python_version}".encode())
    for path in _source_files(repo):
        digest.update(path.relative_to(repo).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def is_current(env: ServerEnv, stamp: str) -> bool:
    """Installed from the same sources with the same torch, and the server imports."""
    if not env.stamp.is_file() or not env.works():
        return False
    try:
        recorded = json.loads(env.stamp.read_text(encoding="utf-8")).get("fingerprint")
    except ValueError:
        return False
    if recorded != stamp or not env.script.exists():
        return False
    probe = subprocess.run([str(env.python), "-c", "import kd_server"], capture_output=True)
    return probe.returncode == 0


def create_venv(env: ServerEnv, base_python: str) -> None:
    """A fresh venv at env.venv; refuses to touch a folder that is not a venv."""
    if env.venv.exists() and any(env.venv.iterdir()):
        if not env.stamp.is_file():
            raise InstallError(
                f"{env.venv} exists, is not a working virtual environment and was not made "
                "by this installer; it will not write into it.",
                "Pass --venv with a new or empty folder, or move that folder away.",
            )
        shutil.rmtree(env.venv)  # a broken venv of ours: rebuild it
    result = subprocess.run(
        [base_python, "-m", "venv", str(env.venv)], capture_output=True, text=True
    )
    if result.returncode != 0 or not env.python.exists():
        hint = "Pass --python with another Python 3.10+ interpreter."
        if "ensurepip" in result.stderr or "venv" in result.stderr:
            hint = (
                "On Debian/Ubuntu install the venv module: `sudo apt install python3-venv`. " + hint
            )
        raise InstallError(
            f"Could not create the server's virtual environment at {env.venv}:\n"
            + result.stderr.strip()[-800:],
            hint,
        )


@dataclass(frozen=True)
class PipSettings:
    """How pip's output is shown (compact progress, quiet or verbose) and where it is logged."""

    output: PipOutput
    log: Path


def _pip(env: ServerEnv, args: list[str], what: str, pip: PipSettings) -> None:
    cmd = [str(env.python), "-m", "pip", "install", "--disable-pip-version-check", *args]
    if pip.output is not PipOutput.VERBOSE:
        cmd.append("--progress-bar=off")  # its bar is noise in a log file
    code = run_pip(cmd, what, pip.log, pip.output)
    if code != 0:
        output = (
            "(see pip's messages above)"
            if pip.output is PipOutput.VERBOSE
            else f"{log_tail(pip.log)}\n(pip's full output: {pip.log})"
        )
        raise InstallError(
            f"pip failed while installing {what}:\n{output}",
            "Check the network connection and free disk space, then run the installer "
            "again (it resumes: finished steps are skipped).",
        )


def stage_sources(repo: Path, out: Path) -> Path:
    """Copy only what setup.py needs, so building never writes into the checkout."""
    if not (repo / "setup.py").is_file() or not (repo / "backend" / "kd_server").is_dir():
        raise InstallError(
            f"{repo} does not look like a Krita Diffusers checkout (no setup.py or backend/).",
            "Run the installer from the repository root: `python3 -m installer`.",
        )
    for rel in SOURCES:
        src = repo / rel
        if src.is_file():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, out / rel)
        elif src.is_dir():
            shutil.copytree(src, out / rel, ignore=_SKIP)
    return out


def install(env: ServerEnv, repo: Path, plan: TorchPlan, stamp: str, pip: PipSettings) -> None:
    """torch first (with the plan's index), then the server from a copy of the sources.
    pip's log starts afresh for each install, so it holds exactly this run."""
    if pip.output is not PipOutput.VERBOSE:
        pip.log.parent.mkdir(parents=True, exist_ok=True)
        pip.log.write_text("", encoding="utf-8")
    _pip(env, plan.pip_args(), f"{plan.requirement} ({plan.backend.value})", pip)
    with tempfile.TemporaryDirectory(prefix="kd-server-src-") as temp:
        staged = stage_sources(repo, Path(temp) / "src")
        _pip(env, [str(staged)], "the Krita Diffusers server", pip)
    # Upscaler architectures, without the torchvision spandrel declares (pip would
    # fetch one built for another torch); GPU plans installed torchvision with torch.
    _pip(env, ["--no-deps", SPANDREL_PIN], SPANDREL_PIN, pip)
    env.stamp.write_text(
        json.dumps({"fingerprint": stamp, "torch": plan.describe()}, indent=2) + "\n",
        encoding="utf-8",
    )
