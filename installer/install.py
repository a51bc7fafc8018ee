"""`install`: the one command from a fresh clone to Krita + plugin + running server.

Order matters: everything that can fail cheaply (Python, disk, write access) is
checked before the long pip install, and the manifest is saved after each step so
an interrupted run can be repaired by running it again or undone by `uninstall`.
"""

from __future__ import annotations

import json
import secrets
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from installer import (
    checks,
    downloads,
    existing_models,
    kritarc,
    manifest,
    plugin_build,
    plugin_install,
    server_env,
    server_run,
    settings_file,
)
from installer.errors import InstallError
from installer.krita_process import krita_running
from installer.platforms import Locations
from installer.report import Action, Report
from installer.torch_choice import Backend, plan

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass
class InstallOptions:
    venv: Path | None = None
    python: str | None = None
    torch: Backend = Backend.AUTO
    torch_index_url: str | None = None
    skip_server: bool = False
    host: str = "127.0.0.1"
    port: int = 7860
    token: str | None = None
    models_dir: Path | None = None
    model_dirs: list[Path] = field(default_factory=list)
    existing_models: str = "ask"  # ask | use | ignore
    downloads: list[str] = field(default_factory=list)
    catalogue: Path | None = None
    start: bool = False
    assume_yes: bool = False
    quiet_pip: bool = False
    repo: Path = REPO


@dataclass
class Context:
    options: InstallOptions
    where: Locations
    report: Report
    record: manifest.Manifest

    def save(self) -> None:
        manifest.save(self.where.manifest, self.record)


def _preflight(ctx: Context) -> None:
    checks.check_installer_python()
    for folder, what, flag in (
        (ctx.where.pykrita, "Krita's Python plugin folder", "--krita-dir"),
        (ctx.where.kritarc.parent, "The folder of Krita's settings (kritarc)", "--kritarc"),
        (ctx.where.config_file.parent, "The server's settings folder", "KD_CONFIG"),
        (ctx.where.data_dir, "The installer's data folder", "--data-dir"),
    ):
        checks.require_writable(folder, what, flag)
    plugin_build.PluginSource.in_repo(ctx.options.repo)
    if krita_running():
        ctx.report.add(
            Action.NOTE,
            "Krita is running: quit it before using the plugin (Krita rewrites kritarc "
            "when it quits; re-run this installer afterwards if the plugin stays off).",
        )


def _server(ctx: Context) -> server_env.ServerEnv | None:
    opts = ctx.options
    if opts.skip_server:
        ctx.report.add(Action.SKIPPED, "server venv (--skip-server)")
        return None
    base_python = opts.python or sys.executable
    version = checks.probe_python(base_python)
    torch_plan = plan(ctx.where.system, opts.torch, opts.torch_index_url)
    env = server_env.ServerEnv(opts.venv or ctx.where.default_venv, ctx.where.system)
    stamp = server_env.fingerprint(opts.repo, torch_plan, version)
    if server_env.is_current(env, stamp):
        ctx.report.add(Action.KEPT, f"server venv {env.venv} (up to date, pip skipped)")
        return env
    fresh = not env.works()
    needed = torch_plan.venv_bytes if fresh else checks.GB
    checks.require_space(env.venv, needed, "the server's Python environment")
    ctx.report.say(f"Installing the server: {torch_plan.describe()} (a few minutes)...")
    if fresh:
        server_env.create_venv(env, base_python)
        env.stamp.write_text(json.dumps({"fingerprint": None}) + "\n", encoding="utf-8")
        # Only a venv this installer made is ours to remove on uninstall; one that was
        # already there (`--venv` pointing at the user's own) is left alone.
        ctx.record.venv = str(env.venv)
    ctx.save()
    server_env.install(env, opts.repo, torch_plan, stamp, quiet=opts.quiet_pip)
    ctx.report.add(Action.CREATED if fresh else Action.UPDATED, f"server venv {env.venv}")
    return env


def _plugin(ctx: Context, env: server_env.ServerEnv | None) -> None:
    source = plugin_build.PluginSource.in_repo(ctx.options.repo)
    candidates = plugin_build.default_python_candidates(env.python if env else None)
    vendor = plugin_build.vendor_libraries(ctx.where.data_dir / "cache", candidates)
    with tempfile.TemporaryDirectory(prefix="kd-plugin-") as temp:
        staged = plugin_build.stage(source, vendor, Path(temp))
        action = plugin_install.install(staged, ctx.where.pykrita)
    for path in plugin_install.installed_paths(ctx.where.pykrita):
        ctx.record.add_path(path)
    ctx.report.add(action, f"Krita plugin in {ctx.where.pykrita}")
    _kritarc_key(ctx, kritarc.PYTHON, kritarc.enable_key(plugin_build.PLUGIN), "true", force=True)
    ctx.save()


