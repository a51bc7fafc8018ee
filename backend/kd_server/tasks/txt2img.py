"""txt2img: a picture from the prompt alone, at the asked-for size.

With `request.upscaling` (hi-res fix) it runs in two passes: the picture at `width` x
`height` (a size the model composes well), then enlarged to `upscaling`'s size and
refined tile by tile (`tasks.upscale.upscale_and_refine`), one progress stream for
both."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

from PIL import Image

from kd_server import masks
from kd_server.families import Family
from kd_server.generation import GenerationRequest, Task
from kd_server.pngmeta import ParameterText
from kd_server.tasks.base import (
    Passes,
    Prepared,
    TaskSpec,
    invalid,
    size_multiple,
    whole_image_mask,
)
from kd_server.tasks.upscale import check_upscaling, plan_units, upscale_and_refine, upscale_recipe

if TYPE_CHECKING:
    from kd_server.loading import LoadedModel


class Txt2Img(TaskSpec):
    task = Task.TXT2IMG
    pipelines: ClassVar[Mapping[Family, str]] = {
        Family.SD15: "StableDiffusionPipeline",
        Family.SD15_INPAINT: "StableDiffusionInpaintPipeline",
        Family.SDXL: "StableDiffusionXLPipeline",
        Family.SDXL_INPAINT: "StableDiffusionXLInpaintPipeline",
        Family.FLUX_DEV: "FluxPipeline",
        Family.FLUX_SCHNELL: "FluxPipeline",
        Family.FLUX_FILL: "FluxFillPipeline",
        Family.SD35_MEDIUM: "StableDiffusion3Pipeline",
        Family.SD35_LARGE: "StableDiffusion3Pipeline",
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

    def check(self, request: GenerationRequest) -> None:
        super().check(request)
        upscaling = request.upscaling
        if upscaling is None:
            return
        check_upscaling(upscaling, "hires")
        if upscaling.width < request.width or upscaling.height < request.height:
            raise invalid(
                f"hires: the final size {upscaling.width}x{upscaling.height} is smaller than "
                f"the first pass ({request.width}x{request.height})."
            )

    def runs_passes(self, request: GenerationRequest) -> bool:
        return request.upscaling is not None

    def run_passes(
        self, request: GenerationRequest, passes: Passes
    ) -> list[tuple[Image.Image, int]]:
        """Hi-res fix: the first pass, then each image upscaled and refined."""
        upscaling = request.upscaling
        assert upscaling is not None
        first = replace(request, upscaling=None)
        model = passes.upscaler(upscaling.upscaler)
        width, height = masks.snap_size(request.width, request.height)
        batch = request.sampling.batch_size
        units = plan_units((width, height), upscaling, request.sampling, model, passes.working_size)
        passes.plan(request.sampling.steps + batch * units)
        images, seeds = passes.denoise(first, previews=True)
        return [
            (upscale_and_refine(image, request, upscaling, model, seed, passes), seed)
            for image, seed in zip(images, seeds, strict=True)
        ]

    def parameters(
        self,
        request: GenerationRequest,
        image: Image.Image,
        seed: int,
        model: str,
        sampler: str,
        family: Family | None = None,
    ) -> ParameterText:
        base = super().parameters(request, image, seed, model, sampler, family)
        upscaling = request.upscaling
        if upscaling is None:
            return base
        extra = (
            ("Hires upscale", f"{upscaling.width / max(1, request.width):.3g}"),
            *upscale_recipe(upscaling, "Hires "),
        )
        return replace(base, denoising_strength=upscaling.strength, extra=extra)

    def prepare(self, request: GenerationRequest, model: LoadedModel) -> Prepared:
        width, height = masks.snap_size(
            request.width, request.height, multiple=size_multiple(model.info)
        )
        kwargs: dict[str, Any] = {"width": width, "height": height}
        if model.info.is_inpaint:  # an inpaint model paints a grey canvas from scratch
            blank = Image.new("RGB", (width, height), (127, 127, 127))
            kwargs.update(image=blank, mask_image=whole_image_mask(width, height), strength=1.0)
        return Prepared(kwargs, (width, height))


TXT2IMG = Txt2Img()
