"""upscale: enlarge an image (an upscaler model, or Lanczos), then refine it tile by tile.

The enlargement adds pixels but no detail a model would paint; the refine is img2img
at low strength on overlapping tiles of the model's working size, blended with
feathered weights (`kd_server.upscale.tiling`), so any size works in the memory of
one tile and no seam shows. The same two steps are the second pass of a hi-res
txt2img (`tasks.txt2img`). docs/upscale.md explains the choices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

from PIL import Image

from kd_server import fill, masks
from kd_server.families import Family
from kd_server.generation import (
    MAX_SEED,
    Conditioning,
    FillMode,
    GenerationRequest,
    ImageInputs,
    Sampling,
    Task,
    Upscaling,
)
from kd_server.pngmeta import ParameterText
from kd_server.tasks.base import (
    Passes,
    Prepared,
    TaskSpec,
    invalid,
    size_multiple,
    whole_image_mask,
)
from kd_server.upscale.models import model_tile_count
from kd_server.upscale.tiling import StripBlender, Tile, tile_grid

if TYPE_CHECKING:
    from kd_server.loading import LoadedModel
    from kd_server.upscale.models import LoadedUpscaler

#: The largest side an upscale may reach: tiles bound the memory, not the size.
MAX_UPSCALE_SIDE = 8192
#: Tiles overlap by this fraction of their side (at least `MIN_OVERLAP` pixels).
OVERLAP_FRACTION = 8
MIN_OVERLAP = 32
#: A step so far apart that neighbouring tiles' noise never repeats.
TILE_SEED_STRIDE = 1_000_003


def refine_steps(upscaling: Upscaling, sampling: Sampling) -> int:
    """Denoising steps each refine tile runs (as img2img counts them)."""
    steps = upscaling.steps or sampling.steps
    return min(int(steps * upscaling.strength), steps)


def refine_tiles(
    width: int, height: int, upscaling: Upscaling, working_size: int
) -> list[list[Tile]]:
    """The tiles of the refine: `tile_size` (or the working size), multiples of 8."""
    tile = max(64, (upscaling.tile_size or working_size) // 8 * 8)
    overlap = max(MIN_OVERLAP, tile // OVERLAP_FRACTION) // 8 * 8
    return tile_grid(width, height, tile, overlap)


def plan_units(
    source: tuple[int, int],
    upscaling: Upscaling,
    sampling: Sampling,
    model: LoadedUpscaler | None,
    working_size: int,
) -> int:
    """The progress units of one image's upscale: upscaler tiles, then refine steps."""
    units = model_tile_count(source, model, upscaling.width, upscaling.height)
    if upscaling.strength > 0:
        tiles = refine_tiles(upscaling.width, upscaling.height, upscaling, working_size)
        units += sum(len(row) for row in tiles) * refine_steps(upscaling, sampling)
    return units


def upscale_and_refine(
    image: Image.Image,
    request: GenerationRequest,
    upscaling: Upscaling,
    model: LoadedUpscaler | None,
    seed: int,
    passes: Passes,
) -> Image.Image:
    """One image enlarged to `upscaling`'s size and refined (if its strength > 0)."""
    enlarged = passes.enlarge(image, model, upscaling.width, upscaling.height)
    if upscaling.strength <= 0:
        return enlarged
    rows = refine_tiles(enlarged.width, enlarged.height, upscaling, passes.working_size)
    # The refined rows replace the enlarged ones in place: tiles below never read them.
    blender = StripBlender(enlarged.width, enlarged.height, into=enlarged)
    number = 0
    for index, row in enumerate(rows):
        for tile in row:
            tile_request = _tile_request(request, upscaling, enlarged.crop(tile.box), seed, number)
            images, _ = passes.denoise(tile_request, REFINE_TILE)
            blender.add(tile, images[0])
            number += 1
        blender.end_row(rows, index)
    return blender.finish()


def _tile_request(
    request: GenerationRequest, upscaling: Upscaling, tile: Image.Image, seed: int, number: int
) -> GenerationRequest:
    """One tile's img2img (`RefineTile`): the job's prompts, LoRAs and sampler, no
    control layers (they cover the whole picture, not the tile), the refine's strength
    and steps."""
    conditioning = request.conditioning
    return GenerationRequest(
        task=Task.UPSCALE,
        conditioning=Conditioning(
            prompt=conditioning.prompt,
            negative_prompt=conditioning.negative_prompt,
            loras=list(conditioning.loras),
        ),
        sampling=replace(
            request.sampling,
            steps=upscaling.steps or request.sampling.steps,
            seed=(seed + number * TILE_SEED_STRIDE) % (MAX_SEED + 1),
            batch_size=1,
        ),
        inputs=ImageInputs(image=tile, strength=upscaling.strength),
        model=request.model,
        width=tile.width,
        height=tile.height,
    )


def opaque_picture(image: Image.Image, mode: FillMode, seed: int) -> Image.Image:
    """The RGB picture the upscaler and the refine see. Transparent pixels have no
    colour: they are filled as img2img fills them (`kd_server.fill`; KEEP: grey), never
    laid on white, which would bleed a white fringe into the opaque edges when the
    upscaler and the refine mix neighbouring pixels."""
    if not masks.has_transparency(image):
        return image.convert("RGB")
    return fill.apply(image.convert("RGBA"), mode, None, seed)