# The plugin's own defaults: a kritarc holding these was never set by the user.
PLUGIN_DEFAULTS = {
    "server_url": "http://127.0.0.1:7860",
    "server_command": "krita-diffusers-server serve --host 127.0.0.1 --port 7860",
    "token": "",
}


def _kritarc_key(
    ctx: Context, section: str, key: str, value: str, force: bool, path: Path | None = None
) -> None:
    """Set one kritarc key, remembering its first value for uninstall. Without `force`
    a value the user chose (not one we wrote earlier, nor the plugin's default) is
    left as it is."""
    path = path or ctx.where.kritarc
    recorded = ctx.record.kritarc_key(str(path), section, key)
    current = kritarc.read_value(path, section, key)
    ours = recorded is not None and current == recorded.value
    default = current is not None and current.strip('"') == PLUGIN_DEFAULTS.get(key)
    if not force and current is not None and current != value and not (ours or default):
        ctx.report.add(Action.KEPT, f"[{section}] {key} in {path} (your setting)")
        return
    change = kritarc.set_value(path, section, key, value)
    if recorded is None:
        recorded = manifest.KritarcKey(str(path), section, key, value, change.previous)
        ctx.record.kritarc_keys.append(recorded)
    recorded.value = value
    shown = value if key != "token" else "(hidden)"
    state = Action.UPDATED if change.changed else Action.KEPT
    ctx.report.add(state, f"[{section}] {key}={shown} in {path}")


def _plugin_settings(ctx: Context, env: server_env.ServerEnv | None, token: str | None) -> None:
    """Point the plugin at the installed server, so the docker connects with no setup."""
    port = server_run.read_port(ctx.where.config_file, ctx.options.port)
    file = ctx.where.plugin_settings
    if file is None:
        if env is not None:
            ctx.report.add(
                Action.NOTE,
                f"in the plugin's settings (gear), set the server command to: {env.script} serve",
            )
        return
    section = plugin_build.PLUGIN
    url = f"http://127.0.0.1:{port}"
    _kritarc_key(ctx, section, "server_url", url, force=False, path=file)
    if env is not None:
        command = kritarc.qt_string(f"{shlex.quote(env.script.as_posix())} serve")
        _kritarc_key(ctx, section, "server_command", command, force=False, path=file)
    if token:
        _kritarc_key(ctx, section, "token", kritarc.qt_string(token), force=False, path=file)
    ctx.save()


def _ask(question: str) -> bool:
    try:
        answer = input(f"{question} [Y/n] ").strip().lower()
    except EOFError:
        return True
    return answer in {"", "y", "yes"}


def _model_dirs(ctx: Context) -> tuple[Path, list[Path]]:
    opts = ctx.options
    own = (opts.models_dir or ctx.where.default_models_dir).expanduser().absolute()
    if not own.is_dir():
        ctx.report.add(Action.CREATED, f"models folder {own} (checkpoints/ and loras/)")
    for sub in ("checkpoints", "loras"):  # the library's own layout
        (own / sub).mkdir(parents=True, exist_ok=True)
    ctx.record.models_dir = str(own)
    dirs = [own] + [d.expanduser().absolute() for d in opts.model_dirs]
    for path in dirs[1:]:
        if not path.is_dir():
            raise InstallError(
                f"The models folder {path} (from --model-dir) does not exist.",
                "Check the path, or leave out that --model-dir.",
            )
    if opts.existing_models == "ignore":
        return own, dirs
    interactive = opts.existing_models == "ask" and not opts.assume_yes and sys.stdin.isatty()
    for found in existing_models.detect(ctx.where.home):
        if found.root.absolute() in dirs:
            continue
        if interactive and not _ask(f"Use the models of {found.describe()} in place?"):
            ctx.report.add(Action.SKIPPED, f"models of {found.describe()} (you said no)")
            continue
        dirs.append(found.root.absolute())
        ctx.report.add(Action.NOTE, f"using the models of {found.describe()} in place")
    return own, dirs


