"""Builds the Krita plugin with its bundled libraries, as a folder or an importable .zip.

Krita's embedded Python has no pip and no requests/websockets, so both (pure-Python
wheels only, so one build serves every Krita's Python 3.10+) go into
`krita_diffusers/vendor/`, which the plugin puts on sys.path. The zip has the layout
Krita's "Tools > Scripts > Import Python Plugin from File" expects: the `.desktop`
file at the root beside the package folder, with explicit folder entries (the
importer finds the package by its `krita_diffusers/` entry).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from installer.errors import InstallError

PLUGIN = "krita_diffusers"
VENDOR_REQUIREMENTS = ("requests>=2.31", "websockets>=12")
# Pure-Python wheels for the oldest Python a Krita ships (5.2 on Windows/macOS: 3.10).
PURE_WHEELS = (
    "--platform", "any", "--implementation", "py", "--abi", "none",
    "--python-version", "3.10", "--only-binary=:all:",
)  # fmt: skip
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "vendor", ".pytest_cache")
_ZIP_TIME = (2024, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class PluginSource:
    desktop: Path
    package: Path

    @classmethod
    def in_repo(cls, repo: Path) -> PluginSource:
        desktop = repo / "krita_plugin" / f"{PLUGIN}.desktop"
        package = repo / "krita_plugin" / PLUGIN
        if not desktop.is_file() or not (package / "__init__.py").is_file():
            raise InstallError(
                f"The Krita plugin's files are missing from {repo / 'krita_plugin'} "
                f"(expected {desktop.name} and {PLUGIN}/__init__.py).",
                "Run the installer from a complete checkout of Krita Diffusers "
                "(git clone, or re-download the source archive).",
            )
        return cls(desktop, package)


def vendor_key() -> str:
    text = "\n".join((*VENDOR_REQUIREMENTS, *PURE_WHEELS))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _has_pip(python: Path | str) -> bool:
    try:
        probe = subprocess.run([str(python), "-m", "pip", "--version"], capture_output=True)
    except OSError:
        return False
    return probe.returncode == 0


def pick_pip_python(candidates: list[Path | str]) -> Path | str:
    for python in candidates:
        if _has_pip(python):
            return python
    raise InstallError(
        "No pip was found to fetch the plugin's libraries (requests, websockets).",
        "Install pip for this Python (Debian/Ubuntu: `sudo apt install python3-pip`), "
        "or run the full install without --skip-server: the server's venv brings its own pip.",
    )


def vendor_libraries(cache: Path, pythons: list[Path | str]) -> Path:
    """The vendored libraries, fetched once into `cache` (with the first of `pythons`
    that has pip) and reused by later runs without starting pip at all."""
    target = cache / f"vendor-{vendor_key()}"
    if (target / ".complete").is_file():
        return target
    python = pick_pip_python(pythons)
    cache.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix="vendor-", dir=cache))
    cmd = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    cmd += ["--no-warn-script-location", "--target", str(temp), *PURE_WHEELS]
    result = subprocess.run([*cmd, *VENDOR_REQUIREMENTS], capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(temp, ignore_errors=True)
        raise InstallError(
            "pip could not fetch the plugin's libraries (requests, websockets):\n"
            + result.stderr.strip()[-1500:],
            "Check the network connection (PyPI must be reachable once), then run the "
            "installer again.",
        )
    for junk in ("bin", "__pycache__"):
        shutil.rmtree(temp / junk, ignore_errors=True)
    (temp / ".complete").write_text("\n".join(VENDOR_REQUIREMENTS) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    temp.rename(target)
    return target


def stage(source: PluginSource, vendor: Path, out: Path) -> Path:
    """A ready-to-install copy in `out`: `<name>.desktop` + `<name>/` with `vendor/`."""
    out.mkdir(parents=True, exist_ok=True)
    package = out / PLUGIN
    shutil.rmtree(package, ignore_errors=True)
    shutil.copytree(source.package, package, ignore=_IGNORE)
    shutil.copytree(vendor, package / "vendor", ignore=shutil.ignore_patterns(".complete"))
    shutil.copy2(source.desktop, out / source.desktop.name)
    return out


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def tree_digest(root: Path) -> str:
    """Content hash of a folder, to tell whether an installed plugin is current."""
    digest = hashlib.sha256()
    for path in _files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def build_zip(staged: Path, zip_path: Path) -> Path:
    """A reproducible zip: desktop file at the root, folder entries included."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    temp = zip_path.with_name(zip_path.name + ".tmp")
    with zipfile.ZipFile(temp, "w", zipfile.ZIP_DEFLATED) as archive:
        desktop = staged / f"{PLUGIN}.desktop"
        archive.writestr(zipfile.ZipInfo(desktop.name, _ZIP_TIME), desktop.read_bytes())
        package = staged / PLUGIN
        folders = sorted(p for p in package.rglob("*") if p.is_dir() and p.name != "__pycache__")
        for folder in [package, *folders]:
            if "__pycache__" in folder.parts:
                continue
            name = folder.relative_to(staged).as_posix() + "/"
            archive.writestr(zipfile.ZipInfo(name, _ZIP_TIME), b"")
        for path in _files(package):
            info = zipfile.ZipInfo(path.relative_to(staged).as_posix(), _ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes())
    temp.replace(zip_path)
    return zip_path


def default_python_candidates(venv_python: Path | None) -> list[Path | str]:
    found: list[Path | str] = []
    if venv_python is not None and venv_python.exists():
        found.append(venv_python)
    found.append(sys.executable)
    return found
