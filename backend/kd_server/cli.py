"""`krita-diffusers-server`: serve the HTTP API, or run one generation with no server.

    krita-diffusers-server [serve] [--host H] [--port P] [--model-dir D ...] [--token T]
        [--device cuda:0 --device cuda:1 | --device all] [--ray-address A --replicas 1:4]
    krita-diffusers-server generate "a lighthouse at dusk" -o out.png [--model NAME] ...
        [--memory-mode MODE] [--t5-tokenizer PATH] (both also on serve)
    krita-diffusers-server models [--model-dir D ...]

`generate` is the quickest proof that a machine works: it uses the embedded tiny model
when no other model is configured, needs no Krita, no server and no download.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything imports huggingface_hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from kd_server import __version__
from kd_server.config import ConfigError, Settings, load_settings


def _common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-dir",
        action="append",
        dest="model_dirs",
        metavar="DIR",
        help="a model folder (ours, A1111's or ComfyUI's); repeat for several",
    )
    parser.add_argument(
        "--device",
        action="append",
        help="auto (default), cuda, cuda:N, mps or cpu; serve: repeat for one worker per "
        "device, or 'all' (every CUDA GPU)",
    )
    parser.add_argument("--config", type=Path, help="settings file (TOML)")


def _loading_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--memory-mode",
        dest="memory_mode",
        choices=["auto", "full", "vae-tiling", "fp8", "model-offload", "sequential-offload"],
        help="GPU memory mode of the loaded models (default auto: chosen per model from "
        "the free GPU memory and its size); docs/memory.md",
    )
    parser.add_argument(
        "--t5-tokenizer",
        dest="t5_tokenizer",
        metavar="PATH",
        help="folder of the T5 tokenizer Flux / SD 3.5 need (tokenizer.json or "
        "spiece.model), searched first; docs/models.md",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="krita-diffusers-server", description="Stable Diffusion server for Krita."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command")

    serve = commands.add_parser("serve", help="run the HTTP server (the default)")
    _common_flags(serve)
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 7860)")
    serve.add_argument("--token", help="require this bearer token (or KD_TOKEN / token_file)")
    serve.add_argument("--preload", action="store_true", help="load the default model at start")
    serve.add_argument(
        "--ray-address",
        dest="ray_address",
        help="run jobs on a Ray Serve deployment in this Ray cluster ('auto' or HOST:6379); "
        "docs/scale-out.md",
    )
    serve.add_argument(
        "--replicas",
        dest="ray_replicas",
        metavar="MIN:MAX",
        help="Ray replicas (one GPU each), autoscaled between MIN and MAX (default 1:1)",
    )
    serve.add_argument(
        "--speedup",
        action="append",
        dest="speedups",
        choices=["channels_last", "fuse_qkv", "compile"],
        help="GPU speed-up applied when a model loads; repeatable (docs/performance.md)",
    )
    _loading_flags(serve)

    generate = commands.add_parser("generate", help="generate one image, no server")
    _common_flags(generate)
    _loading_flags(generate)
    generate.add_argument("prompt")
    generate.add_argument("-o", "--output", type=Path, default=Path("output.png"))
    generate.add_argument("--negative", default="")
    generate.add_argument(
        "--clip-skip", type=int, default=1, help="A1111's clip skip, 1..12 (SD 1.5)"
    )
    generate.add_argument("--vae", help="a VAE file (see `models`); default: the checkpoint's")
    generate.add_argument("--model", help="checkpoint name (see `models`); default: the default")
    generate.add_argument("--sampler", default="DPM++ 2M Karras")
    generate.add_argument("--steps", type=int, default=20)
    generate.add_argument("--cfg", type=float, default=7.0)
    generate.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="Flux.1 dev / Fill's distilled guidance (default 3.5 / 30); other families refuse it",
    )
    generate.add_argument("--seed", type=int, default=-1)
    generate.add_argument("--width", type=int, default=None)
    generate.add_argument("--height", type=int, default=None)
    generate.add_argument("--batch", type=int, default=1)

    models = commands.add_parser("models", help="list the model library")
    _common_flags(models)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    keys = (
        "host",
        "port",
        "model_dirs",
        "token",
        "speedups",
        "ray_address",
        "ray_replicas",
        "memory_mode",
        "t5_tokenizer",
    )
    overrides = {key: getattr(args, key, None) for key in keys}
    devices = getattr(args, "device", None)  # repeated: one worker per device (serve)
    if devices:
        overrides["device"] = devices if args.command in (None, "serve") else devices[-1]
    return load_settings(overrides, args.config)


def _cmd_models(settings: Settings) -> int:
    from kd_server.library import ModelLibrary

    library = ModelLibrary(settings.model_dirs, default_model=settings.default_model)
    for entry in [*library.checkpoints(), *library.loras(), *_control_entries(library)]:
        family = entry.family.value if entry.family else "-"
        status = entry.status.value if entry.usable else f"{entry.status.value}: {entry.reason}"
        kind = entry.facts.role.value if entry.facts is not None else entry.kind.value
        print(f"{kind:10} {entry.name:40} {family:14} {status}")
    for decoder in library.preview_decoders():  # tiny VAEs for sharp previews (TAESD)
        family = decoder.family.value if decoder.family else "-"
        status = "usable" if decoder.usable else f"unusable: {decoder.reason}"
        print(f"{'preview':10} {decoder.name:40} {family:14} {status}")
    for embedding in library.embeddings():  # textual inversions (docs/prompts.md)
        family = embedding.family.value if embedding.family else "-"
        status = "usable" if embedding.usable else f"unusable: {embedding.reason}"
        print(f"{'embedding':10} {embedding.name:40} {family:14} {status}")
    for vae in library.vaes():
        status = "usable" if vae.usable else f"unusable: {vae.reason}"
        print(f"{'vae':10} {vae.name:40} {'-':14} {status}")
    for upscaler in library.upscalers():  # ESRGAN & co (docs/upscale.md)
        scale = f"{upscaler.scale}x {upscaler.architecture}" if upscaler.usable else "-"
        status = "usable" if upscaler.usable else f"unusable: {upscaler.reason}"
        print(f"{'upscaler':10} {upscaler.name:40} {scale:14} {status}")
    return 0


def _control_entries(library: Any) -> list[Any]:
    """ControlNets, IP-Adapters, image encoders, depth estimators (docs/control.md)."""
    from kd_server.library import EntryKind

    kinds = (EntryKind.CONTROL, EntryKind.IMAGE_ENCODER, EntryKind.DEPTH_ESTIMATOR)
    return [entry for kind in kinds for entry in library.entries(kind)]


def _cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    from kd_server.engine import Engine
    from kd_server.generation import (
        Conditioning,
        EngineError,
        GenerationRequest,
        Sampling,
        Task,
    )
    from kd_server.library import ModelLibrary
    from kd_server.loading import working_size
    from kd_server.pngmeta import encode_png

    library = ModelLibrary(settings.model_dirs, default_model=settings.default_model)
    engine = Engine(
        library,
        device=settings.device,
        memory_mode=settings.memory_mode,
        t5_tokenizer=settings.t5_tokenizer,
    )
    try:
        entry = engine.check_model(args.model)
    except EngineError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    size = working_size(entry)
    try:
        loras = _prompt_loras(args.prompt) + _prompt_loras(args.negative)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    request = GenerationRequest(
        task=Task.TXT2IMG,
        conditioning=Conditioning(
            prompt=args.prompt,
            negative_prompt=args.negative,
            loras=loras,
            clip_skip=max(1, min(12, args.clip_skip)),
        ),
        sampling=Sampling(
            sampler=args.sampler,
            steps=args.steps,
            cfg_scale=args.cfg,
            guidance=args.guidance,
            seed=args.seed,
            batch_size=args.batch,
        ),
        model=args.model,
        vae=args.vae,
        width=args.width or size,
        height=args.height or size,
    )

    from kd_server.console_progress import StepProgress

    report = StepProgress(sys.stderr)  # a bar on a terminal, else one line per step

    try:
        images = engine.generate(request, on_progress=report)
    except EngineError as exc:
        report.finish()
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    report.finish()
    for image in images:
        out = args.output
        if len(images) > 1:
            out = out.with_name(f"{out.stem}-{image.index}{out.suffix}")
        try:
            _write_result(out, encode_png(image.image, image.parameters))
        except OSError as exc:
            # full disk, read-only folder, a folder in the way: say so, no traceback
            print(f"error: cannot write {out}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        size_text = f"{image.image.width}x{image.image.height}"
        print(f"wrote {out} ({size_text}, seed {image.seed}, {entry.name})")
    return 0


def _prompt_loras(text: str) -> list[Any]:
    """The LoRAs of a prompt's `<lora:name:weight>` tags (docs/prompts.md); ValueError
    (with a sentence) for a tag that cannot be honoured."""
    from kd_server.generation import LoraSpec
    from kd_server.prompt_syntax import extract_networks, lora_weights

    # PromptSyntaxError and UnavailableNetwork are ValueErrors
    weights = lora_weights(extract_networks(text)[1])
    return [LoraSpec(name, weight) for name, weight in weights]


def _write_result(path: Path, png: bytes) -> None:
    """Write one PNG; a failed write leaves no half-written file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.write_bytes(png)
    except OSError:
        if path.is_file():
            path.unlink(missing_ok=True)
        raise


def _cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from kd_server.api.server import serve

    return serve(settings, preload=bool(getattr(args, "preload", False))) or 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from kd_server.console_progress import quiet_library_notes

    quiet_library_notes()  # transformers' torchvision-fallback note is not the user's business
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["serve", *argv]
    args = parser.parse_args(argv)
    try:
        settings = _settings(args)
        if args.command == "generate":
            return _cmd_generate(args, settings)
        if args.command == "models":
            return _cmd_models(settings)
        return _cmd_serve(args, settings)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