def _settings(ctx: Context, model_dirs: list[Path]) -> str | None:
    opts = ctx.options
    token = opts.token
    if token is None and opts.host not in LOOPBACK:
        token = secrets.token_urlsafe(24)
        ctx.report.add(
            Action.NOTE,
            f"the server listens on {opts.host}, so it needs a token: {token} "
            "(enter it in the plugin's settings)",
        )
    values: dict[str, settings_file.Value] = {
        "host": opts.host,
        "port": opts.port,
        "model_dirs": [str(d) for d in model_dirs],
    }
    if token:
        values["token"] = token
    outcome = settings_file.apply(ctx.where.config_file, values, ctx.record.settings)
    if outcome.entry is not None:
        ctx.record.settings = outcome.entry
    path = ctx.where.config_file
    messages = {
        "created": (Action.CREATED, f"server settings {path}"),
        "updated": (Action.UPDATED, f"server settings {path}"),
        "unchanged": (Action.KEPT, f"server settings {path}"),
        "kept": (Action.KEPT, f"server settings {path} (you edited it: kept as it is)"),
        "merged": (
            Action.UPDATED,
            f"server settings {path}: kept your edits, added {', '.join(outcome.added_keys)}",
        ),
    }
    ctx.report.add(*messages[outcome.action])
    ctx.save()
    return token


def _downloads(ctx: Context, models_dir: Path) -> None:
    if not ctx.options.downloads:
        return
    catalogue = downloads.load_catalogue(ctx.options.catalogue or downloads.default_catalogue())
    for name in ctx.options.downloads:
        entry = downloads.find(catalogue, name)
        target = downloads.destination(models_dir, entry)
        fetched = downloads.download(entry, target)
        ctx.report.add(Action.CREATED if fetched else Action.KEPT, f"model {target}")


FIRST_IMAGE_PROMPT = "a lighthouse at dusk"


def _first_image(ctx: Context, env: server_env.ServerEnv | None) -> None:
    """Prove the server works: one image from the embedded model, no download, no Krita.

    It runs again whenever the picture is missing, so a repaired install is re-proved.
    """
    if env is None:
        return
    out = ctx.where.data_dir / "first-image.png"
    if out.is_file():
        ctx.report.add(Action.KEPT, f"first image {out}")
        return
    command = [str(env.script), "generate", FIRST_IMAGE_PROMPT, "-o", str(out)]
    command += ["--model", "tiny-sd15-embedded", "--steps", "12", "--seed", "1"]
    ctx.report.say("Generating a first image with the embedded model (seconds)...")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or not out.is_file():
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise InstallError(
            f"The server was installed but could not generate an image:\n{tail}",
            f"Re-run the installer; if it fails again, report this message ({env.script}).",
        )
    ctx.record.add_path(out)
    ctx.report.add(Action.CREATED, f"first image {out} (embedded model: proves the server works)")


def _start(ctx: Context, env: server_env.ServerEnv | None, token: str | None) -> None:
    if not ctx.options.start:
        return
    if env is None:
        ctx.report.add(Action.SKIPPED, "--start: no server was installed (--skip-server)")
        return
    files = server_run.ServerFiles(ctx.where.data_dir)
    port = server_run.read_port(ctx.where.config_file, ctx.options.port)
    if server_run.running_pid(files) is not None and server_run.answering(port, token):
        ctx.report.add(Action.KEPT, f"server already running on port {port}")
        return
    pid = server_run.start(env.script, files, port, token)
    ctx.report.add(Action.CREATED, f"server running on http://127.0.0.1:{port} (pid {pid})")


def _summary(ctx: Context, env: server_env.ServerEnv | None) -> None:
    r = ctx.report
    changed = len(r.changed())
    r.say("")
    r.say("Done." if changed else "Done: everything was already installed; nothing changed.")
    if env is not None:
        r.say("Start the server:")
        r.say(f"  {env.script} serve")
        r.say("  (or `python3 -m installer start`; stop it with `python3 -m installer stop`)")
    r.say("Then open Krita: the Krita Diffusers docker is under Settings > Dockers.")
    r.say(f"Put models (.safetensors) in {ctx.record.models_dir}/checkpoints and /loras.")
    r.say(f"Settings: {ctx.where.config_file}. Undo all of this: `python3 -m installer uninstall`.")


def run(options: InstallOptions, where: Locations, report: Report) -> Report:
    record = manifest.load(where.manifest) or manifest.Manifest()
    ctx = Context(options, where, report, record)
    report.say("Installing Krita Diffusers")
    _preflight(ctx)
    env = _server(ctx)
    _plugin(ctx, env)
    models_dir, model_dirs = _model_dirs(ctx)
    token = _settings(ctx, model_dirs)
    _plugin_settings(ctx, env, token)
    _downloads(ctx, models_dir)
    _first_image(ctx, env)
    ctx.save()
    _start(ctx, env, token)
    _summary(ctx, env)
    return report
