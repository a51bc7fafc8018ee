"""The model library: which checkpoints and LoRAs the server can offer, by stable name.

Why it works this way:
- Artists already have models in A1111's or ComfyUI's folders; we read those folders in
  place (never copy) and also accept our own `checkpoints/` + `loras/` layout.
- A model's family decides how it is loaded, so the library tells families apart from
  the safetensors header (tensor names and shapes) without loading any weights.
- A bad file must never break the scan: every file becomes an entry, usable or not,
  with a reason an artist can act on. Pickle files can run code when loaded, so they
  are never opened at all.
- Clients pick models by name. Names are looked up in the scanned table only, so no
  request can name a path outside the model folders.

Naming rules (also in docs/models.md):
- A name is the path relative to its model folder (`models/Stable-diffusion`,
  `checkpoints`, ...), with `/` separators and without `.safetensors`:
  `sdxl/juggernaut`. Diffusers folders are named by their folder path. Pickle files
  keep their extension (`old.ckpt`) so they never collide with a converted copy.
- If two entries of the same kind get the same name, the first in scan order keeps it
  and later ones are called `name (label)`, where label is the configured folder's
  base name (then `name (label 2)`, ...). Scan order is the order of the configured
  folders, then A1111/ComfyUI/own subfolders in a fixed order, then sorted paths.
- Links (symlinks) whose target is outside their model folder are listed unusable
  (files, diffusers folders) or reported as a problem (other folders); links that stay
  inside are not followed for folders, because their content is listed already.
"""

from __future__ import annotations

import difflib
import enum
import json
import logging
import os
import stat
import struct
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kd_server.control.files import ControlFacts, ControlRole, EmbedSource, detect_control
from kd_server.embeddings import EMBEDDING_SUBDIRS, EmbeddingFile, find_embeddings
from kd_server.families import Architecture, Family
from kd_server.fast_modes import FastMode, detect_fast_mode, family_fast_mode, naming_metadata
from kd_server.generation import EngineError, EngineErrorCode
from kd_server.hashes import HashStore, library_files
from kd_server.split_layout import (
    GGUF_SUFFIX,
    TEXT_ENCODER_SUBDIRS,
    TRANSFORMER_SUBDIRS,
    GgufError,
    ModelParts,
    PartFile,
    PartKind,
    choose_part,
    find_parts,
    gguf_quantisation,
    missing_parts_reason,
    read_gguf,
    safetensors_quantisation,
)
from kd_server.taesd_files import PreviewDecoder, find_preview_decoders
from kd_server.trigger_words import trigger_words
from kd_server.upscale.files import UPSCALER_SUBDIRS, UpscalerFile, find_upscalers
from kd_server.vae_files import VAE_SUBDIRS, VaeFile, find_vaes

log = logging.getLogger(__name__)

EMBEDDED_NAME = "tiny-sd15-embedded"

SAFETENSORS_SUFFIX = ".safetensors"
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
MAX_HEADER_BYTES = 64 * 1024 * 1024  # real SDXL headers are a few hundred KB

CONVERT_HINT = (
    "Pickle files can run code when they are loaded, so the server never opens them. "
    "If you trust the file, convert it once to .safetensors, e.g. "
    'python -c "import torch, safetensors.torch as s; '
    "d = torch.load('MODEL.ckpt', map_location='cpu', weights_only=True); "
    "d = d.get('state_dict', d); "
    "s.save_file({k: v.contiguous() for k, v in d.items() if hasattr(v, 'contiguous')}, "
    "'MODEL.safetensors')\", then refresh the model list."
)


class EntryKind(str, enum.Enum):
    CHECKPOINT = "checkpoint"
    LORA = "lora"
    CONTROL = "control"  # ControlNet, union ControlNet or IP-Adapter (`facts.role`)
    IMAGE_ENCODER = "image-encoder"  # the CLIP vision model IP-Adapters read
    DEPTH_ESTIMATOR = "depth-estimator"  # the depth preprocessor's model


class ModelFormat(str, enum.Enum):
    SAFETENSORS = "safetensors"
    DIFFUSERS = "diffusers"
    EMBEDDED = "embedded"
    PICKLE = "pickle"  # listed only, never opened
    SPLIT = "split"  # assembled from ComfyUI split files; `ModelEntry.parts` says which


class EntryStatus(str, enum.Enum):
    USABLE = "usable"
    UNUSABLE = "unusable"  # not a model we can run; `reason` says why
    REFUSED = "refused"  # we will not open it (pickle); `reason` says how to convert


@dataclass(frozen=True)
class ModelEntry:
    """One checkpoint or LoRA as the library lists it."""

    name: str
    kind: EntryKind
    path: Path | None  # None for the embedded model
    format: ModelFormat
    family: Family | None  # for LoRAs a hint only (None when the keys do not tell)
    status: EntryStatus
    reason: str | None = None
    facts: ControlFacts | None = None  # control-related files: role, layout, widths
    fast: FastMode | None = None  # LCM, Lightning, Hyper-SD, Turbo (kd_server.fast_modes)
    trigger_words: tuple[str, ...] = ()  # LoRAs: from the header (kd_server.trigger_words)
    #: SPLIT checkpoints: the transformer (also `path`), text encoder and VAE files
    parts: ModelParts | None = None

    @property
    def usable(self) -> bool:
        return self.status is EntryStatus.USABLE


@dataclass(frozen=True)
class ScanProblem:
    """Something the scan could not read; reported, never raised."""

    path: Path
    message: str


# --------------------------------------------------------------------------------------
# What a file or folder is (detection, independent of where it was found)


class Content(enum.Enum):
    CHECKPOINT = "checkpoint"
    LORA = "lora"
    CONTROL = "control"
    IMAGE_ENCODER = "image-encoder"
    DEPTH_ESTIMATOR = "depth-estimator"
    OTHER = "other"  # not a model (garbage, VAE, embedding, ...) or unreadable


@dataclass(frozen=True)
class Detection:
    content: Content
    family: Family | None
    status: EntryStatus
    reason: str | None = None
    facts: ControlFacts | None = None
    #: the metadata entries that name the model (fast_modes.NAME_KEYS)
    metadata: tuple[tuple[str, str], ...] = ()
    #: a LoRA's trigger words from its header metadata (kd_server.trigger_words)
    trigger_words: tuple[str, ...] = ()
    #: Flux / SD 3.5 files: the parts the file itself holds ("transformer", "vae",
    #: "clip_l", "clip_g", "t5xxl"); the rest come from the split-layout folders
    parts_inside: tuple[str, ...] = ()
    #: how the transformer's weights are stored (split_layout.ModelParts.quantisation)
    quantisation: str | None = None


def _unusable(reason: str, content: Content = Content.OTHER) -> Detection:
    return Detection(content, None, EntryStatus.UNUSABLE, reason)


class HeaderError(Exception):
    """The file is not a readable safetensors file; `detection` says what it is."""

    def __init__(self, detection: Detection) -> None:
        super().__init__(detection.reason)
        self.detection = detection


def _looks_like_pickle(head: bytes) -> bool:
    """PyTorch saves zip archives (PK..) or raw pickles (protocol byte 0x80)."""
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


@dataclass(frozen=True)
class SafetensorsHeader:
    shapes: dict[str, tuple[int, ...]]  # tensor name -> shape
    metadata: dict[str, str]  # the free-form `__metadata__` (string values only)
    dtypes: dict[str, str] = field(default_factory=dict)  # tensor name -> "F16", "F8_E4M3"


