"""The README's command for real, once per session: a throw-away HOME, a real venv
with CPU torch (~1.3 GB, a few minutes), the plugin, the server started with --start.

Then: /v1/health answers, pip showed a compact progress and logged the rest, the
README's commands work by name, a second run changes nothing and skips pip, and real
Krita (under Xvfb, with the e2e harness's cached profile) loads the installed plugin,
whose docker reads the settings the installer wrote and connects to the server.
"""

from __future__ import annotations

import json
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import ROOT, sandbox_env

PROBE = Path(__file__).resolve().parent / "kd_install_probe"
PROBE_TOKEN = "probe-token-42"
INSTALL_TIMEOUT_S = 1200


@dataclass
class FullInstall:
    home: Path
    env: dict[str, str]
    port: int
    output: str

    @property
    def venv(self) -> Path:
        return self.home / ".local" / "share" / "krita-diffusers" / "venv"

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "installer", *args], cwd=ROOT, env=env or self.env,
            capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
        )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def full_install() -> Iterator[FullInstall]:
    home = Path(tempfile.mkdtemp(prefix="kd-full-install-")) / "home"
    home.mkdir()
    setup = FullInstall(home, sandbox_env(home), _free_port(), "")
    done = setup.run("--yes", "--port", str(setup.port), "--start")  # pip's compact display
    setup.output = done.stdout + done.stderr
    try:
        assert done.returncode == 0, setup.output
        yield setup
    finally:
        setup.run("stop")
        shutil.rmtree(home.parent, ignore_errors=True)


def _health(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=10) as reply:
        return json.loads(reply.read())


def test_installed_server_answers_health(full_install: FullInstall) -> None:
    assert "server running on" in full_install.output
    health = _health(full_install.port)
    assert health["status"] == "ok" and health["device"] == "cpu"
    assert (full_install.venv / "bin" / "krita-diffusers-server").exists()


def test_a_started_server_is_not_to_be_started_again(full_install: FullInstall) -> None:
    """After --start the summary says it runs (and how to stop it), not how to start it."""
    assert f"The server is running on http://127.0.0.1:{full_install.port}" in full_install.output
    assert "Start the server" not in full_install.output


def test_pip_shows_a_compact_progress_and_logs_the_rest(full_install: FullInstall) -> None:
    log = full_install.home / ".local" / "share" / "krita-diffusers" / "pip.log"
    assert f"pip's full output: {log}" in full_install.output
    assert "Successfully installed" in log.read_text()
    pip_lines = [line for line in full_install.output.splitlines() if line.startswith("  [")]
    assert "Collecting" not in full_install.output and "Requirement already" not in (
        full_install.output
    )
    assert any("the Krita Diffusers server: done" in line for line in pip_lines)
    assert len(full_install.output.splitlines()) < 60, full_install.output


def test_the_readmes_commands_work_by_name(full_install: FullInstall) -> None:
    """`krita-diffusers-server models` as the README writes it: the bare name, through
    the link in ~/.local/bin (on PATH, as most distributions set it up)."""
    bin_dir = full_install.home / ".local" / "bin"
    assert (bin_dir / "krita-diffusers-server").resolve() == (
        full_install.venv / "bin" / "krita-diffusers-server"
    )
    env = {**full_install.env, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    done = subprocess.run(
        ["krita-diffusers-server", "models", "--model-dir", str(full_install.home / "ComfyUI")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "tiny-sd15-embedded" in done.stdout


def test_install_proves_itself_with_a_first_image(full_install: FullInstall) -> None:
    first = full_install.home / ".local" / "share" / "krita-diffusers" / "first-image.png"
    assert f"first image {first}" in full_install.output
    header = first.read_bytes()
    assert header.startswith(b"\x89PNG") and b"tiny-sd15-embedded" in header


def test_plugin_settings_and_kritarc_are_in_place(full_install: FullInstall) -> None:
    data = full_install.home / ".local" / "share"
    assert (data / "krita" / "pykrita" / "krita_diffusers.desktop").is_file()
    assert (data / "krita" / "pykrita" / "krita_diffusers" / "vendor" / "requests").is_dir()
    kritarc = (full_install.home / ".config" / "kritarc").read_text()
    assert "[python]\nenable_krita_diffusers=true\n" in kritarc
    assert f"[krita_diffusers]\nserver_url=http://127.0.0.1:{full_install.port}\n" in kritarc
    toml = full_install.home / ".config" / "krita-diffusers" / "server.toml"
    assert tomllib.loads(toml.read_text())["port"] == full_install.port


def test_second_run_skips_pip_and_changes_nothing(full_install: FullInstall) -> None:
    again = full_install.run("--yes", "--quiet", "--port", str(full_install.port), "--start")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "pip skipped" in again.stdout
    assert "nothing changed" in again.stdout
    assert "server already running" in again.stdout
    assert "Start the server" not in again.stdout


def test_real_krita_loads_the_installed_plugin(full_install: FullInstall, tmp_path: Path) -> None:
    """Krita 5.1.5 under Xvfb, profile set up by the installer (reusing the session's
    venv, so pip is skipped, with a token); a probe plugin reports what Krita loaded,
    the settings as Krita hands them to the docker, and whether the docker connected
    (the server runs on a port that is not the plugin's default)."""
    from e2e import harness
    from e2e.krita_e2e import require_krita

    require_krita()  # skips here without Krita; fails in CI
    profile = harness.Profile(tmp_path / "home")
    shutil.copytree(harness.cached_profile() / "home", profile.home, symlinks=True)
    profile.prepare()
    env = sandbox_env(profile.home)
    cmd = ["--yes", "--quiet", "--port", str(full_install.port), "--venv", str(full_install.venv)]
    cmd += ["--token", PROBE_TOKEN]
    done = full_install.run(*cmd, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    shutil.copy2(PROBE / "kd_install_probe.desktop", profile.pykrita)
    shutil.copytree(PROBE / "kd_install_probe", profile.pykrita / "kd_install_probe")
    harness.ini_set(profile.kritarc, "python", "enable_kd_install_probe", "true")
    plan = tmp_path / "plan.json"
    out = tmp_path / "probe.json"
    plan.write_text(json.dumps({"out": str(out)}), encoding="utf-8")
    launch = harness._launch(profile, tmp_path, plan, timeout_s=180, server=None)
    assert out.is_file(), f"Krita exit {launch.returncode}:\n{launch.output[-3000:]}"
    facts = json.loads(out.read_text())
    assert facts["loaded"] and facts["docker"], facts
    assert "error" not in facts, facts["error"]
    read = facts["read_setting"]  # Krita.readSetting: how the docker's store reads
    assert read.get("server_url") == f"http://127.0.0.1:{full_install.port}", facts
    assert read.get("token") == PROBE_TOKEN, facts
    assert shlex.split(read.get("server_command", "")) == [
        str(full_install.venv / "bin" / "krita-diffusers-server"),
        "serve",
    ], facts
    assert facts["connection"]["state"] == "connected", facts
    assert "/pykrita/krita_diffusers/vendor/" in facts["requests_from"]
    # This profile pointed --venv at a venv it did not make: uninstall must keep it.
    gone = full_install.run("uninstall", env=env)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert (full_install.venv / "bin" / "krita-diffusers-server").exists()
