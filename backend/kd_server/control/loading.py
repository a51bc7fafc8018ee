"""Control-related files into modules, offline, every tensor checked.

Each file kind is loaded the way its real files are: plain ControlNets with diffusers'
`from_single_file` (it converts the A1111/original key layout), union ControlNets,
CLIP image encoders and Depth Anything estimators from their state dict into a module
built from a config. The config is a sidecar folder `<name>.config/` next to the file
when there is one (the tests' tiny stand-ins, an artist's unusual model), the folder
holding the file when it is a transformers folder (`config.json` beside it), else the
shipped one for the file's size (resources/model-configs). Nothing touches the hub.

A file that does not fit its config (missing, unexpected or misshapen tensors) raises
`EngineError(MODEL_UNUSABLE)` naming the file, never a half-initialised module.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kd_server.control.files import ControlFacts, ControlRole
from kd_server.devices import DeviceChoice
from kd_server.families import resources_dir
from kd_server.generation import EngineError, EngineErrorCode
from kd_server.library import ModelEntry
from kd_server.load_lock import one_load_at_a_time

log = logging.getLogger(__name__)


def unusable(entry: ModelEntry, why: str) -> EngineError:
    return EngineError(
        EngineErrorCode.MODEL_UNUSABLE,
        f"The {_what(entry)} '{entry.name}' could not be loaded: {why}",
    )


def _what(entry: ModelEntry) -> str:
    role = entry.facts.role if entry.facts is not None else None
    return {
        ControlRole.CONTROLNET: "ControlNet",
        ControlRole.UNION: "union ControlNet",
        ControlRole.IP_ADAPTER: "IP-Adapter",
        ControlRole.IMAGE_ENCODER: "image encoder",
        ControlRole.DEPTH_ESTIMATOR: "depth estimator",
    }.get(role, "model") if role else "model"  # fmt: skip


def facts_of(entry: ModelEntry) -> ControlFacts:
    assert entry.facts is not None and entry.path is not None, entry
    return entry.facts


def config_dir(entry: ModelEntry) -> Path:
    """Where the file's config is: sidecar, its transformers folder, or shipped."""
    assert entry.path is not None
    sidecar = entry.path.with_suffix(".config")
    if sidecar.is_dir():
        return sidecar
    facts = facts_of(entry)
    if facts.layout == "transformers" and (entry.path.parent / "config.json").is_file():
        return entry.path.parent
    if facts.config is not None:
        return resources_dir() / "model-configs" / facts.config
    raise unusable(
        entry,
        "its size matches none of the shipped configs. Put its config.json in a folder "
        f"named '{sidecar.name}' next to it.",
    )


def _state_dict(entry: ModelEntry) -> dict[str, Any]:
    from safetensors.torch import load_file

    assert entry.path is not None
    return load_file(str(entry.path))


def _no_meta(entry: ModelEntry, module: Any) -> None:
    """A tensor the file did not provide stays on the meta device: refuse the module."""
    missing = [name for name, tensor in module.state_dict().items() if tensor.is_meta]
    if missing:
        raise unusable(entry, f"the file lacks {len(missing)} tensors (e.g. {missing[0]}).")


def _loaded(entry: ModelEntry, module: Any, device: DeviceChoice) -> Any:
    _no_meta(entry, module)
    module.to(device.device, dtype=device.dtype)
    module.eval()
    log.info("Loaded %s %s on %s", _what(entry), entry.name, device.name)
    return module


# ------------------------------------------------------------------------- ControlNets


@one_load_at_a_time
def load_controlnet(entry: ModelEntry, device: DeviceChoice) -> Any:
    """A plain or union ControlNet module on the device."""
    facts = facts_of(entry)
    try:
        if facts.role is ControlRole.UNION:
            module = _load_union(entry, facts)
        else:
            from diffusers import ControlNetModel

            module = ControlNetModel.from_single_file(
                str(entry.path),
                config=str(config_dir(entry)),
                local_files_only=True,
                dtype=device.dtype,
            )
    except EngineError:
        raise
    except (ValueError, RuntimeError, KeyError, OSError, TypeError, AttributeError) as exc:
        # diffusers' converter meets a missing tensor as None (TypeError), a wrong one
        # as a shape error (RuntimeError)
        raise unusable(entry, f"{_short(exc)} Check that the file is complete.") from exc
    return _loaded(entry, module, device)


def _load_union(entry: ModelEntry, facts: ControlFacts) -> Any:
    import torch
    from diffusers import ControlNetUnionModel

    config = dict(ControlNetUnionModel.load_config(str(config_dir(entry))))
    if facts.control_types:  # ProMax knows more control types than the first release
        config["num_control_type"] = facts.control_types
    with torch.device("meta"):
        module = ControlNetUnionModel.from_config(config)
    module.load_state_dict(_state_dict(entry), strict=True, assign=True)
    return module


# ---------------------------------------------------------------- IP-Adapter, encoders


def load_ip_adapter_state(entry: ModelEntry) -> dict[str, dict[str, Any]]:
    """The IP-Adapter's weights split as diffusers' `load_ip_adapter` takes them."""
    state: dict[str, dict[str, Any]] = {"image_proj": {}, "ip_adapter": {}}
    for key, tensor in _state_dict(entry).items():
        part, _, rest = key.partition(".")
        if part in state:
            state[part][rest] = tensor
    return state


@one_load_at_a_time
def load_image_encoder(entry: ModelEntry, device: DeviceChoice) -> Any:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig.from_json_file(str(config_dir(entry) / "config.json"))
    return _transformers_model(entry, CLIPVisionModelWithProjection, config, device)


@one_load_at_a_time
def load_depth_estimator(entry: ModelEntry, device: DeviceChoice) -> tuple[Any, Any]:
    """(image processor, model) of a Depth Anything estimator."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, DPTImageProcessor

    folder = config_dir(entry)
    config = DepthAnythingConfig.from_json_file(str(folder / "config.json"))
    processor = DPTImageProcessor.from_pretrained(str(folder), local_files_only=True)
    model = _transformers_model(entry, DepthAnythingForDepthEstimation, config, device)
    return processor, model


def _transformers_model(entry: ModelEntry, cls: Any, config: Any, device: DeviceChoice) -> Any:
    """transformers' own loading (it renames keys of older releases), made strict."""
    from transformers.utils import logging as transformers_logging

    state = {k: v for k, v in _state_dict(entry).items() if not k.endswith("position_ids")}
    bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # no "Loading weights" bar in the server log
    try:
        model, info = cls.from_pretrained(
            None, config=config, state_dict=state, dtype=device.dtype, output_loading_info=True
        )
    except (ValueError, RuntimeError, OSError) as exc:
        raise unusable(entry, f"{_short(exc)} Check that the file is complete.") from exc
    finally:
        if bars:
            transformers_logging.enable_progress_bar()
    problems = [
        f"{len(info[key])} {what} (e.g. {_first(info[key])})"
        for key, what in (
            ("missing_keys", "tensors missing"),
            ("mismatched_keys", "tensors of another shape"),
        )
        if info.get(key)
    ]
    if problems:
        raise unusable(entry, f"it does not fit its config: {', '.join(problems)}.")
    return _loaded(entry, model, device)


def _first(items: Any) -> str:
    first = next(iter(items))
    return str(first[0] if isinstance(first, tuple) else first)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (text[:300] + "...") if len(text) > 300 else text + ("" if text.endswith(".") else ".")
