"""`install`: the one command from a fresh clone to Krita + plugin + running server.

Order matters: everything that can fail cheaply (Python, disk, write access) is
checked before the long pip install, and the manifest is saved after each step so
an interrupted run can be repaired by running it again or undone by `uninstall`.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from installer import (
    checks,
    command_link,
    downloads,
    existing_models,
    kritarc,
    manifest,
    plugin_build,
    plugin_defaults,
    plugin_install,
    server_env,
    server_run,
    settings_file,
    uninstall,
)
from installer.errors import InstallError
from installer.krita_process import krita_running
from installer.pip_progress import PIP_LOG, PipOutput
from installer.platforms import Locations, server_command
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
    pip_output: PipOutput = PipOutput.COMPACT
    repo: Path = REPO


@dataclass
class Context:
    options: InstallOptions
    where: Locations
    report: Report
    record: manifest.Manifest
    plugin: plugin_defaults.PluginSettingsRules
    new_files: set[Path] = field(default_factory=set)  # files this run created
    command: str | None = None  # how the user runs the server (on PATH, or its full path)
    server_url: str | None = None  # set when the server runs at the end of this run
    pip_log: Path | None = None  # set when pip ran

    def save(self) -> None:
        manifest.save(self.where.manifest, self.record)


def _check_plugin_values(ctx: Context) -> None:
    """Refuse, before writing anything, values the plugin would refuse to load (it
    would silently use its default instead): a bad port, a token with spaces."""
    values = {"server_url": f"http://127.0.0.1:{ctx.options.port}"}
    if ctx.options.token:
        values["token"] = ctx.options.token
    problems = ctx.plugin.problems(values)
    if not 1 <= ctx.options.port <= 65535:
        problems.insert(0, f"--port {ctx.options.port} is not a port (1 to 65535).")
    if problems:
        raise InstallError(problems[0], "Run the command again with a valid value.")


def _preflight(ctx: Context) -> None:
    checks.check_installer_python()
    _check_plugin_values(ctx)
    for folder, what, flag in (
        (ctx.where.pykrita, "Krita's Python plugin folder", "--krita-dir"),
        (ctx.where.kritarc.parent, "The folder of Krita's settings (kritarc)", "--kritarc"),
        (ctx.where.config_file.parent, "The server's settings folder", "KD_CONFIG"),
        (ctx.where.data_dir, "The installer's data folder", "--data-dir"),
    ):
        ctx.record.note_new_dirs(folder)
        checks.require_writable(folder, what, flag)
    plugin_build.PluginSource.in_repo(ctx.options.repo)
    if krita_running(ctx.where.kritarc):
        ctx.report.add(
            Action.NOTE,
            "Krita is running with this kritarc: quit it before using the plugin (Krita "
            "rewrites kritarc when it quits; re-run this installer afterwards if the "
            "plugin stays off).",
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
        ctx.record.note_new_dirs(env.venv.parent)
        server_env.create_venv(env, base_python)
        env.stamp.write_text(json.dumps({"fingerprint": None}) + "\n", encoding="utf-8")
        # Only a venv this installer made is ours to remove on uninstall; one that was
        # already there (`--venv` pointing at the user's own) is left alone.
        ctx.record.venv = str(env.venv)
    ctx.save()
    pip = server_env.PipSettings(opts.pip_output, ctx.where.data_dir / PIP_LOG)
    server_env.install(env, opts.repo, torch_plan, stamp, pip)
    if opts.pip_output is not PipOutput.VERBOSE:
        ctx.pip_log = pip.log
    ctx.report.add(Action.CREATED if fresh else Action.UPDATED, f"server venv {env.venv}")
    return env


def _command(ctx: Context, env: server_env.ServerEnv | None) -> None:
    """Put `krita-diffusers-server` on PATH (a link in ~/.local/bin), so the README's
    commands work as written; say how when that folder is not on PATH."""
    if env is None:
        return
    ctx.command = str(env.script)
    folder = command_link.bin_dir(ctx.where)
    if folder is None:
        ctx.report.add(Action.NOTE, f"the server command is {env.script}")
        return
    ctx.record.note_new_dirs(folder)
    result = command_link.make_link(env.script, folder, ctx.record.command_link)
    if result.action is Action.SKIPPED:
        ctx.report.add(Action.KEPT, f"{result.link} (not ours: left as it is)")
        return
    ctx.record.command_link = manifest.CommandLink(str(result.link), str(env.script))
    ctx.save()
    ctx.report.add(result.action, f"command {result.link} -> {env.script}")
    if result.on_path:
        ctx.command = env.script.name
        return
    hint = command_link.path_hint(folder, ctx.where.home)
    ctx.report.add(
        Action.NOTE,
        f"{folder} is not on your PATH: add the line `{hint}` to ~/.profile (or your "
        f"shell's startup file) and log in again, to type just {env.script.name}",
    )


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


def _kritarc_key(ctx: Context, section: str, key: str, value: str, force: bool) -> None:
    """Set one kritarc key (`value` is the raw text), remembering its first value for
    uninstall. Without `force` a value the user chose (not one we wrote earlier, nor
    the plugin's default) is left as it is."""
    path = ctx.where.kritarc
    recorded = ctx.record.kritarc_key(str(path), section, key)
    current = kritarc.read_value(path, section, key)
    ours = recorded is not None and current == recorded.value
    default = current is not None and kritarc.kconfig_value(current) == (
        ctx.plugin.defaults.get(key) if section == ctx.plugin.group else None
    )
    if not force and current is not None and current != value and not (ours or default):
        ctx.report.add(Action.KEPT, f"[{section}] {key} in {path} (your setting)")
        return
    if not path.exists():
        ctx.record.note_new_file(path)
        ctx.new_files.add(path)
    change = kritarc.set_value(path, section, key, value)
    if recorded is None:
        recorded = manifest.KritarcKey(str(path), section, key, value, change.previous)
        ctx.record.kritarc_keys.append(recorded)
    recorded.value = value
    shown = value if key != "token" else "(hidden)"
    state = Action.UPDATED if change.changed else Action.KEPT
    if path in ctx.new_files:
        state = Action.CREATED
    ctx.report.add(state, f"[{section}] {key}={shown} in {path}")


def _drop_old_plugin_settings(ctx: Context) -> None:
    """Installs before this one wrote the plugin's settings to krita.org/krita.conf,
    which the docker never reads (it reads kritarc); take those keys back."""
    old = ctx.where.kritarc.parent / "krita.org" / "krita.conf"
    for entry in [e for e in ctx.record.kritarc_keys if Path(e.path) == old]:
        uninstall.restore_kritarc_key(entry, ctx.report)
        ctx.record.kritarc_keys.remove(entry)


def _plugin_settings(ctx: Context, env: server_env.ServerEnv | None, token: str | None) -> None:
    """Point the plugin at the installed server, so the docker connects with no setup.
    The keys go where the docker reads them: kritarc, group [krita_diffusers], read
    by Krita.readSetting (KConfig) on every platform."""
    _drop_old_plugin_settings(ctx)
    port = server_run.read_port(ctx.where.config_file, ctx.options.port)
    values = {"server_url": f"http://127.0.0.1:{port}"}
    if env is not None:
        values["server_command"] = server_command(env.script)
    elif f"--port {port}" not in ctx.plugin.defaults["server_command"]:
        # No server installed here (--skip-server): the plugin's own command, but on
        # the port its server_url names, so "Start server" and the docker's hint agree.
        default = ctx.plugin.defaults["server_command"]
        values["server_command"] = re.sub(r"--port \d+", f"--port {port}", default)
    if token:
        values["token"] = token
    for key, value in values.items():
        _kritarc_key(ctx, ctx.plugin.group, key, kritarc.kconfig_string(value), force=False)
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
        ctx.record.note_new_dirs(own / sub)
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
    ctx.server_url = f"http://127.0.0.1:{port}"
    if server_run.running_pid(files) is not None and server_run.answering(port, token):
        ctx.report.add(Action.KEPT, f"server already running on {ctx.server_url}")
        return
    pid = server_run.start(env.script, files, port, token)
    ctx.report.add(Action.CREATED, f"server running on {ctx.server_url} (pid {pid})")


def _summary(ctx: Context) -> None:
    """What to do next, and nothing that was already done (a running server is not
    to be started again)."""
    r = ctx.report
    changed = len(r.changed())
    r.say("")
    r.say("Done." if changed else "Done: everything was already installed; nothing changed.")
    log = server_run.ServerFiles(ctx.where.data_dir).log
    if ctx.server_url is not None:
        r.say(f"The server is running on {ctx.server_url} (log: {log}).")
        r.say("Stop it: `python3 -m installer stop`; start it again: `python3 -m installer start`.")
    elif ctx.command is not None:
        r.say(f"Start the server: `{ctx.command} serve` (in this terminal), or")
        r.say(f"  `python3 -m installer start` (in the background, log: {log});")
        r.say("  stop that one with `python3 -m installer stop`.")
    r.say("Then open Krita: the Krita Diffusers docker is under Settings > Dockers.")
    r.say(f"Put models (.safetensors) in {ctx.record.models_dir}/checkpoints and /loras.")
    if ctx.pip_log is not None:
        r.say(f"pip's full output: {ctx.pip_log}")
    r.say(f"Settings: {ctx.where.config_file}. Undo all of this: `python3 -m installer uninstall`.")


def run(options: InstallOptions, where: Locations, report: Report) -> Report:
    record = manifest.load(where.manifest) or manifest.Manifest()
    ctx = Context(options, where, report, record, plugin_defaults.load(options.repo))
    report.say("Installing Krita Diffusers")
    _preflight(ctx)
    env = _server(ctx)
    _command(ctx, env)
    _plugin(ctx, env)
    models_dir, model_dirs = _model_dirs(ctx)
    token = _settings(ctx, model_dirs)
    _plugin_settings(ctx, env, token)
    _downloads(ctx, models_dir)
    _first_image(ctx, env)
    ctx.save()
    _start(ctx, env, token)
    _summary(ctx)
    return report
