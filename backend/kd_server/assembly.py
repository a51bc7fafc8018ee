"""A pipeline from components already in memory, for any family we run.

The loader reads weights from files; the embedded model, the tests' tiny stand-ins
and the GPU benchmark's random-weight models build their modules in code instead.
All of them are put together here, as the class the family's weights load as
(`kd_server.tasks.LOAD_AS`), so they are the same kind of pipeline the engine runs.
The loader of Flux and SD 3.5 checkpoints from single or split files builds each
component itself and assembles them here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kd_server.families import Architecture, Family
from kd_server.tasks import LOAD_AS, spec_for


@dataclass
class Components:
    """The modules of a pipeline. SD 1.5 / SDXL have a `unet`, Flux and SD 3.5 a
    `transformer`. Text encoders in the family's order: Flux: CLIP-L, T5; SD 3.5: CLIP-L,
    CLIP-G, T5; SDXL: CLIP-L, CLIP-G."""

    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any
    unet: Any = None  # SD 1.5 / SDXL
    text_encoder_2: Any = None  # SDXL, Flux (T5), SD 3.5
    tokenizer_2: Any = None
    transformer: Any = None  # Flux / SD 3.5
    text_encoder_3: Any = None  # SD 3.5 (T5)
    tokenizer_3: Any = None


def family_kwargs(family: Family) -> dict[str, Any]:
    """Constructor arguments a family's pipelines need besides their modules: SD 1.5
    without its safety checker (artists' own pictures), SDXL inpaint without the
    refiner's aesthetic score; Flux and SD 3.5 need none."""
    info = family.info
    if info.is_transformer:
        return {}
    if not info.is_xl:
        return {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    if info.is_inpaint:
        return {"requires_aesthetics_score": False}
    return {}


def pipeline_class(family: Family) -> Any:
    """The diffusers class a family's checkpoint is loaded as."""
    return spec_for(LOAD_AS).pipeline_class(family)


def _modules(family: Family, parts: Components) -> dict[str, Any]:
    info = family.info
    modules: dict[str, Any] = {
        "vae": parts.vae,
        "text_encoder": parts.text_encoder,
        "tokenizer": parts.tokenizer,
        "scheduler": parts.scheduler,
    }
    if info.architecture is Architecture.UNET:
        modules["unet"] = parts.unet
        if info.is_xl:
            modules.update(text_encoder_2=parts.text_encoder_2, tokenizer_2=parts.tokenizer_2)
        return modules
    modules.update(
        transformer=parts.transformer,
        text_encoder_2=parts.text_encoder_2,
        tokenizer_2=parts.tokenizer_2,
    )
    if info.architecture is Architecture.SD3:
        modules.update(text_encoder_3=parts.text_encoder_3, tokenizer_3=parts.tokenizer_3)
    return modules


def assemble_pipeline(family: Family, parts: Components) -> Any:
    pipe = pipeline_class(family)(**_modules(family, parts), **family_kwargs(family))
    pipe.set_progress_bar_config(disable=True)
    return pipe
