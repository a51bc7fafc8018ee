"""inpaint: repaint where the mask is white; the result is RGBA, its alpha the mask.

The alpha is what lets Krita lay the result over the painting as a layer: pixels the
mask left alone are transparent, so nothing outside the selection changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

from PIL import Image

from kd_server import masks
from kd_server.families import Family
from kd_server.generation import GenerationRequest, Task
from kd_server.tasks.base import Prepared, TaskSpec, invalid, size_multiple
from kd_server.tasks.img2img import check_strength, working_image

if TYPE_CHECKING:
    from kd_server.loading import LoadedModel


class Inpaint(TaskSpec):
    task = Task.INPAINT
    image_inputs = frozenset({"image", "mask"})
    uses_strength = True
    pipelines: ClassVar[Mapping[Family, str]] = {
        Family.SD15: "StableDiffusionInpaintPipeline",
        Family.SD15_INPAINT: "StableDiffusionInpaintPipeline",
        Family.SDXL: "StableDiffusionXLInpaintPipeline",
        Family.SDXL_INPAINT: "StableDiffusionXLInpaintPipeline",
        Family.FLUX_DEV: "FluxInpaintPipeline",
        Family.FLUX_SCHNELL: "FluxInpaintPipeline",
        Family.FLUX_FILL: "FluxFillPipeline",
        Family.SD35_MEDIUM: "StableDiffusion3InpaintPipeline",
        Family.SD35_LARGE: "StableDiffusion3InpaintPipeline",
    }
    control_pipelines: ClassVar[Mapping[Family, str]] = {
        Family.SD15: "StableDiffusionControlNetInpaintPipeline",
        Family.SD15_INPAINT: "StableDiffusionControlNetInpaintPipeline",
        Family.SDXL: "StableDiffusionXLControlNetInpaintPipeline",
        Family.SDXL_INPAINT: "StableDiffusionXLControlNetInpaintPipeline",
    }
    union_pipelines: ClassVar[Mapping[Family, str]] = {
        Family.SDXL: "StableDiffusionXLControlNetUnionInpaintPipeline",
        Family.SDXL_INPAINT: "StableDiffusionXLControlNetUnionInpaintPipeline",
    }

    def check(self, request: GenerationRequest) -> None:
        super().check(request)
        image, mask = request.inputs.image, request.inputs.mask
        if mask is None:
            raise invalid("An inpaint job needs a mask (white = repaint).")
        assert image is not None
        if mask.size != image.size:
            raise invalid(
                f"The mask is {mask.width}x{mask.height} but the image is "
                f"{image.width}x{image.height}: they must be the same size."
            )
        if mask.convert("L").getextrema()[1] == 0:
            raise invalid("The mask selects nothing: paint white where the image should change.")
        check_strength(request)

    def prepare(self, request: GenerationRequest, model: LoadedModel) -> Prepared:
        inputs = request.inputs
        assert inputs.image is not None and inputs.mask is not None
        width, height = masks.working_size(
            *inputs.image.size, target=model.working_size, multiple=size_multiple(model.info)
        )
        alpha = masks.prepare_mask(inputs.mask, inputs.mask_grow, inputs.mask_feather)
        repaint = masks.repaint_area(alpha).resize((width, height), Image.Resampling.BILINEAR)
        # The fill covers the selection to the middle of its feather (alpha >= 50%): the
        # outer feather keeps the old pixels, so the blend at the edge starts from them.
        area = alpha.resize((width, height), Image.Resampling.BILINEAR)
        image, _, _ = working_image(request, model, area=area)
        kwargs = {
            "image": image,
            "strength": inputs.strength,
            "mask_image": repaint,
            "width": width,
            "height": height,
        }
        return Prepared(kwargs, inputs.image.size, alpha)

    def finish(self, image: Image.Image, prepared: Prepared) -> Image.Image:
        assert prepared.alpha is not None
        return masks.compose_result(image, prepared.alpha, prepared.output_size)


INPAINT = Inpaint()
