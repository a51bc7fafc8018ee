"""Command line: `python3 -m installer [install|uninstall|build-zip|download|start|stop]`.

`install` is the default, so the README's command is just `python3 -m installer`.
Every expected failure is an InstallError, printed as two plain sentences with exit
status 1; Ctrl-C exits with 130 and leaves a state that a re-run repairs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from installer import downloads, plugin_build, server_env, server_run
from installer.errors import InstallError
from installer.install import REPO, InstallOptions
from installer.install import run as run_install
from installer.pip_progress import PipOutput
from installer.platforms import Locations, locations
from installer.report import Action, Report
from installer.torch_choice import Backend
from installer.uninstall import run as run_uninstall

COMMANDS = {"install", "uninstall", "build-zip", "download", "start", "stop"}


def _add_location_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--krita-dir", type=Path, help="Krita's resource folder (holds pykrita/)")
    parser.add_argument("--kritarc", type=Path, help="Krita's settings file")
    parser.add_argument("--data-dir", type=Path, help="the installer's own folder (state, venv)")


def _common_install_flags() -> argparse.ArgumentParser:
    """The install flags most people need, shown by `python3 -m installer --help` as
    well as by `install --help` (install is the default command)."""
    common = argparse.ArgumentParser(add_help=False)
    flags = common.add_argument_group("common install options")
    flags.add_argument("--start", action="store_true", help="start the server afterwards")
    flags.add_argument("-y", "--yes", action="store_true", help="never ask; use what is found")
    flags.add_argument("--port", type=int, default=7860, help="the server's port (7860)")
    flags.add_argument("--host", default="127.0.0.1", help="address the server listens on")
    flags.add_argument("--token", help="require this token (one is made up for non-loopback hosts)")
    flags.add_argument(
        "--model-dir", type=Path, action="append", default=[],
        help="another folder of models to use in place (repeatable)",
    )  # fmt: skip
    flags.add_argument(
        "--skip-server", action="store_true",
        help="only the plugin and settings (for a server on another machine)",
    )  # fmt: skip
    flags.add_argument("-q", "--quiet", action="store_true", help="no pip progress at all")
    flags.add_argument(
        "-v", "--verbose", action="store_true",
        help="pip's own output in full (by default: one progress line, full output in a log)",
    )  # fmt: skip
    return common


EPILOG = """\
`install` is the default command: `python3 -m installer --start` is
`python3 -m installer install --start`. All install options (folders, torch build,
downloads): `python3 -m installer install --help`. Details: docs/install.md.
"""


def _parser() -> argparse.ArgumentParser:
    common = _common_install_flags()
    parser = argparse.ArgumentParser(
        prog="python3 -m installer",
        description="Install Krita Diffusers: the inference server, the Krita plugin, settings.",
        parents=[common],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", title="commands")
    inst = sub.add_parser(
        "install", help="install or repair everything (the default)", parents=[common]
    )
    _add_location_flags(inst)
    inst.add_argument("--venv", type=Path, help="where the server's Python environment goes")
    inst.add_argument("--python", help="Python 3.10+ for the server's venv (default: this one)")
    inst.add_argument("--torch", choices=[b.value for b in Backend], default="auto")
    inst.add_argument("--torch-index-url", help="package index for torch (overrides the choice)")
    inst.add_argument("--models-dir", type=Path, help="our models folder (downloads go here)")
    inst.add_argument(
        "--existing-models", choices=["ask", "use", "ignore"], default="ask",
        help="A1111/ComfyUI folders found: ask (default on a terminal), use, or ignore",
    )  # fmt: skip
    inst.add_argument("--download", action="append", default=[], metavar="NAME")
    inst.add_argument("--catalogue", type=Path, help=argparse.SUPPRESS)

    uninst = sub.add_parser("uninstall", help="remove what install added (never models)")
    _add_location_flags(uninst)

    zipper = sub.add_parser("build-zip", help="build the plugin .zip for Krita's importer")
    zipper.add_argument("-o", "--output", type=Path, default=REPO / "dist" / "krita_diffusers.zip")
    zipper.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)

    down = sub.add_parser("download", help="download catalogue models")
    down.add_argument("names", nargs="*", metavar="NAME")
    down.add_argument("--list", action="store_true", help="list the catalogue")
    down.add_argument("--models-dir", type=Path)
    down.add_argument("--catalogue", type=Path, help=argparse.SUPPRESS)
    down.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)

    for name, text in (("start", "start the installed server"), ("stop", "stop it")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
        cmd.add_argument("--venv", type=Path, help=argparse.SUPPRESS)
    return parser


def _where(args: argparse.Namespace) -> Locations:
    where = locations()
    changes = {}
    if getattr(args, "krita_dir", None):
        changes["krita_resources"] = args.krita_dir.expanduser().absolute()
    if getattr(args, "kritarc", None):
        changes["kritarc"] = args.kritarc.expanduser().absolute()
    if getattr(args, "data_dir", None):
        changes["data_dir"] = args.data_dir.expanduser().absolute()
    return dataclasses.replace(where, **changes)


def _pip_output(args: argparse.Namespace) -> PipOutput:
    if args.quiet and args.verbose:
        raise InstallError(
            "--quiet and --verbose ask for opposite things.", "Give only one of them."
        )
    if args.quiet:
        return PipOutput.QUIET
    return PipOutput.VERBOSE if args.verbose else PipOutput.COMPACT


def _install(args: argparse.Namespace, report: Report) -> None:
    options = InstallOptions(
        venv=args.venv.expanduser().absolute() if args.venv else None,
        python=args.python,
        torch=Backend(args.torch),
        torch_index_url=args.torch_index_url,
        skip_server=args.skip_server,
        host=args.host,
        port=args.port,
        token=args.token,
        models_dir=args.models_dir,
        model_dirs=args.model_dir,
        existing_models="use"
        if args.yes and args.existing_models == "ask"
        else args.existing_models,
        downloads=args.download,
        catalogue=args.catalogue,
        start=args.start,
        assume_yes=args.yes,
        pip_output=_pip_output(args),
    )
    run_install(options, _where(args), report)


def _build_zip(args: argparse.Namespace, report: Report) -> None:
    import tempfile

    where = _where(args)
    source = plugin_build.PluginSource.in_repo(REPO)
    pythons = plugin_build.default_python_candidates(None)
    vendor = plugin_build.vendor_libraries(where.data_dir / "cache", pythons)
    with tempfile.TemporaryDirectory(prefix="kd-zip-") as temp:
        staged = plugin_build.stage(source, vendor, Path(temp))
        plugin_build.build_zip(staged, args.output)
    report.add(Action.CREATED, str(args.output))
    report.say("In Krita: Tools > Scripts > Import Python Plugin from File..., pick this zip,")
    report.say("then enable Krita Diffusers in Settings > Configure Krita > Python Plugin Manager")
    report.say("and restart Krita.")


def _download(args: argparse.Namespace, report: Report) -> None:
    catalogue = downloads.load_catalogue(args.catalogue or downloads.default_catalogue())
    if args.list or not args.names:
        for entry in catalogue.values():
            report.say(f"{entry.name:<24} {entry.size / 1e9:5.2f} GB  {entry.description}")
        return
    models_dir = (args.models_dir or _where(args).default_models_dir).expanduser().absolute()
    for name in args.names:
        entry = downloads.find(catalogue, name)
        target = downloads.destination(models_dir, entry)
        fetched = downloads.download(entry, target)
        report.add(Action.CREATED if fetched else Action.KEPT, f"model {target}")


def _start(args: argparse.Namespace, report: Report) -> None:
    where = _where(args)
    env = server_env.ServerEnv(args.venv or where.default_venv, where.system)
    if not env.script.exists():
        raise InstallError(
            f"No installed server at {env.venv}.", "Run `python3 -m installer` first."
        )
    port = server_run.read_port(where.config_file, 7860)
    pid = server_run.start(env.script, server_run.ServerFiles(where.data_dir), port, None)
    report.add(Action.CREATED, f"server running on http://127.0.0.1:{port} (pid {pid})")


def _stop(args: argparse.Namespace, report: Report) -> None:
    if server_run.stop(server_run.ServerFiles(_where(args).data_dir)):
        report.add(Action.REMOVED, "the running server (stopped)")
    else:
        report.say("No server started by the installer is running.")


HANDLERS = {
    "install": _install,
    "uninstall": lambda args, report: run_uninstall(_where(args), report),
    "build-zip": _build_zip,
    "download": _download,
    "start": _start,
    "stop": _stop,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in {"-h", "--help"}):
        argv.insert(0, "install")
    args = _parser().parse_args(argv)
    report = Report()
    try:
        HANDLERS[args.command](args, report)
    except InstallError as exc:
        print(f"\nError: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nInterrupted. Run the same command again to finish or repair.", file=sys.stderr)
        return 130
    except OSError as exc:  # a file or folder we could not touch, outside the known checks
        where = f" ({exc.filename})" if exc.filename else ""
        print(
            f"\nError: {exc.strerror or exc}{where}.\n  What to do: check that you may "
            "write there and that the disk is not full, then run the same command again.",
            file=sys.stderr,
        )
        return 1
    return 0
