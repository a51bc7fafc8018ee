"""What every task declaration provides, and the steps most tasks share.

A task is declared once, as a `TaskSpec` subclass in its own module: which image
inputs it needs, how a request is checked, which diffusers pipeline runs it for each
model family, how the request becomes that pipeline's arguments, how the output
becomes the result, and what the PNG's parameters record. The engine, the loader and
both API front doors read these declarations instead of branching on the task.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from PIL import Image

from kd_server.families import Family, FamilyInfo
from kd_server.generation import EngineError, EngineErrorCode, GenerationRequest, Task
from kd_server.pngmeta import ParameterText

if TYPE_CHECKING:
    from kd_server.loading import LoadedModel
    from kd_server.upscale.models import LoadedUpscaler


@dataclass(frozen=True)
class Prepared:
    """A request turned into the pipeline's own inputs (besides prompt and sampling)."""

    kwargs: dict[str, Any]
    output_size: tuple[int, int]
    alpha: Image.Image | None = None  # inpaint: the feathered mask at the region's size


class Passes(Protocol):
    """What the engine lends a task that runs several passes (`TaskSpec.run_passes`).

    Every pass reports into one progress stream for the job (steps only grow), and a
    cancel is noticed between steps, tiles and passes (`Cancelled` is raised)."""

    @property
    def working_size(self) -> int: ...

    def plan(self, units: int) -> None:
        """Add `units` (denoising steps, upscaler tiles) to the job's planned total."""

    def check_cancel(self) -> None:
        """Raise `Cancelled` if the job was cancelled."""

    def upscaler(self, name: str | None) -> LoadedUpscaler | None:
        """The named upscaler, loaded (None: Lanczos)."""

    def denoise(
        self, request: GenerationRequest, spec: TaskSpec | None = None, previews: bool = False
    ) -> tuple[list[Image.Image], list[int]]:
        """One pipeline call of `spec` (default: the request's task, which must run in
        one pass): its finished images and their seeds."""

    def enlarge(
        self, image: Image.Image, upscaler: LoadedUpscaler | None, width: int, height: int
    ) -> Image.Image:
        """`image` at `width` x `height`, through the upscaler (one unit per tile)."""


#: A1111's largest clip skip: SD 1.5's text encoder has 12 layers.
MAX_CLIP_SKIP = 12


def invalid(message: str) -> EngineError:
    return EngineError(EngineErrorCode.INVALID_INPUT, message)


class TaskSpec:
    """One task. Subclasses set the class attributes and override what differs."""

    task: ClassVar[Task]
    #: image inputs (`ImageInputs` field names) the task requires; others are refused
    image_inputs: ClassVar[frozenset[str]] = frozenset()
    #: whether `inputs.strength` applies (and is written into the PNG's parameters)
    uses_strength: ClassVar[bool] = False
    #: diffusers pipeline class name per model family (resolved lazily: no torch import)
    pipelines: ClassVar[Mapping[Family, str]]
    #: the same with ControlNets (kd_server.control.pipeline), and with a union ControlNet
    control_pipelines: ClassVar[Mapping[Family, str]]
    union_pipelines: ClassVar[Mapping[Family, str]]

    # -- before queueing -------------------------------------------------------------

    def check(self, request: GenerationRequest) -> None:
        """Refuse a request this task cannot run, with a sentence the artist can act on."""
        sampling = request.sampling
        if sampling.steps < 1 or sampling.batch_size < 1:
            raise invalid("steps and batch_size must be at least 1.")
        if not 1 <= request.conditioning.clip_skip <= MAX_CLIP_SKIP:
            raise invalid(f"clip_skip: must be from 1 to {MAX_CLIP_SKIP}.")
        if "image" in self.image_inputs and request.inputs.image is None:
            raise invalid(f"The {self.task.value} task needs an image: send the region to change.")

    # -- running ---------------------------------------------------------------------

    def runs_passes(self, request: GenerationRequest) -> bool:
        """Whether this request runs as several passes (`run_passes`) rather than one
        pipeline call (`prepare`, `pipeline_arguments`, `finish`)."""
        return False

    def run_passes(
        self, request: GenerationRequest, passes: Passes
    ) -> list[tuple[Image.Image, int]]:
        """The finished images and their seeds, made through `passes`."""
        raise NotImplementedError

    def pipeline_class(self, family: Family) -> Any:
        import diffusers

        return getattr(diffusers, self.pipelines[family])

    def control_pipeline_class(self, family: Family, union: bool = False) -> Any:
        """The pipeline that runs this task with ControlNets (a union one, or plain)."""
        import diffusers

        table = self.union_pipelines if union else self.control_pipelines
        return getattr(diffusers, table[family])

    def prepare(self, request: GenerationRequest, model: LoadedModel) -> Prepared:
        """Scale inputs to the model's working size and build the pipeline's arguments."""
        raise NotImplementedError

    def pipeline_arguments(
        self, request: GenerationRequest, prepared: Prepared, family: Family | None = None
    ) -> dict[str, Any]:
        """Everything the pipeline call takes except generators and callbacks.

        `family` (default: a UNet family) decides the guidance: the CFG scale and the
        negative prompt where the family uses CFG; Flux's distilled guidance where it
        has one; neither for Flux schnell (`guidance_arguments`)."""
        conditioning, sampling = request.conditioning, request.sampling
        return {
            "prompt": conditioning.prompt,
            "num_inference_steps": sampling.steps,
            "num_images_per_prompt": sampling.batch_size,
            **guidance_arguments(request, None if family is None else family.info),
            **text_arguments(family),
            **prepared.kwargs,
        }

    def finish(self, image: Image.Image, prepared: Prepared) -> Image.Image:
        """The model's output -> the result at the size the artist asked for."""
        if image.size != prepared.output_size:
            image = image.resize(prepared.output_size, Image.Resampling.LANCZOS)
        return image

    def parameters(
        self,
        request: GenerationRequest,
        image: Image.Image,
        seed: int,
        model: str,
        sampler: str,
        family: Family | None = None,
    ) -> ParameterText:
        """The recipe written into the PNG (A1111's `parameters` text). For Flux it is
        Forge's: "CFG scale: 1" (no CFG ran) and "Distilled CFG Scale" (the guidance)."""
        conditioning, sampling = request.conditioning, request.sampling
        uses_cfg = family is None or family.info.uses_cfg
        return ParameterText(
            prompt=conditioning.prompt,
            # a family without CFG never read the negative prompt: it is not recorded
            negative_prompt=conditioning.negative_prompt if uses_cfg else "",
            steps=sampling.steps,
            sampler=sampler,
            cfg_scale=sampling.cfg_scale if uses_cfg else 1.0,
            distilled_cfg_scale=distilled_guidance(request, family),
            seed=seed,
            width=image.width,
            height=image.height,
            model=model,
            denoising_strength=request.inputs.strength if self.uses_strength else None,
            loras=tuple((lora.name, lora.weight) for lora in conditioning.loras),
            clip_skip=conditioning.clip_skip,
            vae=request.vae,
        )


