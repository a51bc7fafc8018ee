"""A real server whose jobs run on several workers (`kd_server.executors`), and the
tiny checkpoints that tell workers apart by the model they hold."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from api.live import LiveServer
from kd_server.api.server import serve_in_thread
from kd_server.config import Settings
from support import event_schemas


def write_checkpoints(folder: Path, names: Sequence[str]) -> Path:
    """One tiny SD 1.5 checkpoint per name (LDM layout, as artists' files are)."""
    from modelkit import ldm_layout

    folder.mkdir(parents=True, exist_ok=True)
    for seed, name in enumerate(names):
        pipe = ldm_layout.build_tiny_components("sd15", seed=seed + 11)
        path = folder / f"{name}.safetensors"
        ldm_layout.write_ldm_checkpoint(pipe, path)
        ldm_layout.save_config_folder(pipe, path.with_suffix(".config"))
    return folder


def start_with_workers(
    settings: Settings, engine: Any, library: Any, workers: Sequence[Any]
) -> LiveServer:
    """The real server in a thread, its jobs run by `workers`, `engine` checking them."""
    running = serve_in_thread(settings, engine, library, workers=list(workers))
    headers = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
    live = LiveServer(running, headers)
    event_schemas.load(live.get("/openapi.json").json())
    return live


def services_of(live: LiveServer) -> Any:
    """The server's `Services` (same process): which worker ran a job, and when."""
    return live.running.server.kd_app.state.services
