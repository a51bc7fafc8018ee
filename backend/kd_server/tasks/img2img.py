"""img2img: repaint a whole image, keeping as much of it as `strength` leaves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from PIL import Image

from kd_server import fill, masks
from kd_server.families import Architecture, Family
from kd_server.generation import GenerationRequest, Task
from kd_server.tasks.base import Prepared, TaskSpec, invalid, size_multiple, whole_image_mask

if TYPE_CHECKING:
    from kd_server.loading import LoadedModel


def check_strength(request: GenerationRequest) -> None:
    """A strength so low that no step runs would return the input unchanged."""
    steps, strength = request.sampling.steps, request.inputs.strength
    if int(steps * strength) < 1:
        raise invalid(
            f"strength {strength:g} with {steps} steps leaves no denoising "
            "step: raise the strength or the number of steps."
        )


def working_image(
    request: GenerationRequest, model: LoadedModel, area: Image.Image | None = None
) -> tuple[Image.Image, int, int]:
    """The input image at the model's working size, as RGB with `area` (L at the working
    size; inpaint's repaint area) and any transparent pixels filled by `inputs.fill`
    (kd_server.fill: transparency never reads as white paper)."""
    image = request.inputs.image
    assert image is not None
    multiple = size_multiple(model.info)
    width, height = masks.working_size(*image.size, target=model.working_size, multiple=multiple)
    if not masks.has_transparency(image):
        image = image.convert("RGB")  # RGB resizing: opaque pictures keep today's pixels
    scaled = image.resize((width, height), Image.Resampling.LANCZOS)
    filled = fill.apply(scaled, request.inputs.fill, area, request.sampling.seed)
    return filled, width, height


class Img2Img(TaskSpec):
    task = Task.IMG2IMG
    image_inputs = frozenset({"image"})
    uses_strength = True
    pipelines: ClassVar[Mapping[Family, str]] = {
        Family.SD15: "StableDiffusionImg2ImgPipeline",
        Family.SD15_INPAINT: "StableDiffusionInpaintPipeline",
        Family.SDXL: "StableDiffusionXLImg2ImgPipeline",
        Family.SDXL_INPAINT: "StableDiffusionXLInpaintPipeline",
        Family.FLUX_DEV: "FluxImg2ImgPipeline",
        Family.FLUX_SCHNELL: "FluxImg2ImgPipeline",
        Family.FLUX_FILL: "FluxFillPipeline",
        Family.SD35_MEDIUM: "StableDiffusion3Img2ImgPipeline",
        Family.SD35_LARGE: "StableDiffusion3Img2ImgPipeline",
    }
    control_pipelines: ClassVar[Mapping[Family, str]] = {
        Family.SD15: "StableDiffusionControlNetImg2ImgPipeline",
        Family.SD15_INPAINT: "StableDiffusionControlNetInpaintPipeline",
        Family.SDXL: "StableDiffusionXLControlNetImg2ImgPipeline",
        Family.SDXL_INPAINT: "StableDiffusionXLControlNetInpaintPipeline",
    }
    union_pipelines: ClassVar[Mapping[Family, str]] = {
        Family.SDXL: "StableDiffusionXLControlNetUnionImg2ImgPipeline",
        Family.SDXL_INPAINT: "StableDiffusionXLControlNetUnionInpaintPipeline",
    }

    def check(self, request: GenerationRequest) -> None:
        super().check(request)
        check_strength(request)

    def prepare(self, request: GenerationRequest, model: LoadedModel) -> Prepared:
        assert request.inputs.image is not None
        image, width, height = working_image(request, model)
        kwargs: dict[str, Any] = {"image": image, "strength": request.inputs.strength}
        if model.info.is_inpaint:
            kwargs.update(mask_image=whole_image_mask(width, height), width=width, height=height)
        elif model.info.is_transformer:  # Flux and SD 3.5 would work at their default size
            kwargs.update(width=width, height=height)
        batch = request.sampling.batch_size
        if model.info.architecture is Architecture.SD3 and batch > 1:
            # diffusers' SD 3 img2img encodes image i for seed i of the batch: one copy
            # each (it would find none for the second image and fail)
            kwargs["image"] = [image] * batch
        return Prepared(kwargs, request.inputs.image.size)


IMG2IMG = Img2Img()