def size_multiple(info: FamilyInfo) -> int:
    """What a working size is rounded to: the VAE's 8 pixels for a UNet; 16 for the
    transformers, which also cut the latent into 2x2 patches."""
    return 16 if info.is_transformer else 8


def distilled_guidance(request: GenerationRequest, family: Family | None) -> float | None:
    """Flux's distilled guidance for this job (the family's default when the request
    has none), or None for a family without it."""
    if family is None or not family.info.uses_guidance:
        return None
    guidance = request.sampling.guidance
    return family.info.default_cfg if guidance is None else guidance


def guidance_arguments(request: GenerationRequest, info: FamilyInfo | None) -> dict[str, Any]:
    """The pipeline's guidance arguments. Families with CFG (SD 1.5, SDXL, SD 3.5): the
    CFG scale and the negative prompt. Flux: no negative prompt and no true CFG
    (`true_cfg_scale` stays 1: the CFG scale and the negative prompt are ignored, as
    in Forge); dev and Fill take the distilled guidance as `guidance_scale`, which
    schnell has no input for."""
    conditioning, sampling = request.conditioning, request.sampling
    if info is None or info.uses_cfg:
        return {
            "negative_prompt": conditioning.negative_prompt or None,
            "guidance_scale": sampling.cfg_scale,
        }
    guidance = distilled_guidance(request, info.family)
    return {} if guidance is None else {"guidance_scale": guidance}


#: T5 tokens Flux.1 schnell was distilled with (its model card runs it so; dev and Fill:
#: 512, diffusers' default for every Flux pipeline)
SCHNELL_T5_TOKENS = 256


def text_arguments(family: Family | None) -> dict[str, Any]:
    """How long the T5 prompt is, where the family's default differs from diffusers'."""
    return {"max_sequence_length": SCHNELL_T5_TOKENS} if family is Family.FLUX_SCHNELL else {}


def check_family(request: GenerationRequest, family: Family) -> None:
    """Refuse, with a sentence, what the checkpoint's family cannot do (the engine
    calls it with the job's checkpoint; ControlNets and IP-Adapters are checked by
    `kd_server.control`)."""
    info = family.info
    if request.sampling.guidance is not None and not info.uses_guidance:
        raise invalid(
            f"guidance: {info.label} has no distilled guidance (Flux.1 dev and Fill have "
            "it); leave guidance out"
            + (
                " and use cfg_scale instead."
                if info.uses_cfg
                else ": this model runs without any guidance."
            )
        )
    if info.is_transformer and request.conditioning.clip_skip != 1:
        raise invalid(
            f"clip_skip: {info.label} reads its text encoders' own layers; Clip skip applies "
            "to SD 1.5 and SDXL only: set it to 1."
        )


def whole_image_mask(width: int, height: int) -> Image.Image:
    """A 9-channel inpaint model runs every task as inpaint: repaint everything."""
    return Image.new("L", (width, height), 255)
