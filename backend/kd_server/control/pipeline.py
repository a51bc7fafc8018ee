"""A job's control layers and reference image -> the pipeline that runs it, and its
arguments; the control modules kept warm between jobs.

One set of base weights serves every job: a ControlNet job runs the task's ControlNet
pipeline made from the loaded checkpoint (`loading.share_pipeline`: sharing its UNet, VAE and
text encoders) plus the ControlNet modules, which are loaded once and kept while
jobs keep using them. An IP-Adapter is loaded into the shared UNet's attention layers
for the jobs that send a reference, and taken out again for the next job that does not.

Everything that can be refused is refused by `check`, before the job is queued.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PIL import Image

from kd_server.control.depth import DepthEstimator
from kd_server.control.files import ControlRole
from kd_server.control.loading import load_controlnet, load_image_encoder, load_ip_adapter_state
from kd_server.control.preprocess import control_image
from kd_server.devices import DeviceChoice, free_memory
from kd_server.families import Family
from kd_server.generation import (
    MAX_CONTROLS,
    ControlInput,
    ControlMode,
    EngineError,
    EngineErrorCode,
    GenerationRequest,
    ReferenceInput,
    Task,
)
from kd_server.library import EntryKind, ModelEntry, ModelLibrary, encoder_fits
from kd_server.tasks import Prepared, spec_for

if TYPE_CHECKING:
    from kd_server.loading import LoadedModel

log = logging.getLogger(__name__)

#: The control type a union ControlNet (xinsir's) takes for each mode.
UNION_TYPES: dict[ControlMode, int] = {
    ControlMode.POSE: 0,
    ControlMode.DEPTH: 1,
    ControlMode.SCRIBBLE: 2,
    ControlMode.SOFTEDGE: 2,
    ControlMode.CANNY: 3,
    ControlMode.LINEART: 3,
    ControlMode.NORMAL: 4,
    ControlMode.SEGMENT: 5,
    ControlMode.TILE: 6,
}


def invalid(message: str) -> EngineError:
    return EngineError(EngineErrorCode.INVALID_INPUT, message)


def output_size(request: GenerationRequest) -> tuple[int, int]:
    """The size of the region the job generates, which control images must have."""
    if request.task is Task.TXT2IMG or request.inputs.image is None:
        return request.width, request.height
    return request.inputs.image.size


def working_dims(prepared: Prepared) -> tuple[int, int]:
    """The size the model works at for this job (what control images are scaled to)."""
    kwargs = prepared.kwargs
    if "width" in kwargs and "height" in kwargs:
        return int(kwargs["width"]), int(kwargs["height"])
    image = kwargs["image"]
    return int(image.width), int(image.height)


def active_controls(request: GenerationRequest) -> list[ControlInput]:
    """The controls that act: strength 0 is no control at all, so it costs nothing."""
    return [c for c in request.conditioning.control if c.strength > 0]


@dataclass
class ControlSetup:
    """What one job runs with: a pipeline (None = the task's plain one) and the extra
    arguments; `done` is called after the pipeline returns (or fails)."""

    pipeline: Any = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def done(self) -> None:
        for step in self.cleanup:
            step()


class ControlRuntime:
    """Checks control inputs, keeps ControlNets and image encoders warm, sets jobs up."""

    def __init__(self, library: ModelLibrary, device: DeviceChoice) -> None:
        self.library = library
        self.device = device
        self.depth = DepthEstimator(library, device)
        self._controlnets: dict[str, Any] = {}  # file signature -> module
        self._encoders: dict[str, Any] = {}  # file signature -> (encoder, processor)

    # -- before queueing -------------------------------------------------------------

    def check(self, request: GenerationRequest, checkpoint: ModelEntry) -> None:
        """Refuse, with a sentence the artist can act on, what cannot run."""
        controls = request.conditioning.control
        info = checkpoint.family.info if checkpoint.family is not None else None
        if info is not None and info.is_transformer:
            if controls:
                raise invalid(
                    f"control: ControlNets are not available for {info.label} models here; "
                    "remove the control layers, or choose an SD 1.5 or SDXL checkpoint."
                )
            if request.conditioning.reference is not None:
                raise invalid(
                    f"reference: IP-Adapters are not available for {info.label} models "
                    "here; remove the reference image, or choose an SD 1.5 or SDXL checkpoint."
                )
        if len(controls) > MAX_CONTROLS:
            raise invalid(f"control: {len(controls)} controls; at most {MAX_CONTROLS} per job.")
        family = _base_family(checkpoint)
        roles = set()
        for index, control in enumerate(controls):
            entry = self._control_entry(control.model, f"control[{index}]")
            roles.add(_role(entry))
            self._check_family(entry, checkpoint, family, f"control[{index}]")
            self._check_control(index, control, entry, request)
        if ControlRole.UNION in roles and ControlRole.CONTROLNET in roles:
            raise invalid(
                "control: a union ControlNet cannot be combined with plain ControlNets in one "
                "job; use the union model for every control, or only plain ControlNets."
            )
        reference = request.conditioning.reference
        if reference is not None:
            self._check_reference(reference, checkpoint, family)

    def _control_entry(self, name: str, field_name: str) -> ModelEntry:
        entry = self.library.get(EntryKind.CONTROL, name, "control model")
        if _role(entry) is ControlRole.IP_ADAPTER:
            raise invalid(
                f"{field_name}: '{name}' is an IP-Adapter; send it as the reference "
                "(with the reference image), not as a control."
            )
        return entry

    def _check_family(
        self, entry: ModelEntry, checkpoint: ModelEntry, family: Family, field_name: str
    ) -> None:
        if entry.family is None or entry.family is family:
            return
        what = "IP-Adapter" if _role(entry) is ControlRole.IP_ADAPTER else "ControlNet"
        raise EngineError(
            EngineErrorCode.CONTROL_MISMATCH,
            f"{field_name}: the {what} '{entry.name}' is made for {entry.family.info.label}, but "
            f"the checkpoint '{checkpoint.name}' is {family.info.label}: choose a {what} made for "
            f"{family.info.label}, or a {entry.family.info.label} checkpoint.",
        )

    def _check_control(
        self, index: int, control: ControlInput, entry: ModelEntry, request: GenerationRequest
    ) -> None:
        name = f"control[{index}]"
        if not 0 <= control.strength <= 2:
            raise invalid(f"{name}.strength must be between 0 and 2, not {control.strength:g}.")
        if not 0 <= control.start < control.end <= 1:
            raise invalid(
                f"{name}: start ({control.start:g}) must be below end ({control.end:g}), both "
                "fractions of the steps between 0 and 1."
            )
        size = output_size(request)
        if control.image.size != size:
            raise invalid(
                f"{name}.image is {control.image.width}x{control.image.height} but the region "
                f"being generated is {size[0]}x{size[1]}: send the control layer's pixels for "
                "exactly that region."
            )
        if _role(entry) is ControlRole.UNION:
            self._check_union_mode(name, control, entry)
        if control.preprocess and control.mode is ControlMode.DEPTH:
            self.depth.check()

    def _check_union_mode(self, name: str, control: ControlInput, entry: ModelEntry) -> None:
        if control.mode is None:
            raise invalid(
                f"{name}: '{entry.name}' is a union ControlNet, which needs to know what the "
                f"image shows: give a mode ({', '.join(m.value for m in UNION_TYPES)})."
            )
        types = entry.facts.control_types if entry.facts else None
        if types is not None and UNION_TYPES[control.mode] >= types:
            raise invalid(
                f"{name}: the union ControlNet '{entry.name}' knows {types} control types and "
                f"mode {control.mode.value} is not one of them; use a ProMax union model for it."
            )

    def _check_reference(
        self, reference: ReferenceInput, checkpoint: ModelEntry, family: Family
    ) -> None:
        entry = self.library.get(EntryKind.CONTROL, reference.model, "control model")
        if _role(entry) is not ControlRole.IP_ADAPTER:
            raise invalid(
                f"reference: '{reference.model}' is a ControlNet; a reference image needs an "
                "IP-Adapter (ControlNets go in control)."
            )
        if not 0 <= reference.weight <= 2:
            raise invalid(f"reference.weight must be between 0 and 2, not {reference.weight:g}.")
        self._check_family(entry, checkpoint, family, "reference")
        self._encoder_entry(entry)

    def _encoder_entry(self, adapter: ModelEntry) -> ModelEntry:
        assert adapter.facts is not None
        for encoder in self.library.entries(EntryKind.IMAGE_ENCODER):
            if encoder.usable and encoder_fits(adapter.facts, encoder.facts):
                return encoder
        raise EngineError(
            EngineErrorCode.MODEL_UNUSABLE,
            f"The IP-Adapter '{adapter.name}' has no image encoder any more; refresh the models.",
        )

    def preprocess(
        self,
        image: Image.Image,
        mode: ControlMode,
        low_threshold: int = 100,
        high_threshold: int = 200,
        resolution: int | None = None,
    ) -> Image.Image:
        """The control image `control` with `preprocess=True` would use (the preprocess
        endpoint: the plugin puts it on a layer for the artist to edit)."""
        depth = None
        if mode is ControlMode.DEPTH:
            self.depth.check()
            depth = self.depth
        return control_image(
            image, mode, True, depth, low_threshold, high_threshold, resolution=resolution
        )

    # -- running ---------------------------------------------------------------------

    def setup(
        self, request: GenerationRequest, model: LoadedModel, prepared: Prepared
    ) -> ControlSetup:
        """The pipeline and arguments for this job's controls and reference."""
        setup = ControlSetup()
        controls = active_controls(request)
        dims = working_dims(prepared)
        if controls:  # a job without controls keeps them warm: artists toggle them
            setup.pipeline, setup.kwargs = self._controlnet_pipeline(request, model, controls, dims)
        pipe = setup.pipeline if setup.pipeline is not None else model.pipeline_for(request.task)
        self._reference(request.conditioning.reference, model, pipe, setup)
        return setup

    def _controlnet_pipeline(
        self,
        request: GenerationRequest,
        model: LoadedModel,
        controls: list[ControlInput],
        dims: tuple[int, int],
    ) -> tuple[Any, dict[str, Any]]:
        entries = [self.library.get(EntryKind.CONTROL, c.model, "control model") for c in controls]
        signatures = [_signature(e) for e in entries]
        self._release_controlnets(keep=set(signatures))
        modules = [self._controlnet(e, s) for e, s in zip(entries, signatures, strict=True)]
        union = _role(entries[0]) is ControlRole.UNION
        spec = spec_for(request.task)
        cls = spec.control_pipeline_class(model.family, union=union)
        from kd_server.loading import share_pipeline

        pipe = share_pipeline(cls, model.base, controlnet=_multi(modules, union))
        pipe.set_progress_bar_config(disable=True)
        images = [self._image(c, dims) for c in controls]
        kwargs: dict[str, Any] = {
            _control_image_argument(cls): images,
            "controlnet_conditioning_scale": [c.strength for c in controls],
            "control_guidance_start": [c.start for c in controls],
            "control_guidance_end": [c.end for c in controls],
        }
        if union:
            kwargs["control_mode"] = [UNION_TYPES[c.mode] for c in controls if c.mode]
        return pipe, kwargs

    def _image(self, control: ControlInput, dims: tuple[int, int]) -> Image.Image:
        depth = self.depth if control.preprocess and control.mode is ControlMode.DEPTH else None
        image = control_image(
            control.image,
            control.mode,
            control.preprocess,
            depth=depth,
            low_threshold=control.low_threshold,
            high_threshold=control.high_threshold,
            resolution=min(dims),
        )
        return image.resize(dims, Image.Resampling.BILINEAR) if image.size != dims else image

    def _controlnet(self, entry: ModelEntry, signature: str) -> Any:
        module = self._controlnets.get(signature)
        if module is None:
            module = load_controlnet(entry, self.device)
            self._controlnets[signature] = module
        return module

    def _release_controlnets(self, keep: set[str]) -> None:
        """Keep only the ControlNets this job uses: each SDXL one is 2.5 GB."""
        stale = [s for s in self._controlnets if s not in keep]
        for signature in stale:
            del self._controlnets[signature]
        if stale:
            free_memory()

    # -- reference image -------------------------------------------------------------

    def _reference(
        self,
        reference: ReferenceInput | None,
        model: LoadedModel,
        pipe: Any,
        setup: ControlSetup,
    ) -> None:
        if reference is None:
            if model.ip_adapter is not None:
                model.base.unload_ip_adapter()
                model.ip_adapter = None
            return
        adapter = self.library.get(EntryKind.CONTROL, reference.model, "control model")
        encoder, processor = self._encoder(self._encoder_entry(adapter))
        signature = _signature(adapter)
        if model.ip_adapter != signature:
            if model.ip_adapter is not None:
                model.base.unload_ip_adapter()
                model.ip_adapter = None
            self._load_ip_adapter(model, adapter, encoder, processor)
            model.ip_adapter = signature
        pipe.register_modules(image_encoder=encoder, feature_extractor=processor)
        pipe.set_ip_adapter_scale(reference.weight)
        setup.kwargs["ip_adapter_image"] = reference.image.convert("RGB")
        setup.cleanup.append(lambda: pipe.register_modules(image_encoder=None))

    def _load_ip_adapter(
        self, model: LoadedModel, adapter: ModelEntry, encoder: Any, processor: Any
    ) -> None:
        from kd_server.speed import unfuse_for_lora

        base = model.base
        unfuse_for_lora(base)  # the adapter's processors use the separate projections
        base.register_modules(image_encoder=encoder, feature_extractor=processor)
        try:
            base.load_ip_adapter(
                load_ip_adapter_state(adapter),
                subfolder="",
                weight_name="",
                image_encoder_folder=None,
            )
        except (ValueError, RuntimeError, KeyError) as exc:
            base.unload_ip_adapter()
            raise EngineError(
                EngineErrorCode.MODEL_UNUSABLE,
                f"The IP-Adapter '{adapter.name}' does not fit the checkpoint '{model.name}' "
                f"({exc}). Choose an IP-Adapter made for {model.info.label}.",
            ) from exc
        log.info("IP-Adapter %s loaded into %s", adapter.name, model.name)

    def _encoder(self, entry: ModelEntry) -> tuple[Any, Any]:
        signature = _signature(entry)
        cached = self._encoders.get(signature)
        if cached is None:
            self._encoders.clear()
            encoder = load_image_encoder(entry, self.device)
            cached = (encoder, _image_processor(encoder))
            self._encoders[signature] = cached
        return cached[0], cached[1]


def _image_processor(encoder: Any) -> Any:
    from transformers import CLIPImageProcessor

    size = encoder.config.image_size
    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size=size)


