"""txt2img: a picture from the prompt alone, at the asked-for size."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from PIL import Image

from kd_server import masks
from kd_server.families import Family
from kd_server.generation import GenerationRequest, Task
from kd_server.tasks.base import Prepared, TaskSpec, whole_image_mask

if TYPE_CHECKING:
    from kd_server.loading import LoadedModel


class Txt2Img(TaskSpec):
    task = Task.TXT2IMG
    pipelines: ClassVar[Mapping[Family, str]] = {
        Family.SD15: "StableDiffusionPipeline",
        Family.SD15_INPAINT: "StableDiffusionInpaintPipeline",
        Family.SDXL: "StableDiffusionXLPipeline",
        Family.SDXL_INPAINT: "StableDiffusionXLInpaintPipeline",
    }
    control_pipelines: ClassVar[Mapping[Family, str]] = {
        Family.SD15: "StableDiffusionControlNetPipeline",
        Family.SD15_INPAINT: "StableDiffusionControlNetInpaintPipeline",
        Family.SDXL: "StableDiffusionXLControlNetPipeline",
        Family.SDXL_INPAINT: "StableDiffusionXLControlNetInpaintPipeline",
    }
    union_pipelines: ClassVar[Mapping[Family, str]] = {
        Family.SDXL: "StableDiffusionXLControlNetUnionPipeline",
        Family.SDXL_INPAINT: "StableDiffusionXLControlNetUnionInpaintPipeline",
    }

    def prepare(self, request: GenerationRequest, model: LoadedModel) -> Prepared:
        width, height = masks.snap_size(request.width, request.height)
        kwargs: dict[str, Any] = {"width": width, "height": height}
        if model.info.is_inpaint:  # an inpaint model paints a grey canvas from scratch
            blank = Image.new("RGB", (width, height), (127, 127, 127))
            kwargs.update(image=blank, mask_image=whole_image_mask(width, height), strength=1.0)
        return Prepared(kwargs, (width, height))


TXT2IMG = Txt2Img()
