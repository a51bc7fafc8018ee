"""`/sdapi/v1` lists that A1111 clients read on start-up, in A1111's shapes.

Clients ask for these before their first image (to fill menus, or to check the server
is an A1111) and many stop at a 404. Each answers what this server has: real content
where there is some (memory, command-line flags), an empty list where a feature does
not exist here (styles, hypernetworks, face restoration,
extensions, scripts). docs/a1111.md lists them.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from fastapi import APIRouter

from kd_server.api.a1111 import upscaling
from kd_server.api.a1111.schemas import (
    EmbeddingItem,
    EmbeddingsResponse,
    ExtensionItem,
    FaceRestorerItem,
    HypernetworkItem,
    LatentUpscaleModeItem,
    MemoryResponse,
    PromptStyleItem,
    RealesrganItem,
    ScriptInfo,
    SDModuleItem,
    SDVaeItem,
    UpscalerItem,
)
from kd_server.api.services import ServicesDep

log = logging.getLogger(__name__)

router = APIRouter()

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


# ------------------------------------------------ features this server does not have


@router.get("/upscalers", response_model=list[UpscalerItem], summary="Upscalers")
def upscalers(services: ServicesDep) -> list[UpscalerItem]:
    """A1111's built-in "None", "Lanczos" and "Nearest" first, as A1111 lists them,
    then the library's usable upscaler models (hires fix's `hr_upscaler`, the extras'
    `upscaler_1`/`upscaler_2`)."""
    built_in = [
        UpscalerItem(name=name, scale=upscaling.BUILT_IN_SCALE)
        for name in (upscaling.NONE, upscaling.LANCZOS, upscaling.NEAREST)
    ]
    models = [
        UpscalerItem(
            name=entry.name,
            model_name=entry.name,
            model_path=_path_of(entry),
            scale=entry.scale,
        )
        for entry in services.upscalers()
        if entry.usable
    ]
    return built_in + models


def _path_of(entry: object) -> str | None:
    path = getattr(entry, "path", None)
    return str(path) if path is not None else None


@router.get(
    "/latent-upscale-modes",
    response_model=list[LatentUpscaleModeItem],
    summary="Latent upscale modes of hires fix (run as Lanczos here)",
)
def latent_upscale_modes() -> list[LatentUpscaleModeItem]:
    """A1111's names, accepted as hr_upscaler; hires fix enlarges in pixel space here,
    so each one runs as Lanczos (docs/a1111.md)."""
    return [LatentUpscaleModeItem(name=name) for name in upscaling.LATENT_MODES]


@router.get("/sd-vae", response_model=list[SDVaeItem], summary="Separate VAE files")
def sd_vae(services: ServicesDep) -> list[SDVaeItem]:
    """The usable VAE files (models/VAE, models/vae): what `override_settings.sd_vae`
    names, by file name as in A1111."""
    return [
        SDVaeItem(model_name=v.path.name, filename=str(v.path))
        for v in services.library.vaes()
        if v.usable
    ]


@router.get("/sd-modules", response_model=list[SDModuleItem], summary="Forge's modules (none)")
def sd_modules() -> list[SDModuleItem]:
    return []


@router.get("/prompt-styles", response_model=list[PromptStyleItem], summary="Styles (none)")
def prompt_styles() -> list[PromptStyleItem]:
    return []


@router.get("/embeddings", response_model=EmbeddingsResponse, summary="Embeddings")
def embeddings(services: ServicesDep) -> EmbeddingsResponse:
    """Textual-inversion files (embeddings/, models/embeddings): usable ones under
    `loaded` (each is loaded into a model when a prompt names it), the others under
    `skipped`. `shape` is the first text encoder's width."""
    response = EmbeddingsResponse()
    for e in services.library.embeddings():
        item = EmbeddingItem(shape=e.widths[0] if e.widths else 0, vectors=e.vectors)
        (response.loaded if e.usable else response.skipped)[e.name] = item
    return response


@router.get("/hypernetworks", response_model=list[HypernetworkItem], summary="Hypernetworks (none)")
def hypernetworks() -> list[HypernetworkItem]:
    return []


@router.get(
    "/face-restorers", response_model=list[FaceRestorerItem], summary="Face restorers (none)"
)
def face_restorers() -> list[FaceRestorerItem]:
    return []


@router.get("/realesrgan-models", response_model=list[RealesrganItem], summary="RealESRGAN (none)")
def realesrgan_models() -> list[RealesrganItem]:
    return []


@router.get("/extensions", response_model=list[ExtensionItem], summary="Extensions (none)")
def extensions() -> list[ExtensionItem]:
    return []


@router.get("/script-info", response_model=list[ScriptInfo], summary="Scripts' arguments (none)")
def script_info() -> list[ScriptInfo]:
    return []


# ------------------------------------------------------------- what the server is


@router.get("/cmd-flags", summary="The server's settings under A1111's flag names")
def cmd_flags(services: ServicesDep) -> dict[str, Any]:
    """A1111 answers every command-line flag; this server has other settings, so only
    the flags that describe it are given. `api_auth` is never revealed (A1111 sends
    its value; here it would be the server's token)."""
    settings = services.settings
    return {
        "api": True,
        "nowebui": True,
        "listen": settings.host not in _LOOPBACK,
        "server_name": settings.host,
        "port": settings.port,
        "api_auth": None,
        "api_log": False,
        "no_hashing": False,
        "cors_allow_origins": ",".join(settings.cors_origins) or None,
        "device_id": None,
        "use_cpu": [],
    }


@router.get("/memory", response_model=MemoryResponse, summary="RAM and CUDA memory")
def memory() -> MemoryResponse:
    """A1111's shape: `ram` is this process's use against the machine's total memory,
    `cuda` the device's memory and torch's allocator counters."""
    return MemoryResponse(ram=_ram(), cuda=_cuda())


def _ram() -> dict[str, Any]:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        used = _resident_bytes()
    except (AttributeError, ValueError, OSError, ImportError) as exc:  # no sysconf (Windows)
        return {"error": f"memory figures are not available on this system ({exc})"}
    return {"free": total - used, "used": used, "total": total}


def _resident_bytes() -> int:
    """This process's resident memory: /proc on Linux, else the peak from getrusage."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def _cuda() -> dict[str, Any]:
    try:
        import torch

        if not torch.cuda.is_available():
            return {"error": "unavailable"}
        free, total = torch.cuda.mem_get_info()
        stats = torch.cuda.memory_stats()
    except (ImportError, RuntimeError) as exc:
        log.warning("CUDA memory figures failed: %s", exc)
        return {"error": "CUDA memory figures could not be read; the server log has why"}

    def pair(name: str) -> dict[str, int]:
        return {
            "current": int(stats.get(f"{name}.all.current", 0)),
            "peak": int(stats.get(f"{name}.all.peak", 0)),
        }

    return {
        "system": {"free": free, "used": total - free, "total": total},
        "active": pair("active_bytes"),
        "allocated": pair("allocated_bytes"),
        "reserved": pair("reserved_bytes"),
        "inactive": pair("inactive_split_bytes"),
        "events": {
            "retries": int(stats.get("num_alloc_retries", 0)),
            "oom": int(stats.get("num_ooms", 0)),
        },
    }