def read_safetensors_header(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, read from the header alone (no weights are loaded)."""
    return read_safetensors(path).shapes


def read_safetensors(path: Path) -> SafetensorsHeader:
    """Shapes and metadata, read from the header alone (no weights are loaded).

    Format: 8-byte little-endian header length, a JSON object, then the tensor data.
    The length is checked against the file size and capped, and the declared data
    offsets must fit in the file, so truncated downloads are caught here.
    """
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                raise HeaderError(_unusable("The file is empty (0 bytes): download it again."))
            head = handle.read(8)
            if len(head) < 8:
                raise HeaderError(_unusable(f"Not a safetensors file: only {size} bytes long."))
            (length,) = struct.unpack("<Q", head)
            # A real header's length can start with 0x80 too (1 file in 256): only a
            # length that does not fit the file says "pickle".
            if not 2 <= length <= size - 8 and _looks_like_pickle(head):
                raise HeaderError(
                    Detection(
                        Content.OTHER,
                        None,
                        EntryStatus.REFUSED,
                        "This is a PyTorch pickle file with a .safetensors name. " + CONVERT_HINT,
                    )
                )
            if length < 2 or length > size - 8:
                raise HeaderError(
                    _unusable(
                        f"Not a safetensors file (or a truncated one): its header claims "
                        f"{length} bytes but the file has {size}."
                    )
                )
            if length > MAX_HEADER_BYTES:
                raise HeaderError(
                    _unusable(f"Not a usable safetensors file: its header is {length} bytes.")
                )
            raw = handle.read(length)
    except OSError as exc:
        raise HeaderError(_unusable(f"Cannot read the file: {exc.strerror or exc}.")) from exc
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HeaderError(
            _unusable("Not a safetensors file: its header is not valid JSON.")
        ) from exc
    if not isinstance(header, dict):
        raise HeaderError(_unusable("Not a safetensors file: its header is not a JSON object."))
    shapes = _tensor_shapes(header, data_size=size - 8 - length)
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict):
        metadata = {}
    dtypes = {
        name: info["dtype"]
        for name, info in header.items()
        if name in shapes and isinstance(info.get("dtype"), str)
    }
    return SafetensorsHeader(
        shapes, {k: v for k, v in metadata.items() if isinstance(v, str)}, dtypes
    )


def _tensor_shapes(header: dict[str, Any], data_size: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    data_end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            shape = tuple(int(n) for n in info["shape"])
            begin, end = (int(n) for n in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise HeaderError(
                _unusable(f"Not a valid safetensors file: tensor {name!r} is malformed.")
            ) from exc
        if begin < 0 or end < begin:
            raise HeaderError(
                _unusable(f"Not a valid safetensors file: tensor {name!r} is malformed.")
            )
        shapes[name] = shape
        data_end = max(data_end, end)
    if data_end > data_size:
        raise HeaderError(
            _unusable(
                f"The file is truncated: it declares {data_end} bytes of tensor data but holds "
                f"{data_size}. Download it again."
            )
        )
    if not shapes:
        raise HeaderError(_unusable("The safetensors file holds no tensors."))
    return shapes


UNET_INPUT_SUFFIX = "model.diffusion_model.input_blocks.0.0.weight"
LORA_MARKERS = (
    ".lora_down.",
    ".lora_up.",
    ".lora_a.",
    ".lora_b.",
    ".lora.down.",
    ".lora.up.",
    "_lora1.down.",  # XLabs' Flux LoRAs (double_blocks.N.processor.proj_lora1.down.weight)
    "_lora2.down.",
)
LORA_PREFIXES = (
    "lora_unet_",
    "lora_te_",
    "lora_te1_",
    "lora_te2_",
    "lora_te3_",
    "lora_transformer_",
)
#: Key parts of LoRAs for Flux (BFL / ComfyUI / kohya / diffusers / XLabs names) and
#: SD 3.x (SAI / kohya names: joint_blocks; diffusers: transformer.transformer_blocks).
FLUX_LORA_MARKS = ("double_blocks", "single_blocks", "single_transformer_blocks")
SD3_LORA_MARKS = ("joint_blocks",)


def _is_lora(names: Iterable[str]) -> bool:
    for name in names:
        lowered = name.lower()
        if lowered.startswith(LORA_PREFIXES) or any(m in lowered for m in LORA_MARKERS):
            return True
    return False


def _lora_family(names: list[str]) -> Family | None:
    """A hint only: Flux's or SD 3's block names mean those; else a second text encoder
    means SDXL, a single one SD1.x."""
    transformer = _transformer_lora_family(names)
    if transformer is not None:
        return transformer
    if any(n.startswith(("lora_te2_", "text_encoder_2.", "te2.")) for n in names):
        return Family.SDXL
    if any(n.startswith(("lora_te_", "lora_te1_", "text_encoder.", "te1.")) for n in names):
        return Family.SD15
    return None


def _transformer_lora_family(names: list[str]) -> Family | None:
    """Flux LoRAs are hinted as Flux.1 dev (nearly all are trained on it; they load on
    schnell and Fill too). SD 3 LoRAs: medium when they touch the dual-attention layers
    (attn2) or stop below block 24, large when they reach block 24 or beyond."""
    if any(m in n for n in names for m in FLUX_LORA_MARKS):
        return Family.FLUX_DEV
    sd3 = [
        n
        for n in names
        if any(m in n for m in SD3_LORA_MARKS)
        or n.startswith(("transformer.transformer_blocks.", "lora_transformer_transformer_blocks_"))
    ]
    if not sd3:
        return None
    if any("attn2" in n for n in sd3):
        return Family.SD35_MEDIUM
    blocks = [_block_number(n) for n in sd3]
    if max((b for b in blocks if b is not None), default=-1) >= 24:
        return Family.SD35_LARGE
    return Family.SD35_MEDIUM if any(b is not None for b in blocks) else Family.SD35_LARGE


def _block_number(name: str) -> int | None:
    """N in `...blocks.N.` / `..._blocks_N_...` (None when there is none)."""
    for marker in ("blocks.", "blocks_"):
        at = name.find(marker)
        if at >= 0:
            digits = ""
            for char in name[at + len(marker) :]:
                if not char.isdigit():
                    break
                digits += char
            if digits:
                return int(digits)
    return None


def _detect_lora(names: list[str]) -> Detection:
    """A LoRA, with the family hint its key names give."""
    return Detection(Content.LORA, _lora_family(names), EntryStatus.USABLE)


def _has(names: Iterable[str], prefix: str) -> bool:
    return any(n.startswith(prefix) for n in names)


def _contains(names: Iterable[str], part: str) -> bool:
    return any(part in n for n in names)


SUPPORTED_FAMILIES = "SD 1.5, SDXL, Flux.1 (dev, schnell, Fill) or SD 3.5 (medium, large)"


def _unsupported(what: str) -> Detection:
    return _unusable(
        f"{what} checkpoints are not supported: use an {SUPPORTED_FAMILIES} checkpoint.",
        Content.CHECKPOINT,
    )


def detect_tensors(
    shapes: dict[str, tuple[int, ...]],
    dtypes: dict[str, str] | None = None,
    quantisation: str | None = None,
) -> Detection:
    """Tell the architecture from tensor names and shapes (never from widths like 320/768,
    which differ in small test models). `dtypes` (safetensors) tell fp8 files apart;
    `quantisation` is given for GGUF files, whose header says it directly."""
    names = list(shapes)
    if _is_lora(names):
        return _detect_lora(names)
    control = detect_control(shapes)
    if control is not None:
        return _control_detection(control)
    transformer = _detect_transformer(shapes, dtypes or {}, quantisation)
    if transformer is not None:
        return transformer
    unet_key = next((n for n in names if n.endswith(UNET_INPUT_SUFFIX)), None)
    if unet_key is None:
        return _detect_non_checkpoint(names)
    # Some tools save with an extra prefix ("module.", "state_dict."): read keys under it.
    prefix = unet_key[: -len(UNET_INPUT_SUFFIX)]
    if _has(names, prefix + "control_model.") or _contains(names, "input_hint_block"):
        return _unusable("This is a ControlNet, not a checkpoint.")
    return _detect_checkpoint(names, prefix, shapes[unet_key])


_CONTENT_OF_ROLE = {
    ControlRole.CONTROLNET: Content.CONTROL,
    ControlRole.UNION: Content.CONTROL,
    ControlRole.IP_ADAPTER: Content.CONTROL,
    ControlRole.IMAGE_ENCODER: Content.IMAGE_ENCODER,
    ControlRole.DEPTH_ESTIMATOR: Content.DEPTH_ESTIMATOR,
}


def _control_detection(found: Any) -> Detection:
    """A control-related file (kd_server.control.files) as the library lists it."""
    content = _CONTENT_OF_ROLE.get(found.role, Content.CONTROL)
    if not found.usable:
        return Detection(content, found.family, EntryStatus.UNUSABLE, found.reason)
    return Detection(content, found.family, EntryStatus.USABLE, facts=found.facts)


def _detect_checkpoint(names: list[str], prefix: str, unet_shape: tuple[int, ...]) -> Detection:
    if _has(names, prefix + "cond_stage_model.model."):
        return _unsupported("SD 2.x (OpenCLIP text encoder)")
    is_sd1 = _has(names, prefix + "cond_stage_model.transformer.")
    is_xl = _has(names, prefix + "conditioner.embedders.1.")
    if not is_xl and _has(names, prefix + "conditioner.embedders.0.model."):
        return _unsupported("SDXL refiner")
    if not (is_sd1 or is_xl):
        return _unusable(
            "This file holds only a UNet (no text encoder): use a full checkpoint.",
            Content.CHECKPOINT,
        )
    if not _has(names, prefix + "first_stage_model."):
        return _unusable(
            "This checkpoint has no VAE (first_stage_model.*): use a full checkpoint.",
            Content.CHECKPOINT,
        )
    channels = unet_shape[1] if len(unet_shape) == 4 else -1
    if channels == 4:
        family = Family.SDXL if is_xl else Family.SD15
    elif channels == 9:
        family = Family.SDXL_INPAINT if is_xl else Family.SD15_INPAINT
    else:
        what = "SDXL" if is_xl else "SD 1.x"
        return _unusable(
            f"This {what} checkpoint's UNet takes {channels} input channels (4 = normal, "
            "9 = inpaint); variants such as InstructPix2Pix or depth models are not supported.",
            Content.CHECKPOINT,
        )
    if prefix:
        return Detection(
            Content.CHECKPOINT,
            family,
            EntryStatus.UNUSABLE,
            f"This {family.info.label} checkpoint's tensor names carry the extra prefix "
            f"'{prefix}', which the loader does not expect. Re-save it without the prefix, e.g. "
            "python -c \"import safetensors.torch as s; d = s.load_file('IN.safetensors'); "
            f"s.save_file({{k.removeprefix('{prefix}'): v for k, v in d.items()}}, "
            "'OUT.safetensors')\"",
        )
    return Detection(Content.CHECKPOINT, family, EntryStatus.USABLE)


# --- Flux and SD 3.5 ----------------------------------------------------------------

#: Markers of transformer models we recognise but do not run (diffusers' names for them).
OTHER_TRANSFORMERS = (
    ("distilled_guidance_layer.", "Chroma"),
    ("single_stream_modulation.", "Flux.2"),
    ("early_stream_modulations.", "Flux.2"),
)
#: The parts an all-in-one file may carry besides the transformer, by key prefix.
EMBEDDED_PARTS = (
    ("vae", ("first_stage_model.", "vae.")),
    ("clip_l", ("text_encoders.clip_l.",)),
    ("clip_g", ("text_encoders.clip_g.",)),
    ("t5xxl", ("text_encoders.t5xxl.",)),
)


def _prefix_of(names: list[str], marker: str, anchor: str) -> str | None:
    """The prefix ("" or "model.diffusion_model.") under which `marker` appears in a key,
    provided `prefix + anchor` is a key too."""
    for name in names:
        at = name.find(marker)
        if at >= 0 and (at == 0 or name[at - 1] == "."):
            prefix = name[:at]
            if prefix + anchor in names:
                return prefix
    return None


def _parts_inside(names: list[str]) -> tuple[str, ...]:
    inside = ["transformer"]
    for part, prefixes in EMBEDDED_PARTS:
        if any(n.startswith(prefixes) for n in names):
            inside.append(part)
    return tuple(inside)


def _detect_transformer(
    shapes: dict[str, tuple[int, ...]], dtypes: dict[str, str], quantisation: str | None
) -> Detection | None:
    """A Flux or SD 3 file (transformer-only or all-in-one), or None when it is neither.

    BFL / SAI key layouts, with or without ComfyUI's `model.diffusion_model.` prefix, and
    diffusers' own layout (a `transformer/` weights file saved on its own)."""
    names = list(shapes)
    name_set = set(names)
    flux = _prefix_of(names, "double_blocks.", "img_in.weight")
    looks_flux = flux is not None or (
        _contains(names, "double_blocks.") and _contains(names, "single_blocks.")
    )
    if looks_flux and (flux is None or flux + "final_layer.linear.weight" not in name_set):
        return _unusable(
            "An incomplete Flux transformer (no img_in or final_layer tensors): download it again.",
            Content.CHECKPOINT,
        )
    diffusers_flux = {"x_embedder.weight", "context_embedder.weight", "proj_out.weight"} <= (
        name_set
    ) and _has(names, "single_transformer_blocks.")
    sd3 = _prefix_of(names, "joint_blocks.", "x_embedder.proj.weight")
    if _contains(names, "joint_blocks.") and (
        sd3 is None or sd3 + "final_layer.linear.weight" not in name_set
    ):
        return _unusable(
            "An incomplete SD 3 transformer (no x_embedder or final_layer tensors): download "
            "it again.",
            Content.CHECKPOINT,
        )
    diffusers_sd3 = (
        not diffusers_flux
        and {"pos_embed.proj.weight", "context_embedder.weight", "proj_out.weight"} <= name_set
        and _has(names, "transformer_blocks.0.attn.add_q_proj.")
    )
    if flux is None and sd3 is None and not diffusers_flux and not diffusers_sd3:
        return None
    prefix = flux if flux is not None else sd3 if sd3 is not None else ""
    for marker, what in OTHER_TRANSFORMERS:
        if _has(names, prefix + marker):
            return _unsupported(what)
    if quantisation is None:
        quantisation = safetensors_quantisation(dtypes, shapes, prefix)
    if flux is not None or diffusers_flux:
        if diffusers_flux:
            image_in, image_out = shapes["x_embedder.weight"], shapes["proj_out.weight"]
            guidance = _has(names, "time_text_embed.guidance_embedder.")
        else:
            image_in = shapes[prefix + "img_in.weight"]
            image_out = shapes.get(prefix + "final_layer.linear.weight", ())
            guidance = _has(names, prefix + "guidance_in.")
        family_or_refusal = _flux_family(image_in, image_out, guidance)
    else:
        if diffusers_sd3:
            dual = _has(names, "transformer_blocks.0.attn2.")
            qk_norm = _has(names, "transformer_blocks.0.attn.norm_q.")
        else:
            dual = _contains(names, ".x_block.attn2.")
            qk_norm = _contains(names, ".x_block.attn.ln_q.")
        if dual:
            family_or_refusal = Family.SD35_MEDIUM
        elif qk_norm:
            family_or_refusal = Family.SD35_LARGE
        else:
            family_or_refusal = _unsupported(
                "SD 3 medium (3.0; no q/k normalisation, unlike SD 3.5)"
            )
    if isinstance(family_or_refusal, Detection):
        return family_or_refusal
    return Detection(
        Content.CHECKPOINT,
        family_or_refusal,
        EntryStatus.USABLE,
        parts_inside=_parts_inside(names) if prefix else ("transformer",),
        quantisation=quantisation,
    )


def _flux_family(
    image_in: tuple[int, ...], image_out: tuple[int, ...], guidance: bool
) -> Family | Detection:
    """dev / schnell by the guidance embedder; Fill by img_in reading more than twice the
    features it writes (384 = 64 latent + 64 masked-image + 256 mask, against 64)."""
    features_in = image_in[1] if len(image_in) == 2 else 0
    features_out = image_out[0] if len(image_out) == 2 else 0
    if features_in == features_out:
        return Family.FLUX_DEV if guidance else Family.FLUX_SCHNELL
    if features_in == 2 * features_out:
        return _unsupported("Flux.1 Depth / Canny (control image channels)")
    if features_in > 2 * features_out and guidance:
        return Family.FLUX_FILL
    return _unusable(
        f"A Flux transformer whose img_in reads {features_in} features and writes "
        f"{features_out}: not dev, schnell or Fill.",
        Content.CHECKPOINT,
    )


def _detect_non_checkpoint(names: list[str]) -> Detection:
    """Name the common non-checkpoint files, so the reason helps the artist."""
    if _find_clip_or_t5(names):
        return _unusable(
            "This is a text encoder (CLIP or T5), not a checkpoint: Flux and SD 3.5 text "
            "encoders go in models/text_encoders (or models/clip)."
        )
    if _has(names, "encoder.conv_in.") and _has(names, "decoder.conv_in."):
        return _unusable("This is a VAE, not a checkpoint.")
    if any(n in ("emb_params", "string_to_param", "clip_l", "clip_g") for n in names):
        return _unusable("This is a textual-inversion embedding, not a checkpoint.")
    if _has(names, "controlnet_") or _has(names, "control_model."):
        return _unusable("This is a ControlNet, not a checkpoint.")
    return _unusable(
        "Unknown architecture: the file has none of the tensor names of SD 1.5, SDXL, "
        "Flux or SD 3.5 checkpoints or LoRAs."
    )


def _find_clip_or_t5(names: list[str]) -> bool:
    return _contains(names, "text_model.embeddings.token_embedding.weight") or _contains(
        names, "encoder.block.0.layer.0.SelfAttention.q.weight"
    )


DIFFUSERS_PIPELINES: dict[str, bool] = {  # _class_name -> is_xl
    "StableDiffusionPipeline": False,
    "StableDiffusionImg2ImgPipeline": False,
    "StableDiffusionInpaintPipeline": False,
    "StableDiffusionXLPipeline": True,
    "StableDiffusionXLImg2ImgPipeline": True,
    "StableDiffusionXLInpaintPipeline": True,
}
WEIGHT_COMPONENTS = (
    "unet",
    "transformer",
    "vae",
    "text_encoder",
    "text_encoder_2",
    "text_encoder_3",
)
#: Flux and SD 3 pipelines: _class_name -> architecture.
TRANSFORMER_PIPELINES: dict[str, Architecture] = {
    "FluxPipeline": Architecture.FLUX,
    "FluxImg2ImgPipeline": Architecture.FLUX,
    "FluxInpaintPipeline": Architecture.FLUX,
    "FluxFillPipeline": Architecture.FLUX,
    "StableDiffusion3Pipeline": Architecture.SD3,
    "StableDiffusion3Img2ImgPipeline": Architecture.SD3,
    "StableDiffusion3InpaintPipeline": Architecture.SD3,
}
ARCHITECTURE_LABELS = {Architecture.FLUX: "Flux", Architecture.SD3: "SD 3"}
#: The text encoder components each architecture needs in a diffusers folder.
TRANSFORMER_TEXT_ENCODERS = {
    Architecture.FLUX: ("text_encoder", "text_encoder_2"),
    Architecture.SD3: ("text_encoder", "text_encoder_2", "text_encoder_3"),
}


def _read_json_object(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def detect_diffusers_folder(folder: Path) -> Detection:
    """Family of a diffusers folder from `model_index.json` and `unet/config.json`."""
    index = _read_json_object(folder / "model_index.json")
    if index is None:
        return _unusable("model_index.json is unreadable or not a JSON object.", Content.CHECKPOINT)
    class_name = str(index.get("_class_name", ""))
    if class_name in TRANSFORMER_PIPELINES:
        return _detect_transformer_folder(folder, index, TRANSFORMER_PIPELINES[class_name])
    if class_name not in DIFFUSERS_PIPELINES:
        return _unusable(
            f"Diffusers pipeline {class_name or '(none)'} is not supported: use an "
            f"{SUPPORTED_FAMILIES} model.",
            Content.CHECKPOINT,
        )
    is_xl = DIFFUSERS_PIPELINES[class_name]
    if is_xl and "text_encoder" not in index:
        return _unsupported("SDXL refiner")
    unet = _read_json_object(folder / "unet" / "config.json")
    if unet is None:
        return _unusable("unet/config.json is missing or unreadable.", Content.CHECKPOINT)
    if not is_xl and unet.get("cross_attention_dim") == 1024:
        return _unsupported("SD 2.x (OpenCLIP text encoder)")
    weights = _diffusers_weights_problem(folder, index)
    if weights is not None:
        return weights
    channels = unet.get("in_channels")
    families = {
        (False, 4): Family.SD15,
        (False, 9): Family.SD15_INPAINT,
        (True, 4): Family.SDXL,
        (True, 9): Family.SDXL_INPAINT,
    }
    family = families.get((is_xl, channels)) if isinstance(channels, int) else None
    if family is None:
        return _unusable(
            f"The UNet takes {channels} input channels (4 = normal, 9 = inpaint): not supported.",
            Content.CHECKPOINT,
        )
    return Detection(Content.CHECKPOINT, family, EntryStatus.USABLE)


def _detect_transformer_folder(
    folder: Path, index: dict[str, Any], architecture: Architecture
) -> Detection:
    """A Flux or SD 3 diffusers folder: the family from `transformer/config.json`."""
    for component in ("transformer", "vae") + TRANSFORMER_TEXT_ENCODERS[architecture]:
        if not _listed(index, component):
            return _unusable(
                f"This {ARCHITECTURE_LABELS[architecture]} diffusers folder has no {component} "
                "(model_index.json lists none): "
                "use a complete model.",
                Content.CHECKPOINT,
            )
    config = _read_json_object(folder / "transformer" / "config.json")
    if config is None:
        return _unusable("transformer/config.json is missing or unreadable.", Content.CHECKPOINT)
    weights = _diffusers_weights_problem(folder, index)
    if weights is not None:
        return weights
    family: Family | Detection
    if architecture is Architecture.FLUX:
        features_in = config.get("in_channels", 64)
        features_out = config.get("out_channels") or features_in
        if not isinstance(features_in, int) or not isinstance(features_out, int):
            return _unusable("transformer/config.json is not a Flux config.", Content.CHECKPOINT)
        family = _flux_family(
            (0, features_in), (features_out, 0), bool(config.get("guidance_embeds"))
        )
    elif config.get("dual_attention_layers"):
        family = Family.SD35_MEDIUM
    elif config.get("qk_norm"):
        family = Family.SD35_LARGE
    else:
        family = _unsupported("SD 3 medium (3.0; no q/k normalisation, unlike SD 3.5)")
    if isinstance(family, Detection):
        return family
    return Detection(Content.CHECKPOINT, family, EntryStatus.USABLE)


def _listed(index: dict[str, Any], component: str) -> bool:
    """Whether model_index.json names a component (`[null, null]` means none)."""
    value = index.get(component)
    return isinstance(value, list) and any(v is not None for v in value)


def _diffusers_weights_problem(folder: Path, index: dict[str, Any]) -> Detection | None:
    """Each weight component needs .safetensors weights; pickle-only folders are refused."""
    for component in WEIGHT_COMPONENTS:
        if component not in index or not _listed(index, component):
            continue
        part = folder / component
        try:
            files = [p.name for p in part.iterdir()]
        except OSError:
            return _unusable(
                f"The {component}/ folder is missing or unreadable.", Content.CHECKPOINT
            )
        if any(name.endswith(SAFETENSORS_SUFFIX) for name in files):
            continue
        if any(name.endswith(PICKLE_SUFFIXES) for name in files):
            return Detection(
                Content.CHECKPOINT,
                None,
                EntryStatus.REFUSED,
                f"The {component}/ weights are pickle files. {CONVERT_HINT}",
            )
        return _unusable(f"The {component}/ folder holds no weights.", Content.CHECKPOINT)
    return None


# --------------------------------------------------------------------------------------
# Where models live


class RootKind(enum.Enum):
    CHECKPOINTS = "checkpoints"
    LORAS = "loras"
    CONTROLS = "controls"  # ControlNets, IP-Adapters, image encoders, depth estimators
    TRANSFORMERS = "transformers"  # Flux / SD 3.5 transformer files (ComfyUI's unet/)
    MIXED = "mixed"  # a plain folder of models: each file is listed as what it is


# Relative to a configured folder, in scan order: our layout (= ComfyUI's models/),
# A1111's models/, ComfyUI's root, A1111's root.
CHECKPOINT_SUBDIRS = (
    "checkpoints",
    "diffusers",
    "Stable-diffusion",
    "models/checkpoints",
    "models/diffusers",
    "models/Stable-diffusion",
)
LORA_SUBDIRS = ("loras", "Lora", "models/loras", "models/Lora")
# Control models: ours (= ComfyUI's models/), A1111's and its ControlNet extension's,
# ComfyUI's root. Files here are listed as what their header says they are.
CONTROL_SUBDIRS = (
    "controlnet",
    "ipadapter",
    "clip_vision",
    "depth",
    "ControlNet",
    "extensions/sd-webui-controlnet/models",
    "models/controlnet",
    "models/ipadapter",
    "models/clip_vision",
    "models/depth",
    "models/ControlNet",
)


@dataclass(frozen=True)
class ModelRoot:
    """A folder that holds models of one kind (or a mixed one), and its label for names."""

    path: Path
    kind: RootKind
    label: str


def find_roots(folder: Path) -> tuple[list[ModelRoot], list[ScanProblem]]:
    """The model folders inside one configured folder (any of the supported layouts)."""
    label = folder.name or str(folder)
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is not a folder"
        return [], [ScanProblem(folder, f"The model folder {folder} {what}.")]
    if (folder / "model_index.json").is_file():
        # A diffusers model itself: its unet/ or vae/ are components, not model folders.
        return [ModelRoot(folder, RootKind.MIXED, label)], []
    roots = [
        ModelRoot(folder / sub, kind, label)
        for subs, kind in (
            (CHECKPOINT_SUBDIRS, RootKind.CHECKPOINTS),
            (LORA_SUBDIRS, RootKind.LORAS),
            (CONTROL_SUBDIRS, RootKind.CONTROLS),
            (TRANSFORMER_SUBDIRS, RootKind.TRANSFORMERS),
        )
        for sub in subs
        if (folder / sub).is_dir()
    ]
    if not roots:
        roots = [ModelRoot(folder, RootKind.MIXED, label)]
    return roots, []


@dataclass(frozen=True)
class Found:
    """A candidate entry before naming: where it is and what it is."""

    root: ModelRoot
    path: Path
    relative: str  # relative to the root, with `/`
    format: ModelFormat
    detection: Detection


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except (OSError, ValueError, RuntimeError):
        return False
    return True


LINK_OUTSIDE = (
    "This is a link to a location outside its model folder, which the server does not "
    "follow. Add the folder it points to as a model folder instead."
)


class Scanner:
    """Walks model folders and detects each entry; caches detections between scans."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int, int], Detection] = {}
        self._next_cache: dict[tuple[str, int, int], Detection] = {}

    def scan(self, folders: list[Path]) -> tuple[list[Found], list[ScanProblem]]:
        found: list[Found] = []
        problems: list[ScanProblem] = []
        seen_roots: set[tuple[int, int]] = set()
        self._next_cache = {}
        for folder in folders:
            roots, root_problems = find_roots(Path(folder).expanduser())
            problems += root_problems
            for root in roots:
                identity = _identity(root.path)
                if identity is None or identity in seen_roots:
                    continue  # the same folder reached twice (listed twice, case-folding)
                seen_roots.add(identity)
                found += self._scan_root(root, problems)
        self._cache = self._next_cache
        return found, problems

    def _scan_root(self, root: ModelRoot, problems: list[ScanProblem]) -> Iterator[Found]:
        if root.kind is RootKind.MIXED and (root.path / "model_index.json").is_file():
            yield self._found_diffusers(root, root.path, root.path.name)
            return
        for dirpath, dirnames, filenames in os.walk(
            root.path, onerror=lambda exc: problems.append(_walk_problem(exc))
        ):
            here = Path(dirpath)
            keep: list[str] = []
            for name in sorted(dirnames):
                sub = here / name
                if name.startswith(".") or _is_sidecar(sub, filenames):
                    continue
                if root.kind is RootKind.MIXED and _relative(sub, root.path) in UPSCALER_SUBDIRS:
                    continue  # upscalers are listed on their own (kd_server.upscale.files)
                if root.kind is RootKind.MIXED and _relative(sub, root.path) in EMBEDDING_SUBDIRS:
                    continue  # so are embeddings (kd_server.embeddings)
                if root.kind is RootKind.MIXED and _relative(sub, root.path) in VAE_SUBDIRS:
                    continue  # and VAE files (kd_server.vae_files)
                if (
                    root.kind is RootKind.MIXED
                    and _relative(sub, root.path) in TEXT_ENCODER_SUBDIRS
                ):
                    continue  # and text encoders (kd_server.split_layout)
                if sub.is_symlink():
                    problem = self._linked_folder(root, sub, problems)
                    if problem is not None:
                        yield problem
                elif (sub / "model_index.json").is_file():
                    yield self._found_diffusers(root, sub, _relative(sub, root.path))
                else:
                    keep.append(name)
            dirnames[:] = keep
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                entry = self._found_file(root, here / name)
                if entry is not None:
                    yield entry

    def _linked_folder(
        self, root: ModelRoot, sub: Path, problems: list[ScanProblem]
    ) -> Found | None:
        if _inside(sub, root.path):
            return None  # its content is listed under its real path
        if (sub / "model_index.json").is_file():
            return Found(
                root,
                sub,
                _relative(sub, root.path),
                ModelFormat.DIFFUSERS,
                _unusable(LINK_OUTSIDE, Content.CHECKPOINT),
            )
        problems.append(ScanProblem(sub, f"Skipped the linked folder {sub}: {LINK_OUTSIDE}"))
        return None

    def _found_diffusers(self, root: ModelRoot, folder: Path, relative: str) -> Found:
        return Found(root, folder, relative, ModelFormat.DIFFUSERS, detect_diffusers_folder(folder))

    def _found_file(self, root: ModelRoot, path: Path) -> Found | None:
        lowered = path.name.lower()
        if lowered.endswith(SAFETENSORS_SUFFIX):
            relative = _relative(path, root.path)[: -len(SAFETENSORS_SUFFIX)]
            fmt = ModelFormat.SAFETENSORS
        elif lowered.endswith(PICKLE_SUFFIXES):
            relative = _relative(path, root.path)
            fmt = ModelFormat.PICKLE
        elif lowered.endswith(GGUF_SUFFIX):
            relative = _relative(path, root.path)  # keeps `.gguf`, like pickles
            fmt = ModelFormat.SPLIT  # a GGUF file holds a transformer only
        else:
            return None  # previews (.png), configs (.yaml), notes: not models
        if path.is_symlink() and not _inside(path, root.path):
            detection = _unusable(LINK_OUTSIDE)
        elif fmt is ModelFormat.PICKLE:
            detection = Detection(Content.OTHER, None, EntryStatus.REFUSED, CONVERT_HINT)
        else:
            detection = self._detect_file(path)
        return Found(root, path, relative, fmt, detection)

    def _detect_file(self, path: Path) -> Detection:
        try:
            info = path.stat()
        except OSError as exc:
            return _unusable(f"Cannot read the file: {exc.strerror or exc}.")
        if not stat.S_ISREG(info.st_mode):
            return _unusable("Not a regular file.")
        key = (str(path.resolve()), info.st_size, info.st_mtime_ns)
        detection = self._cache.get(key)
        if detection is None and path.name.lower().endswith(GGUF_SUFFIX):
            detection = _detect_gguf(path)
        elif detection is None:
            try:
                header = read_safetensors(path)
                detection = replace(
                    detect_tensors(header.shapes, header.dtypes),
                    metadata=naming_metadata(header.metadata),
                    trigger_words=trigger_words(header.metadata),
                )
            except HeaderError as exc:
                detection = exc.detection
        self._next_cache[key] = detection
        return detection


def _detect_gguf(path: Path) -> Detection:
    """A GGUF file: only Flux and SD 3.5 transformers are of use (as SPLIT checkpoints)."""
    try:
        header = read_gguf(path)
    except GgufError as exc:
        return _unusable(str(exc))
    detection = detect_tensors(header.shapes, quantisation=gguf_quantisation(header))
    if detection.content is Content.CHECKPOINT and detection.family is not None:
        return replace(detection, parts_inside=("transformer",))
    if detection.content is Content.CHECKPOINT:
        return detection  # a refusal that says what it is ("SD 3 medium (3.0) ...")
    if detection.content is Content.LORA:
        return _unusable("GGUF LoRAs are not supported: use the .safetensors LoRA.")
    return _unusable(
        "Only Flux and SD 3.5 transformers are used from GGUF files "
        f"(this one is '{header.architecture or 'unknown'}')."
    )


def _is_sidecar(folder: Path, filenames: list[str]) -> bool:
    """A `<name>.config/` folder beside a `<name>.*` model file: that file's own config
    (kd_server.loading), not a model to list."""
    if folder.suffix != ".config":
        return False
    return any(Path(name).stem == folder.stem for name in filenames)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_dev, info.st_ino)


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _walk_problem(exc: OSError) -> ScanProblem:
    where = Path(exc.filename) if exc.filename else Path()
    return ScanProblem(where, f"Cannot read the folder {where}: {exc.strerror or exc}.")


# --------------------------------------------------------------------------------------
# From found files to named entries


_WRONG_PLACE = {
    (RootKind.CHECKPOINTS, Content.LORA): (
        "This is a LoRA in a checkpoint folder: move it to the loras folder."
    ),
    (RootKind.LORAS, Content.CHECKPOINT): (
        "This is a checkpoint in a LoRA folder: move it to the checkpoints folder."
    ),
    (RootKind.CONTROLS, Content.CHECKPOINT): (
        "This is a checkpoint in a control-model folder: move it to the checkpoints folder."
    ),
    (RootKind.CONTROLS, Content.LORA): (
        "This is a LoRA in a control-model folder: move it to the loras folder."
    ),
    (RootKind.TRANSFORMERS, Content.LORA): (
        "This is a LoRA in a diffusion-model (unet) folder: move it to the loras folder."
    ),
}


def _to_entry(found: Found, name: str, parts: list[PartFile] | None = None) -> ModelEntry:
    detection = found.detection
    kind = _entry_kind(found)
    status, reason = detection.status, detection.reason
    misplaced = _WRONG_PLACE.get((found.root.kind, detection.content))
    if misplaced is not None and status is EntryStatus.USABLE:
        status, reason = EntryStatus.UNUSABLE, misplaced
    fmt, model_parts = found.format, None
    family = detection.family
    if (
        kind is EntryKind.CHECKPOINT
        and detection.content is Content.CHECKPOINT
        and family is not None
        and family.info.is_transformer
    ):
        fmt, model_parts, status, reason = _assemble(found, parts or [], status, reason)
    if kind is EntryKind.LORA and detection.content is Content.OTHER:
        reason = _lora_reason(reason)
    fast = None
    if status is EntryStatus.USABLE and kind in (EntryKind.CHECKPOINT, EntryKind.LORA):
        fast = detect_fast_mode(found.relative, dict(detection.metadata))
        if kind is EntryKind.CHECKPOINT:  # Flux.1 schnell is fast by its family
            fast = family_fast_mode(family, fast)
    return ModelEntry(
        name,
        kind,
        found.path,
        fmt,
        detection.family,
        status,
        reason,
        detection.facts,
        fast=fast,
        trigger_words=detection.trigger_words if kind is EntryKind.LORA else (),
        parts=model_parts,
    )


def _assemble(
    found: Found, parts: list[PartFile], status: EntryStatus, reason: str | None
) -> tuple[ModelFormat, ModelParts | None, EntryStatus, str | None]:
    """A Flux / SD 3.5 file with everything inside stays a single file (parts None);
    otherwise it becomes a SPLIT checkpoint whose missing parts come from the text
    encoder and VAE folders (kd_server.split_layout), or an unusable one saying which
    part is missing."""
    detection = found.detection
    family = detection.family
    assert family is not None
    info = family.info
    needed = ("vae", *info.text_encoders)
    inside = detection.parts_inside or ("transformer",)
    if found.format is ModelFormat.DIFFUSERS or (
        found.format is ModelFormat.SAFETENSORS and all(p in inside for p in needed)
    ):
        return found.format, None, status, reason
    chosen: dict[str, Path | None] = {}
    missing: list[str] = []
    for part in needed:
        if part in inside:
            chosen[part] = found.path
            continue
        match = choose_part(
            parts, PartKind(part), info.architecture.value, detection.quantisation is not None
        )
        chosen[part] = match.path if match is not None else None
        if match is None:
            missing.append(part)
    model_parts = ModelParts(
        transformer=found.path,
        vae=chosen.get("vae"),
        clip_l=chosen.get("clip_l"),
        clip_g=chosen.get("clip_g"),
        t5xxl=chosen.get("t5xxl"),
        quantisation=detection.quantisation,
    )
    if missing and status is EntryStatus.USABLE:
        status = EntryStatus.UNUSABLE
        reason = missing_parts_reason(info.label, info.architecture.value, missing)
    return ModelFormat.SPLIT, model_parts, status, reason


def _lora_reason(reason: str | None) -> str | None:
    """In a LoRA folder, 'unknown architecture' means 'not a LoRA'."""
    if reason and reason.startswith("Unknown architecture"):
        return "Not a LoRA: the file has no LoRA tensor names (lora_down/lora_up, lora_A/lora_B)."
    return reason


#: Control-related files are listed as what they are, in whichever folder they lie
#: (the installer, for one, puts every download it does not know into checkpoints/).
_KIND_OF_CONTENT = {
    Content.CONTROL: EntryKind.CONTROL,
    Content.IMAGE_ENCODER: EntryKind.IMAGE_ENCODER,
    Content.DEPTH_ESTIMATOR: EntryKind.DEPTH_ESTIMATOR,
}


def _entry_kind(found: Found) -> EntryKind:
    by_content = _KIND_OF_CONTENT.get(found.detection.content)
    if by_content is not None:
        return by_content
    if found.root.kind is RootKind.CONTROLS:
        content = found.detection.content
        return {Content.CHECKPOINT: EntryKind.CHECKPOINT, Content.LORA: EntryKind.LORA}.get(
            content, EntryKind.CONTROL
        )
    if found.root.kind is RootKind.LORAS:
        return EntryKind.LORA
    if found.root.kind in (RootKind.CHECKPOINTS, RootKind.TRANSFORMERS):
        return EntryKind.CHECKPOINT
    return EntryKind.LORA if found.detection.content is Content.LORA else EntryKind.CHECKPOINT


def name_entries(
    found: list[Found], reserved: Iterable[str] = (), parts: list[PartFile] | None = None
) -> list[ModelEntry]:
    """Give every found item its stable name; later duplicates get `(label)` suffixes.

    `reserved` checkpoint names (the embedded model's) are never given to a file;
    `parts` are the text encoders and VAEs that Flux / SD 3.5 transformers are paired
    with (kd_server.split_layout.find_parts)."""
    taken: set[tuple[EntryKind, str]] = {(EntryKind.CHECKPOINT, n) for n in reserved}
    entries: list[ModelEntry] = []
    for item in found:
        kind = _entry_kind(item)
        name = item.relative
        if (kind, name) in taken:
            name = f"{item.relative} ({item.root.label})"
            counter = 2
            while (kind, name) in taken:
                name = f"{item.relative} ({item.root.label} {counter})"
                counter += 1
        taken.add((kind, name))
        entries.append(_to_entry(item, name, parts))
    return entries


def pair_image_encoders(entries: list[ModelEntry]) -> list[ModelEntry]:
    """An IP-Adapter reads one output of a CLIP image encoder of one width; without a
    usable encoder that provides it, the IP-Adapter is listed unusable, saying which."""
    encoders = [e for e in entries if e.kind is EntryKind.IMAGE_ENCODER and e.usable]
    paired: list[ModelEntry] = []
    for entry in entries:
        facts = entry.facts
        lonely = (
            facts is not None
            and facts.role is ControlRole.IP_ADAPTER
            and entry.usable
            and not any(encoder_fits(facts, e.facts) for e in encoders)
        )
        if lonely and facts is not None:
            entry = replace(entry, status=EntryStatus.UNUSABLE, reason=_no_encoder(facts))
        paired.append(entry)
    return paired


def encoder_fits(adapter: ControlFacts, encoder: ControlFacts | None) -> bool:
    """Whether the encoder gives what the IP-Adapter reads, at its width."""
    if encoder is None:
        return False
    if adapter.embed_source is EmbedSource.HIDDEN_STATES:
        return encoder.hidden_width == adapter.embed_width
    return encoder.embed_width == adapter.embed_width


def _no_encoder(facts: ControlFacts) -> str:
    known = {1024: "CLIP-ViT-H-14", 1280: "CLIP-ViT-bigG-14"}
    if facts.embed_source is EmbedSource.HIDDEN_STATES:
        known = {1280: "CLIP-ViT-H-14", 1664: "CLIP-ViT-bigG-14"}
    name = known.get(facts.embed_width or 0, f"a CLIP vision model {facts.embed_width} wide")
    return (
        f"This IP-Adapter needs its image encoder ({name}), and none was found: put it in "
        "models/clip_vision (ComfyUI) or clip_vision/, or run "
        "`python3 -m installer download ip-adapter-image-encoder`, then refresh."
    )


def _sort_key(entry: ModelEntry) -> tuple[str, str]:
    return (entry.name.casefold(), entry.name)


@dataclass(frozen=True)
class _Snapshot:
    checkpoints: dict[str, ModelEntry]
    loras: dict[str, ModelEntry]
    problems: tuple[ScanProblem, ...]
    # control models, image encoders, depth estimators: kind -> name -> entry
    others: dict[EntryKind, dict[str, ModelEntry]] = field(default_factory=dict)


EMBEDDED_ENTRY = ModelEntry(
    EMBEDDED_NAME, EntryKind.CHECKPOINT, None, ModelFormat.EMBEDDED, Family.SD15, EntryStatus.USABLE
)


class ModelLibrary:
    """Checkpoints and LoRAs found in the configured folders, by name.

    Scans at construction; `refresh()` rescans (safe to call from another thread: the
    tables are swapped in one step). Lookups never touch the file system. After each
    scan the usable files are hashed in the background (`hashes`, for the A1111 API).
    """

    def __init__(
        self,
        folders: list[Path],
        include_embedded: bool = True,
        default_model: str | None = None,
    ) -> None:
        self.folders = [Path(f) for f in folders]
        self.include_embedded = include_embedded
        self.default_model = default_model  # the `default_model` setting, if any
        self._scanner = Scanner()
        self._lock = threading.Lock()
        self._snapshot = _Snapshot({}, {}, ())
        self.hashes = HashStore()
        self.refresh()

    def refresh(self) -> None:
        """Rescan every folder. Unchanged files are not re-read (size + mtime cache)."""
        with self._lock:
            found, problems = self._scanner.scan(self.folders)
            self._decoders = tuple(find_preview_decoders(self.folders))
            self._upscalers = tuple(find_upscalers(self.folders))
            self._embeddings = tuple(find_embeddings(self.folders))
            self._vaes = tuple(find_vaes(self.folders))
            self._parts = tuple(find_parts(self.folders))
            reserved = [EMBEDDED_NAME] if self.include_embedded else []
            entries = pair_image_encoders(name_entries(found, reserved, list(self._parts)))
            checkpoints = {e.name: e for e in entries if e.kind is EntryKind.CHECKPOINT}
            if self.include_embedded:
                checkpoints[EMBEDDED_NAME] = EMBEDDED_ENTRY
            loras = {e.name: e for e in entries if e.kind is EntryKind.LORA}
            others: dict[EntryKind, dict[str, ModelEntry]] = {}
            for e in entries:
                if e.kind not in (EntryKind.CHECKPOINT, EntryKind.LORA):
                    others.setdefault(e.kind, {})[e.name] = e
            self._snapshot = _Snapshot(checkpoints, loras, tuple(problems), others)
        self.hashes.schedule(library_files(entries))
        for problem in problems:
            log.warning("%s", problem.message)
        log.info(
            "Model library: %d checkpoints (%d usable), %d LoRAs (%d usable)",
            len(checkpoints),
            sum(e.usable for e in checkpoints.values()),
            len(loras),
            sum(e.usable for e in loras.values()),
        )

    @property
    def problems(self) -> list[ScanProblem]:
        """Folders that could not be read during the last scan."""
        return list(self._snapshot.problems)

    def checkpoints(self) -> list[ModelEntry]:
        """All checkpoints, unusable and refused ones included, sorted by name."""
        return sorted(self._snapshot.checkpoints.values(), key=_sort_key)

    def loras(self) -> list[ModelEntry]:
        """All LoRAs, unusable and refused ones included, sorted by name."""
        return sorted(self._snapshot.loras.values(), key=_sort_key)

    def preview_decoders(self) -> list[PreviewDecoder]:
        """The TAESD decoder files found, usable or not (kd_server.taesd_files)."""
        return list(self._decoders)

    def preview_decoder(self, family: Family) -> PreviewDecoder | None:
        """The first usable TAESD decoder for the latents of `family`, if any."""
        base = family.info.base
        return next((d for d in self._decoders if d.usable and d.family is base), None)

    def embeddings(self) -> list[EmbeddingFile]:
        """The textual-inversion files found, usable or not (kd_server.embeddings)."""
        return list(self._embeddings)

    def model_parts(self) -> list[PartFile]:
        """The Flux / SD 3.5 text encoder and VAE files found (kd_server.split_layout)."""
        return list(self._parts)

    def vaes(self) -> list[VaeFile]:
        """The VAE files found, usable or not (kd_server.vae_files)."""
        return list(self._vaes)

    def get_vae(self, name: str) -> VaeFile:
        """The usable VAE file called `name` (its path in the VAE folder without the
        extension, or just its file name when that is unique), else EngineError."""
        wanted = str(name).casefold()
        matches = [v for v in self._vaes if v.name.casefold() == wanted]
        matches = matches or [v for v in self._vaes if v.path.stem.casefold() == wanted]
        if len(matches) != 1:
            usable = sorted((v.name for v in self._vaes if v.usable), key=str.casefold)
            listed = ", ".join(usable) if usable else "none (put them in models/VAE or models/vae)"
            raise EngineError(
                EngineErrorCode.MODEL_NOT_FOUND,
                f"There is no VAE named '{str(name)[:120]}'. VAEs found: {listed}.",
            )
        if not matches[0].usable:
            raise EngineError(
                EngineErrorCode.MODEL_UNUSABLE,
                f"The VAE '{matches[0].name}' cannot be used: {matches[0].reason}",
            )
        return matches[0]

    def upscalers(self) -> list[UpscalerFile]:
        """The upscaler files found, usable or not (kd_server.upscale.files)."""
        return list(self._upscalers)

    def get_upscaler(self, name: str) -> UpscalerFile:
        """The usable upscaler called `name`, else EngineError (not found / unusable)."""
        table = {u.name: u for u in self._upscalers}
        entry = table.get(name) if isinstance(name, str) else None
        if entry is None:
            usable = sorted((u.name for u in self._upscalers if u.usable), key=str.casefold)
            message = f"There is no upscaler named '{str(name)[:120]}'."
            close = difflib.get_close_matches(str(name), usable, n=1)
            if close:
                message += f" Did you mean '{close[0]}'?"
            message += (
                f" Available: {', '.join(repr(n) for n in usable[:5])}."
                if usable
                else " No usable upscaler was found; put one in models/ESRGAN or "
                "upscale_models, or leave the upscaler out for Lanczos."
            )
            raise EngineError(EngineErrorCode.UPSCALER_NOT_FOUND, message)
        if not entry.usable:
            raise EngineError(
                EngineErrorCode.UPSCALER_UNUSABLE,
                f"The upscaler '{entry.name}' cannot be used: {entry.reason}",
            )
        return entry

    def entries(self, kind: EntryKind) -> list[ModelEntry]:
        """All entries of one kind, unusable and refused ones included, sorted by name."""
        if kind is EntryKind.CHECKPOINT:
            return self.checkpoints()
        if kind is EntryKind.LORA:
            return self.loras()
        return sorted(self._snapshot.others.get(kind, {}).values(), key=_sort_key)

    def get(self, kind: EntryKind, name: str, what: str) -> ModelEntry:
        """The usable entry of `kind` called `name` (`what` names the kind in messages),
        else EngineError: MODEL_NOT_FOUND or MODEL_UNUSABLE."""
        table = {e.name: e for e in self.entries(kind)}
        return _lookup(
            table, name, what, EngineErrorCode.MODEL_NOT_FOUND, EngineErrorCode.MODEL_UNUSABLE
        )

    def get_checkpoint(self, name: str) -> ModelEntry:
        """The usable checkpoint called `name`, else EngineError (not found / unusable)."""
        return _lookup(
            self._snapshot.checkpoints,
            name,
            "checkpoint",
            EngineErrorCode.MODEL_NOT_FOUND,
            EngineErrorCode.MODEL_UNUSABLE,
        )

    def get_lora(self, name: str) -> ModelEntry:
        """The usable LoRA called `name`, else EngineError (not found / unusable)."""
        return _lookup(
            self._snapshot.loras,
            name,
            "LoRA",
            EngineErrorCode.LORA_NOT_FOUND,
            EngineErrorCode.LORA_UNUSABLE,
        )

    def default_checkpoint(self, preferred: str | None = None) -> ModelEntry:
        """`preferred` (or the `default_model` setting) if given, with the errors of
        `get_checkpoint`; else the first usable real checkpoint in name order, general
        models before inpaint ones (an inpaint model is a poor txt2img default); else
        the embedded model."""
        preferred = preferred or self.default_model
        if preferred:
            return self.get_checkpoint(preferred)
        usable = [
            e for e in self.checkpoints() if e.usable and e.format is not ModelFormat.EMBEDDED
        ]
        usable.sort(key=lambda e: (e.family is not None and e.family.info.is_inpaint, e.name))
        if usable:
            return usable[0]
        if EMBEDDED_NAME in self._snapshot.checkpoints:
            return self._snapshot.checkpoints[EMBEDDED_NAME]
        raise EngineError(
            EngineErrorCode.MODEL_NOT_FOUND,
            "No usable checkpoint was found in the model folders: add an SD 1.5, SDXL, "
            "Flux or SD 3.5 checkpoint and refresh.",
        )


def _lookup(
    table: dict[str, ModelEntry],
    name: str,
    what: str,
    missing: EngineErrorCode,
    unusable: EngineErrorCode,
) -> ModelEntry:
    entry = table.get(name) if isinstance(name, str) else None
    if entry is None:
        raise EngineError(missing, _not_found_message(table, name, what))
    if not entry.usable:
        raise EngineError(unusable, f"The {what} '{entry.name}' cannot be used: {entry.reason}")
    return entry


def _not_found_message(table: dict[str, ModelEntry], name: object, what: str) -> str:
    shown = repr(name) if not isinstance(name, str) else f"'{name[:120]}'"
    usable = sorted((n for n, e in table.items() if e.usable), key=str.casefold)
    message = f"There is no {what} named {shown}."
    close = difflib.get_close_matches(str(name), usable, n=1) if isinstance(name, str) else []
    if close:
        message += f" Did you mean '{close[0]}'?"
    if usable:
        listed = ", ".join(f"'{n}'" for n in usable[:5])
        more = f" and {len(usable) - 5} more" if len(usable) > 5 else ""
        message += f" Available: {listed}{more}."
    else:
        message += f" No usable {what} was found in the model folders."
    return message
