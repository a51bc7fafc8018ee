"""A pipeline from components already in memory, for any family we run.

The loader reads weights from files; the embedded model, the tests' tiny stand-ins
and the GPU benchmark's random-weight models build their modules in code instead.
All of them are put together here, as the class the family's weights load as
(`kd_server.tasks.LOAD_AS`), so they are the same kind of pipeline the engine runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kd_server.families import Family
from kd_server.tasks import LOAD_AS, spec_for


@dataclass
class Components:
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any
    text_encoder_2: Any = None  # SDXL only
    tokenizer_2: Any = None  # SDXL only


def family_kwargs(family: Family) -> dict[str, Any]:
    """Constructor arguments a family's pipelines need besides their modules: SD 1.5
    without its safety checker (artists' own pictures), SDXL inpaint without the
    refiner's aesthetic score."""
    info = family.info
    if not info.is_xl:
        return {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    if info.is_inpaint:
        return {"requires_aesthetics_score": False}
    return {}


def assemble_pipeline(family: Family, parts: Components) -> Any:
    modules: dict[str, Any] = {
        "unet": parts.unet,
        "vae": parts.vae,
        "text_encoder": parts.text_encoder,
        "tokenizer": parts.tokenizer,
        "scheduler": parts.scheduler,
    }
    if family.info.is_xl:
        modules.update(text_encoder_2=parts.text_encoder_2, tokenizer_2=parts.tokenizer_2)
    pipe = spec_for(LOAD_AS).pipeline_class(family)(**modules, **family_kwargs(family))
    pipe.set_progress_bar_config(disable=True)
    return pipe
