"""Runs real Krita 5.1.5 under Xvfb with the real plugin against the real server.

One call to `run_krita()` is one Krita launch: a throw-away profile (HOME and every
XDG_* folder in a temp dir, copied from a cached pre-initialised profile so Krita
starts in seconds instead of half a minute), the Krita Diffusers plugin installed the
way a user gets it, the test-only `kd_scenario` plugin that drives it from a plan file,
the server on a free loopback port, and Krita wrapped in `timeout` + `xvfb-run`. It
always ends: every process is started in its own process group and the group is killed
on the way out, whatever happened.

The scenario plugin can ask the harness for things while Krita runs by writing a file
into the run's `requests/` folder (today: `start-server`, for the "server comes up
later" scenario).

Usable from pytest (tests/e2e/conftest.py) and by hand:
    .venv/bin/python tests/e2e/harness.py txt2img inpaint_rect ...
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

E2E_DIR = Path(__file__).resolve().parent
ROOT = E2E_DIR.parent.parent
ARTIFACTS = ROOT / "tests-artifacts" / "e2e"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PLUGIN_SRC = ROOT / "krita_plugin"
SCENARIO_SRC = E2E_DIR / "kd_scenario"
PROFILE_RECIPE = 1  # bump when the cached profile's recipe changes
SCREEN = "1600x1000x24"
VENDOR_REQUIREMENTS = ["requests>=2.31", "websockets>=12"]
# Pure-Python wheels, as a user's build bundles them (no compiled speedups).
PURE_WHEELS = ["--platform", "any", "--implementation", "py", "--abi", "none"]
PURE_WHEELS += ["--python-version", "3.10", "--only-binary=:all:"]


class HarnessError(Exception):
    """The harness could not set up or run Krita; the message says what to fix."""


# -- tools and caches -----------------------------------------------------------------


def missing_tools() -> list[str]:
    """The programs the e2e tests need that are not on PATH (empty when all are there)."""
    return [tool for tool in ("krita", "xvfb-run", "xauth", "timeout") if not shutil.which(tool)]


def krita_version() -> str:
    """The installed Krita package version, used to key the profile cache."""
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", "krita"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        out = ""
    return re.sub(r"[^A-Za-z0-9.+-]", "_", out) or "unknown"


def cache_root() -> Path:
    """Where the pre-initialised profile and the vendored libraries are kept between runs."""
    explicit = os.environ.get("KD_E2E_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "krita-diffusers-e2e"


# -- KConfig files (kritarc, kritadisplayrc) ------------------------------------------


def ini_set(path: Path, section: str, key: str, value: str) -> None:
    """Sets one key in a KConfig-style file, keeping every other line as it is.

    Krita rewrites kritarc with many sections and keys that configparser does not
    round-trip (case, `%`, odd keys), so this edits lines instead.
    """
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    header = f"[{section}]"
    try:
        start = lines.index(header)
    except ValueError:
        if lines and lines[-1].strip():
            lines.append("")
        lines += [header, f"{key}={value}"]
    else:
        end = start + 1
        while end < len(lines) and not lines[end].startswith("["):
            end += 1
        for i in range(start + 1, end):
            if lines[i].split("=", 1)[0].strip() == key:
                lines[i] = f"{key}={value}"
                break
        else:
            insert_at = end
            while insert_at > start + 1 and not lines[insert_at - 1].strip():
                insert_at -= 1
            lines.insert(insert_at, f"{key}={value}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# -- profiles ---------------------------------------------------------------------------


@dataclass
class Profile:
    """A throw-away Krita profile: HOME and every XDG_* folder live under `home`."""

    home: Path

    @property
    def config(self) -> Path:
        return self.home / ".config"

    @property
    def data(self) -> Path:
        return self.home / ".local" / "share"

    @property
    def pykrita(self) -> Path:
        return self.data / "krita" / "pykrita"

    @property
    def kritarc(self) -> Path:
        return self.config / "kritarc"

    def env(self, base: dict[str, str]) -> dict[str, str]:
        """The environment Krita runs with: nothing of the real user's profile leaks in."""
        env = {k: v for k, v in base.items() if not k.startswith(("XDG_", "PYTHON", "QT_"))}
        env.pop("VIRTUAL_ENV", None)
        env.pop("DISPLAY", None)
        runtime = self.home / ".runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)
        env.update(
            HOME=str(self.home),
            XDG_CONFIG_HOME=str(self.config),
            XDG_DATA_HOME=str(self.data),
            XDG_CACHE_HOME=str(self.home / ".cache"),
            XDG_STATE_HOME=str(self.home / ".local" / "state"),
            XDG_RUNTIME_DIR=str(runtime),
            XDG_CONFIG_DIRS="/etc/xdg",
            XDG_DATA_DIRS="/usr/local/share:/usr/share",
            DBUS_SESSION_BUS_ADDRESS="disabled:",
        )
        return env

    def prepare(self) -> None:
        for folder in (self.config, self.data, self.home / ".cache", self.pykrita):
            folder.mkdir(parents=True, exist_ok=True)
        # A leftover autosave opens a recovery dialog that blocks the run.
        for autosave in self.home.glob(".krita-*-autosave.kra"):
            autosave.unlink()
        ini_set(self.config / "kritadisplayrc", "General", "OpenGLRenderer", "none")