def _multi(modules: list[Any], union: bool) -> Any:
    if union:
        from diffusers.models.controlnets.multicontrolnet_union import MultiControlNetUnionModel

        return MultiControlNetUnionModel(modules)
    from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

    return MultiControlNetModel(modules)


def _control_image_argument(pipeline_class: Any) -> str:
    """txt2img ControlNet pipelines take the control image as `image`; the img2img and
    inpaint ones use `image` for the picture and `control_image` for the control."""
    parameters = inspect.signature(pipeline_class.__call__).parameters
    return "control_image" if "control_image" in parameters else "image"


def _role(entry: ModelEntry) -> ControlRole:
    assert entry.facts is not None
    return entry.facts.role


def _base_family(checkpoint: ModelEntry) -> Family:
    assert checkpoint.family is not None
    return checkpoint.family.info.base


def _signature(entry: ModelEntry) -> str:
    """Names the file as it is now on disk: a replaced file is loaded again."""
    try:
        stat = entry.path.stat() if entry.path is not None else None
    except OSError as exc:
        raise EngineError(
            EngineErrorCode.MODEL_NOT_FOUND,
            f"The file of '{entry.name}' is gone from its folder; refresh the model list.",
        ) from exc
    size, mtime = (stat.st_size, stat.st_mtime_ns) if stat is not None else (0, 0)
    return f"{entry.name}|{entry.path}|{size}|{mtime}"