def with_alpha_of(source: Image.Image, result: Image.Image) -> Image.Image:
    """`result` with `source`'s transparency enlarged to its size (Lanczos, on its own:
    no model ever sees the alpha channel); an opaque source gives the RGB result."""
    if not masks.has_transparency(source):
        return result
    alpha = source.convert("RGBA").getchannel("A")
    rgba = result.convert("RGBA")
    rgba.putalpha(alpha.resize(result.size, Image.Resampling.LANCZOS))
    return rgba


def check_upscaling(upscaling: Upscaling, field: str) -> None:
    """The target and the refine's settings, whichever task carries them."""
    if not (1 <= upscaling.width <= MAX_UPSCALE_SIDE and 1 <= upscaling.height <= MAX_UPSCALE_SIDE):
        raise invalid(
            f"{field}: {upscaling.width}x{upscaling.height} is outside 1..{MAX_UPSCALE_SIDE} "
            "pixels a side."
        )
    if not 0 <= upscaling.strength <= 1:
        raise invalid(f"{field}: strength must be 0..1, not {upscaling.strength:g}.")
    if upscaling.tile_size is not None and not 64 <= upscaling.tile_size <= 2048:
        raise invalid(f"{field}: tile_size must be 64..2048 pixels, not {upscaling.tile_size}.")
    if upscaling.steps is not None and upscaling.steps < 1:
        raise invalid(f"{field}: steps must be at least 1.")


def upscale_recipe(upscaling: Upscaling, prefix: str) -> tuple[tuple[str, str], ...]:
    """What the PNG records about an upscale (A1111's `Hires ...` keys for hi-res)."""
    pairs = [
        (f"{prefix}resize", f"{upscaling.width}x{upscaling.height}"),
        (f"{prefix}upscaler", upscaling.upscaler or "Lanczos"),
    ]
    if upscaling.steps is not None:
        pairs.append((f"{prefix}steps", str(upscaling.steps)))
    if upscaling.tile_size is not None:
        pairs.append((f"{prefix}tile size", str(upscaling.tile_size)))
    return tuple(pairs)


class Upscale(TaskSpec):
    task = Task.UPSCALE
    image_inputs = frozenset({"image"})
    uses_strength = False  # the refine's strength is `upscaling.strength`
    # The refine runs img2img on each tile; these tables are img2img's.
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
    control_pipelines: ClassVar[Mapping[Family, str]] = {}
    union_pipelines: ClassVar[Mapping[Family, str]] = {}

    def check(self, request: GenerationRequest) -> None:
        super().check(request)
        upscaling = request.upscaling
        if upscaling is None:
            raise invalid("An upscale job needs its target: a factor, or a width and height.")
        check_upscaling(upscaling, "upscale")
        if request.sampling.batch_size != 1:
            raise invalid("An upscale job makes one image: batch_size must be 1.")
        if request.conditioning.control or request.conditioning.reference is not None:
            raise invalid(
                "An upscale job takes no control layers or reference image: the refine "
                "works tile by tile and keeps the picture's own composition."
            )
        if upscaling.strength > 0 and refine_steps(upscaling, request.sampling) < 1:
            raise invalid(
                f"upscale: strength {upscaling.strength:g} leaves no refine step; raise "
                "the strength or the steps, or set the strength to 0 for no refine."
            )

    def runs_passes(self, request: GenerationRequest) -> bool:
        return True

    def run_passes(
        self, request: GenerationRequest, passes: Passes
    ) -> list[tuple[Image.Image, int]]:
        from kd_server.generation import resolve_seed

        image, upscaling = request.inputs.image, request.upscaling
        assert image is not None and upscaling is not None
        model = passes.upscaler(upscaling.upscaler)
        passes.plan(plan_units(image.size, upscaling, request.sampling, model, passes.working_size))
        seed = resolve_seed(request.sampling.seed)
        picture = opaque_picture(image, request.inputs.fill, seed)
        result = upscale_and_refine(picture, request, upscaling, model, seed, passes)
        return [(with_alpha_of(image, result), seed)]

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
        assert upscaling is not None and request.inputs.image is not None
        source = request.inputs.image
        extra = (
            ("Upscaled from", f"{source.width}x{source.height}"),
            *upscale_recipe(upscaling, "Upscale "),
        )
        return replace(
            base,
            denoising_strength=upscaling.strength,
            steps=upscaling.steps or request.sampling.steps,
            extra=extra,
        )


class RefineTile(Upscale):
    """One tile of the refine: img2img at the tile's own size. Not the working size,
    as img2img scales to: the refine exists to add detail at the final resolution,
    and a tile is made the working size already. Run by `upscale_and_refine` through
    `Passes.denoise`; not a task of its own (not in `TASKS`)."""

    def runs_passes(self, request: GenerationRequest) -> bool:
        return False

    def prepare(self, request: GenerationRequest, model: LoadedModel) -> Prepared:
        image = request.inputs.image
        assert image is not None
        width, height = masks.snap_size(image.width, image.height, size_multiple(model.info))
        tile = image if image.size == (width, height) else image.resize((width, height))
        kwargs: dict[str, Any] = {"image": tile, "strength": request.inputs.strength}
        if model.info.is_inpaint:
            kwargs.update(mask_image=whole_image_mask(width, height), width=width, height=height)
        elif model.info.is_transformer:  # Flux and SD 3.5 would work at their default size
            kwargs.update(width=width, height=height)
        return Prepared(kwargs, image.size)


UPSCALE = Upscale()
REFINE_TILE = RefineTile()