def _copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)


def cached_profile(timeout_s: int = 180) -> Path:
    """A profile folder saved after one full Krita start and exit, built once per version.

    Krita builds its resource database on first start (24-38 s on 2 cores); a copy of
    a profile that already has it starts in 7-9 s.
    """
    target = cache_root() / f"profile-{krita_version()}-r{PROFILE_RECIPE}"
    if (target / "ready").exists():
        return target
    work = Path(tempfile.mkdtemp(prefix="kd-e2e-init-"))
    try:
        profile = Profile(work / "home")
        profile.prepare()
        _install_scenario_plugin(profile)
        plan = _write_plan(work, [], server_url="http://127.0.0.1:9", generation={})
        run = _launch(profile, work, plan, timeout_s=timeout_s, server=None)
        log = _read_log(work / "log.json")
        if run.returncode != 0 or not log.get("finished"):
            raise HarnessError(
                f"Krita's first start (building the profile cache) failed: exit "
                f"{run.returncode}; its output ends with:\n{run.output[-3000:]}"
            )
        shutil.rmtree(profile.pykrita, ignore_errors=True)
        staging = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        _copy_tree(profile.home, staging / "home")
        (staging / "ready").write_text(time.ctime(), encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


# -- plugins ----------------------------------------------------------------------------


def _vendor_cache() -> Path:
    """requests + websockets installed once with pip --target, the way a build bundles them."""
    target = cache_root() / "vendor-pure-r1"
    if (target / "ready").exists():
        return target
    staging = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    pip = [str(VENV_PYTHON), "-m", "pip", "install", "--quiet", "--no-compile"]
    proc = subprocess.run(
        [*pip, "--target", str(staging / "lib"), *PURE_WHEELS, *VENDOR_REQUIREMENTS],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise HarnessError(f"pip could not fetch the plugin's vendored libraries:\n{proc.stderr}")
    (staging / "ready").write_text(time.ctime(), encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    return target


def _install_with_installer(profile: Profile, port: int) -> bool:
    """Installs the plugin with the project's own installer, as a user would.

    `python -m installer install --skip-server` builds the plugin with its vendored
    libraries, copies it into the profile's pykrita folder, enables it in kritarc and
    points it at the port. Its own folder (and so its vendor cache) lives in the e2e
    cache, so only the first run fetches anything. Returns False when the checkout
    has no installer, so the harness copies the plugin itself.
    """
    if not (ROOT / "installer" / "__main__.py").is_file():
        return False
    cmd = [str(VENV_PYTHON), "-m", "installer", "install", "--skip-server", "-y", "-q"]
    cmd += ["--krita-dir", str(profile.data / "krita"), "--kritarc", str(profile.kritarc)]
    cmd += ["--data-dir", str(cache_root() / "installer"), "--port", str(port)]
    env = profile.env(dict(os.environ))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise HarnessError(f"the installer failed:\n{proc.stdout}\n{proc.stderr}")
    return True


def install_plugin(profile: Profile, port: int) -> str:
    """Installs Krita Diffusers into the profile's pykrita folder, libraries bundled.

    Returns how: "installer" (the project's installer) or "copy" (sources copied and
    libraries vendored here, for a checkout that has no installer yet).
    """
    desktop = PLUGIN_SRC / "krita_diffusers.desktop"
    package = PLUGIN_SRC / "krita_diffusers"
    if not desktop.exists() or not (package / "__init__.py").exists():
        raise HarnessError(f"the plugin is not in {PLUGIN_SRC} (no .desktop or __init__.py)")
    if _install_with_installer(profile, port):
        return "installer"
    shutil.copy2(desktop, profile.pykrita / desktop.name)
    shutil.copytree(
        package,
        profile.pykrita / package.name,
        ignore=shutil.ignore_patterns("__pycache__", "vendor", "*.pyc"),
        dirs_exist_ok=True,
    )
    _copy_tree(_vendor_cache() / "lib", profile.pykrita / package.name / "vendor")
    ini_set(profile.kritarc, "python", "enable_krita_diffusers", "true")
    return "copy"


def _install_scenario_plugin(profile: Profile) -> None:
    shutil.copy2(SCENARIO_SRC / "kd_scenario.desktop", profile.pykrita / "kd_scenario.desktop")
    shutil.copytree(
        SCENARIO_SRC / "kd_scenario",
        profile.pykrita / "kd_scenario",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        dirs_exist_ok=True,
    )
    ini_set(profile.kritarc, "python", "enable_kd_scenario", "true")


def configure_plugin(profile: Profile, server_url: str, generation: dict[str, Any]) -> None:
    """Writes the plugin's settings where it reads them, before Krita starts.

    The plugin keeps its settings under the `krita_diffusers` group of Krita's own
    settings file (kritarc); tiny steps and resolution keep generation cheap.
    """
    ini_set(profile.kritarc, "krita_diffusers", "server_url", server_url)
    for key, value in generation.items():
        ini_set(profile.kritarc, "krita_diffusers", key, str(value))


FIRST_IMAGE_SIZE = (96, 64)


def place_first_image(profile: Profile) -> Path:
    """Puts a first image where the installer leaves one (`<data>/krita-diffusers/
    first-image.png`), as a full install would; the e2e install skips the server, so
    it makes none. The docker offers to open it the first time it connects."""
    from PIL import Image

    folder = profile.data / "krita-diffusers"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "first-image.png"
    Image.new("RGB", FIRST_IMAGE_SIZE, (30, 120, 200)).save(path)
    return path


# -- the server -------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """The real kd_server on loopback, in its own process group."""

    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    model_dirs: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, work: Path) -> None:
        config = work / "server.toml"
        config.write_text(
            f"model_dirs = {json.dumps(self.model_dirs)}\n" if self.model_dirs else "",
            encoding="utf-8",
        )
        env = dict(os.environ, KD_CONFIG=str(config), HF_HUB_OFFLINE="1")
        env.pop("KD_TOKEN", None)
        log = self.log_path.open("ab")
        cmd = [str(VENV_PYTHON), "-m", "kd_server.cli", "serve"]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def healthy(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                pass
        except OSError:
            return False
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.url}/v1/health", timeout=5) as reply:
                return bool(json.load(reply).get("status") == "ok")
        except (OSError, ValueError):
            return False

    def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise HarnessError(f"the server exited ({self.proc.returncode}): {self.tail()}")
            if self.healthy():
                return
            time.sleep(0.25)
        raise HarnessError(f"the server did not answer /v1/health in {timeout_s}s: {self.tail()}")

    def tail(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None:
            kill_group(self.proc)


def kill_group(proc: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    """Ends a process started with start_new_session=True and everything it started."""
    pgid = proc.pid
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and group_alive(pgid):
            proc.poll()
            time.sleep(0.1)
        if not group_alive(pgid):
            break
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def group_alive(pgid: int) -> bool:
    """True while any process of the group exists (zombies of our own child excluded)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields_ = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields_[2]) == pgid and fields_[0] != "Z":
            return True
    return False


# -- running Krita ----------------------------------------------------------------------


@dataclass
class Launch:
    returncode: int
    output: str
    wall_s: float
    timed_out: bool
    leftovers: bool
    requests_handled: list[str] = field(default_factory=list)


def _write_plan(
    work: Path,
    scenarios: list[str],
    server_url: str,
    generation: dict,
    extra: dict[str, Any] | None = None,
) -> Path:
    """`extra`: more keys for the scenarios (e.g. `kra`, the document two launches
    share in the restart test)."""
    plan = {
        **(extra or {}),
        "log": str(work / "log.json"),
        "artifacts": str(work / "artifacts"),
        "requests": str(work / "requests"),
        "server_url": server_url,
        "scenarios": scenarios,
        "generation": generation,
    }
    path = work / "plan.json"
    path.write_text(json.dumps(plan, indent=1), encoding="utf-8")
    return path


def _read_log(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}


def _launch(
    profile: Profile, work: Path, plan: Path, timeout_s: int, server: Server | None
) -> Launch:
    """Runs Krita once, answering the scenario plugin's requests, and always cleans up."""
    env = profile.env(dict(os.environ))
    env["KD_SCENARIO_PLAN"] = str(plan)
    display = 100 + os.getpid() % 800
    cmd = ["timeout", "-k", "10", str(timeout_s), "xvfb-run", "-a", "-n", str(display)]
    cmd += ["-s", f"-screen 0 {SCREEN}", "krita", "--nosplash"]
    output_path = work / "krita-output.txt"
    requests_dir = work / "requests"
    requests_dir.mkdir(exist_ok=True)
    handled: list[str] = []
    started = time.monotonic()
    with output_path.open("wb") as output:
        proc = subprocess.Popen(
            cmd,
            cwd=profile.home,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        timed_out = False
        try:
            while proc.poll() is None:
                _answer_requests(requests_dir, server, work, handled)
                if time.monotonic() - started > timeout_s + 30:
                    timed_out = True
                    break
                time.sleep(0.2)
        finally:
            kill_group(proc)
    leftovers = group_alive(proc.pid)
    returncode = proc.returncode if proc.returncode is not None else -9
    return Launch(
        returncode=returncode,
        output=output_path.read_text(encoding="utf-8", errors="replace"),
        wall_s=round(time.monotonic() - started, 2),
        timed_out=timed_out or returncode in (124, 137),
        leftovers=leftovers,
        requests_handled=handled,
    )


def _answer_requests(folder: Path, server: Server | None, work: Path, handled: list[str]) -> None:
    for request in sorted(folder.iterdir()):
        if request.name in handled:
            continue
        handled.append(request.name)
        if request.name == "start-server" and server is not None and server.proc is None:
            server.start(work)


@dataclass
class KritaRun:
    """What one launch left behind, for the tests to assert on."""

    log: dict[str, Any]
    launch: Launch
    work: Path
    artifacts: Path
    server_log: str

    def scenario(self, name: str) -> dict[str, Any]:
        for section in self.log.get("scenarios", []):
            if section["name"] == name:
                return dict(section)
        raise KeyError(
            f"scenario {name!r} did not run; Krita exit {self.launch.returncode}, "
            f"log: {json.dumps(self.log)[:2000]}\nKrita output:\n{self.launch.output[-3000:]}"
        )


def run_krita(
    scenarios: Iterable[str],
    *,
    server: str = "up",
    generation: dict[str, Any] | None = None,
    timeout_s: int = 300,
    keep: Path = ARTIFACTS,
    with_plugin: bool = True,
    control_models: bool = False,
    plan_extra: dict[str, Any] | None = None,
) -> KritaRun:
    """One Krita launch running `scenarios` in order.

    server: "up" starts it before Krita; "late" only when a scenario asks (the first
    scenario then sees no server); "none" never. control_models: the server reads a
    models folder with the tiny ControlNets (`write_control_models`, for the `control`
    scenario). plan_extra: more keys of the plan file for the scenarios (`kra`: the
    document `history_save` saves and `history_reopen`, in the next launch, opens).
    """
    if missing := missing_tools():
        raise HarnessError(f"missing programs: {', '.join(missing)} (tests/e2e/install_deps.sh)")
    names = list(scenarios)
    work = Path(tempfile.mkdtemp(prefix="kd-e2e-"))
    port = free_port()
    srv = Server(port, work / "server-log.txt")
    if control_models:
        srv.model_dirs = [str(write_control_models(work / "models"))]
    try:
        profile = Profile(work / "home")
        _copy_tree(cached_profile() / "home", profile.home)
        profile.prepare()
        installed_by = None
        if with_plugin:
            installed_by = install_plugin(profile, port)
            configure_plugin(profile, srv.url, generation or {})
            place_first_image(profile)
        _install_scenario_plugin(profile)
        plan = _write_plan(work, names, srv.url, generation or {}, plan_extra)
        if server == "up":
            srv.start(work)
            srv.wait_healthy(180)
        launch = _launch(profile, work, plan, timeout_s, srv if server != "none" else None)
    finally:
        srv.stop()
    log = _read_log(work / "log.json")
    log["launch"] = {
        "returncode": launch.returncode,
        "wall_s": launch.wall_s,
        "timed_out": launch.timed_out,
        "leftovers": launch.leftovers,
        "requests_handled": launch.requests_handled,
        "plugin_installed_by": installed_by,
    }
    kept = _keep_artifacts(work, keep, log)
    return KritaRun(log=log, launch=launch, work=work, artifacts=kept, server_log=srv.tail())


def _keep_artifacts(work: Path, keep: Path, log: dict[str, Any]) -> Path:
    """Copies the log, PNGs and outputs to `keep` (tests-artifacts/, gitignored).

    The folder is emptied first so nothing from an earlier run can pass for this one's.
    """
    shutil.rmtree(keep, ignore_errors=True)
    keep.mkdir(parents=True, exist_ok=True)
    for name in ("krita-output.txt", "server-log.txt", "plan.json"):
        if (work / name).exists():
            shutil.copy2(work / name, keep / name)
    if (work / "artifacts").exists():
        _copy_tree(work / "artifacts", keep)
    (keep / "log.json").write_text(json.dumps(log, indent=1), encoding="utf-8")
    return keep


#: A ControlNet whose name says canny, so "From canvas" finds edges (the tiny models of
#: tests/support/control.py are depth and line art).
CANNY = "tiny-canny"


def write_control_models(root: Path) -> Path:
    """The tiny control models in ComfyUI's layout, plus a canny one. Imported here,
    not at the top: the harness also runs as a script with stdlib imports only."""
    for folder in (ROOT, ROOT / "tests"):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    from modelkit import control_models
    from support.control import write_control_models as write_all

    write_all(root)
    unet = control_models.embedded_unet()
    control_models.write_controlnet(root / "models/controlnet", CANNY, unet, seed=16)
    return root


def main(argv: list[str]) -> int:
    """By hand: run the named scenarios once and print the log's summary."""
    run = run_krita(argv or ["canvas_smoke"], control_models="control" in argv)
    for section in run.log.get("scenarios", []):
        print(f"{section['status']:8} {section['name']:28} {section.get('error') or ''}")
    print(json.dumps(run.log["launch"]), "artifacts:", run.artifacts)
    shutil.rmtree(run.work, ignore_errors=True)
    return 0 if all(s["status"] == "passed" for s in run.log.get("scenarios", [])) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
