"""Facts about the server: health, models, samplers."""

from __future__ import annotations

from fastapi import APIRouter

from kd_server import __version__
from kd_server.api.services import ServicesDep
from kd_server.api.v1.schemas import (
    Checkpoint,
    ControlModel,
    Embedding,
    FastMode,
    Health,
    Lora,
    ModelMemory,
    Models,
    PreviewDecoder,
    UnusableModel,
    Upscaler,
    Vae,
)
from kd_server.fast_modes import FastMode as EntryFastMode
from kd_server.library import EntryKind, ModelLibrary
from kd_server.loading import working_size

router = APIRouter(tags=["server"])


@router.get("/health", response_model=Health, summary="Is the server up, and on what device")
def health(services: ServicesDep) -> Health:
    loaded = services.loaded_models()
    return Health(
        version=__version__,
        device=services.engine.device_name,
        dtype=services.engine.dtype_name,
        queue_length=services.queue_length(),
        busy=services.busy(),
        model_loaded=loaded[-1] if loaded else None,
        loaded_models=loaded,
        memory_mode=services.settings.memory_mode,
        memory=_memory(services),
    )


def _memory(services: ServicesDep) -> list[ModelMemory]:
    """Each loaded checkpoint's memory mode and its reason (an engine that runs no jobs
    here, the checker of a server with workers, has none)."""
    modes = getattr(services.engine, "loaded_memory_modes", None)
    if not callable(modes):
        return []
    return [
        ModelMemory(model=name, mode=mode, reason=reason)  # type: ignore[arg-type]
        for name, mode, reason in modes()
    ]


@router.get(
    "/models",
    response_model=Models,
    summary="Checkpoints, LoRAs, control models and upscalers in the library",
)
def models(services: ServicesDep) -> Models:
    library = services.library
    try:
        default_name: str | None = library.default_checkpoint().name
    except Exception:  # no usable checkpoint at all: nothing is the default
        default_name = None
    result = Models(checkpoints=[], loras=[], unusable=[])
    for entry in library.checkpoints():
        if entry.usable and entry.family is not None:
            result.checkpoints.append(
                Checkpoint(
                    name=entry.name,
                    family=entry.family.value,
                    default=entry.name == default_name,
                    working_size=working_size(entry),
                    fast=_fast(entry.fast),
                )
            )
        else:
            result.unusable.append(
                UnusableModel(name=entry.name, kind="checkpoint", reason=entry.reason)
            )
    for entry in library.loras():
        if entry.usable:
            family = entry.family.value if entry.family is not None else None
            result.loras.append(
                Lora(
                    name=entry.name,
                    family=family,
                    fast=_fast(entry.fast),
                    trigger_words=list(entry.trigger_words),
                )
            )
        else:
            result.unusable.append(UnusableModel(name=entry.name, kind="lora", reason=entry.reason))
    for decoder in library.preview_decoders():
        family = decoder.family.value if decoder.family is not None else None
        result.preview_decoders.append(
            PreviewDecoder(
                name=decoder.name, family=family, usable=decoder.usable, reason=decoder.reason
            )
        )
    _add_control_models(library, result)
    result.upscalers = [
        Upscaler(
            name=u.name,
            usable=u.usable,
            reason=u.reason,
            scale=u.scale,
            architecture=u.architecture,
            found_in=u.found_in,
        )
        for u in services.upscalers()
    ]
    result.embeddings = [
        Embedding(
            name=e.name,
            family=e.family.value if e.family is not None else None,
            vectors=e.vectors,
            usable=e.usable,
            reason=e.reason,
        )
        for e in library.embeddings()
    ]
    result.vaes = [Vae(name=v.name, usable=v.usable, reason=v.reason) for v in library.vaes()]
    return result


def _fast(mode: EntryFastMode | None) -> FastMode | None:
    if mode is None:
        return None
    return FastMode(
        kind=mode.kind.value,
        sampler=mode.sampler,
        steps=mode.steps,
        cfg_scale=mode.cfg_scale,
        found_in=mode.found_in,
    )


@router.get("/samplers", response_model=list[str], summary="Sampler names (A1111 spelling)")
def samplers(services: ServicesDep) -> list[str]:
    return list(services.engine.samplers())


def _add_control_models(library: ModelLibrary, result: Models) -> None:
    """Since 4: ControlNets and IP-Adapters, image encoders, depth estimators."""
    for entry in library.entries(EntryKind.CONTROL):
        if entry.usable and entry.facts is not None and entry.family is not None:
            kind = entry.facts.role.value
            result.controls.append(
                ControlModel(name=entry.name, family=entry.family.value, kind=kind)  # type: ignore[arg-type]
            )
        else:
            result.unusable.append(
                UnusableModel(name=entry.name, kind="control", reason=entry.reason)
            )
    for kind, names in (
        (EntryKind.IMAGE_ENCODER, result.image_encoders),
        (EntryKind.DEPTH_ESTIMATOR, result.depth_estimators),
    ):
        for entry in library.entries(kind):
            if entry.usable:
                names.append(entry.name)
            else:
                result.unusable.append(
                    UnusableModel(name=entry.name, kind=kind.value, reason=entry.reason)  # type: ignore[arg-type]
                )
