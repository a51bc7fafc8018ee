"""ComfyUI's split layout: a transformer file plus text encoder and VAE files.

Flux and SD 3.5 are mostly shared as separate files: the transformer alone in
`models/unet` or `models/diffusion_models` (fp16/bf16, fp8 or GGUF), the text encoders
in `models/text_encoders` or `models/clip` (Forge: `models/text_encoder`) as clip_l,
clip_g and t5xxl files, and the VAE in `models/vae`. The library pairs each transformer
with the parts its family needs and lists the result as one checkpoint
(`ModelFormat.SPLIT`) whose `parts` say where each piece is.

Everything is told from file headers (safetensors JSON header, GGUF header); file names
are only a tiebreak where the shapes cannot tell (see `_clip_role`, `_vae_hint`).

How a part is chosen when several fit (deterministic, documented in docs/models.md):
1. VAEs: one whose name says the family ("ae"/"flux" for Flux, "sd3" for SD 3.5) before
   one whose name says nothing; one whose name names the other family is never used
   (the Flux and SD 3.5 VAEs have the same shapes, only their weights differ).
2. Text encoders: the real width (768 / 1280 / 4096) before other widths; then by
   precision: for a fp16/bf16 transformer fp16/bf16/fp32 files before fp8 ones, for an
   fp8 or GGUF transformer fp8 files first; ComfyUI's "scaled" fp8 files always last.
3. Then folder order (configured folders, then `text_encoders`, `clip`,
   `text_encoder`; `vae`, `VAE`), then the path in the folder, case-folded.

A part may be the transformer file itself: files that embed the VAE or some text
encoders (SD 3.5's own release with its VAE, ComfyUI checkpoints with CLIPs but no T5)
are SPLIT entries whose embedded parts point at that same file; their tensors sit under
the ComfyUI prefixes (`first_stage_model.` or `vae.`, `text_encoders.clip_l.transformer.`
...), which the loader strips as it does for all-in-one files.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelParts:
    """The files a SPLIT checkpoint is assembled from (None: the family does not use it)."""

    transformer: Path
    vae: Path | None = None
    clip_l: Path | None = None
    clip_g: Path | None = None
    t5xxl: Path | None = None
    #: how the transformer file stores its weights: "fp8-e4m3fn", "fp8-e4m3fn-scaled",
    #: "fp8-e5m2", "gguf-q8_0", "gguf-q4_k", ...; None for plain fp16 / bf16 / fp32
    quantisation: str | None = None

    def get(self, part: str) -> Path | None:
        """The file of a part by its name ("vae", "clip_l", "clip_g", "t5xxl")."""
        value = getattr(self, part)
        return value if isinstance(value, Path) else None


#: Relative to a configured model folder: ComfyUI's (ours), then Forge's, then roots.
TRANSFORMER_SUBDIRS = ("diffusion_models", "unet", "models/diffusion_models", "models/unet")
TEXT_ENCODER_SUBDIRS = (
    "text_encoders",
    "clip",
    "text_encoder",
    "models/text_encoders",
    "models/clip",
    "models/text_encoder",
)
PART_VAE_SUBDIRS = ("vae", "VAE", "models/vae", "models/VAE")
GGUF_SUFFIX = ".gguf"
SAFETENSORS_SUFFIX = ".safetensors"

#: How people call the parts in messages.
PART_LABELS = {
    "clip_l": "CLIP-L text encoder (clip_l)",
    "clip_g": "CLIP-G text encoder (clip_g)",
    "t5xxl": "T5 text encoder (t5xxl)",
}
TEXT_ENCODER_FOLDERS = "models/text_encoders or models/clip"
VAE_FOLDERS = "models/vae"


# --------------------------------------------------------------------------------------
# Precision of a file's weights


def safetensors_quantisation(
    dtypes: dict[str, str], shapes: dict[str, tuple[int, ...]], prefix: str = ""
) -> str | None:
    """How the matrices under `prefix` are stored: "fp8-e4m3fn" (+ "-scaled" for
    ComfyUI's scaled fp8) or "fp8-e5m2" when most are fp8, else None (fp16/bf16/fp32)."""
    counts: dict[str, int] = {}
    for name, dtype in dtypes.items():
        if name.startswith(prefix) and len(shapes.get(name, ())) >= 2:
            counts[dtype] = counts.get(dtype, 0) + 1
    if not counts:
        return None
    dtype = max(sorted(counts), key=lambda d: counts[d])
    kind = {"F8_E4M3": "fp8-e4m3fn", "F8_E5M2": "fp8-e5m2"}.get(dtype)
    if kind is None:
        return None
    scaled = any(
        n.startswith(prefix) and (n.endswith(".scale_weight") or n.endswith("scaled_fp8"))
        for n in shapes
    )
    return kind + "-scaled" if scaled else kind


def _precision_rank(quantisation: str | None, transformer_quantised: bool) -> int:
    if quantisation is not None and quantisation.endswith("-scaled"):
        return 2
    plain = quantisation is None
    return (0 if plain else 1) if not transformer_quantised else (1 if plain else 0)


# --------------------------------------------------------------------------------------
# GGUF headers


@dataclass(frozen=True)
class GgufHeader:
    shapes: dict[str, tuple[int, ...]]  # tensor name -> torch-order shape
    types: dict[str, str]  # tensor name -> GGML type name ("Q8_0", "F16", ...)
    architecture: str | None  # general.architecture ("flux", "sd3", ...)


class GgufError(Exception):
    """The file is not a readable GGUF file; the message says why, for people."""


def read_gguf(path: Path) -> GgufHeader:
    """Tensor names, shapes and types of a GGUF file, from its header (the `gguf`
    package memory-maps the file and reads no tensor data)."""
    try:
        import gguf
    except ImportError as exc:  # pragma: no cover - a broken install
        raise GgufError(
            "GGUF files need the 'gguf' package: reinstall the server (pip install gguf)."
        ) from exc
    try:
        reader = gguf.GGUFReader(str(path))
        shapes: dict[str, tuple[int, ...]] = {}
        types: dict[str, str] = {}
        for tensor in reader.tensors:
            shapes[tensor.name] = tuple(int(n) for n in reversed(list(tensor.shape)))
            types[tensor.name] = tensor.tensor_type.name
        architecture = None
        field = reader.fields.get("general.architecture")
        if field is not None and field.data:
            architecture = bytes(field.parts[field.data[0]]).decode("utf-8", "replace")
    except Exception as exc:  # any parse failure means "not a readable GGUF file"
        raise GgufError(
            f"Not a readable GGUF file ({type(exc).__name__}): download it again."
        ) from exc
    if not shapes:
        raise GgufError("The GGUF file holds no tensors.")
    return GgufHeader(shapes, types, architecture)


def gguf_quantisation(header: GgufHeader) -> str:
    """The file's quantisation ("gguf-q8_0", "gguf-q4_k", ...): the most common quantised
    type of its matrices (converters keep small ones in F32 / F16); "gguf-f16" when no
    matrix is quantised."""
    counts: dict[str, int] = {}
    for name, kind in header.types.items():
        if len(header.shapes.get(name, ())) >= 2:
            counts[kind] = counts.get(kind, 0) + 1
    quantised = {k: n for k, n in counts.items() if k not in ("F32", "F16", "BF16", "F64")}
    counts = quantised or counts
    if not counts:
        return "gguf"
    kind = max(sorted(counts), key=lambda k: counts[k])
    return "gguf-" + kind.lower()


# --------------------------------------------------------------------------------------
# What a part file is


class PartKind(str, enum.Enum):
    CLIP_L = "clip_l"
    CLIP_G = "clip_g"
    T5XXL = "t5xxl"
    VAE = "vae"  # a 16-latent-channel VAE (Flux's ae, SD 3.5's)


CLIP_TOKEN_EMBEDDING = "text_model.embeddings.token_embedding.weight"
T5_FIRST_QUERY = "encoder.block.0.layer.0.SelfAttention.q.weight"
T5_GATED = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight"
UMT5_MARK = "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"
VAE_LDM_MARK = "encoder.down.0.block.0.conv1.weight"
VAE_DIFFUSERS_MARK = "encoder.down_blocks.0.resnets.0.conv1.weight"
VAE_DECODER_IN = "decoder.conv_in.weight"
#: Prefixes under which text encoders and VAEs are saved (ours first: the bare names).
PART_PREFIXES = (
    "",
    "transformer.",
    "text_encoders.clip_l.transformer.",
    "text_encoders.clip_g.transformer.",
    "text_encoders.t5xxl.transformer.",
    "cond_stage_model.transformer.",
    "first_stage_model.",
    "vae.",
)


@dataclass(frozen=True)
class PartInfo:
    """What a text encoder or VAE file is, as far as its header tells."""

    kind: PartKind | None  # None: not a part we use (`reason` says what it is)
    width: int | None = None  # hidden size (CLIP, T5) or None (VAE)
    quantisation: str | None = None
    reason: str | None = None


def _find(shapes: dict[str, tuple[int, ...]], suffix: str) -> tuple[str, str] | None:
    """(prefix, key) of the first key that is `suffix` under one of PART_PREFIXES."""
    for prefix in PART_PREFIXES:
        if prefix + suffix in shapes:
            return prefix, prefix + suffix
    return None


def _clip_role(width: int, name: str) -> PartKind | None:
    """768 wide = CLIP-L, 1280 wide = CLIP-G (OpenCLIP bigG); the file name decides
    only for other widths (the small stand-ins of the tests)."""
    if width == 768:
        return PartKind.CLIP_L
    if width == 1280:
        return PartKind.CLIP_G
    lowered = name.lower().replace("-", "_")
    if "clip_g" in lowered or "clipg" in lowered or "bigg" in lowered:
        return PartKind.CLIP_G
    if "clip_l" in lowered or "clipl" in lowered:
        return PartKind.CLIP_L
    return None


def examine_part(shapes: dict[str, tuple[int, ...]], dtypes: dict[str, str], name: str) -> PartInfo:
    """A text encoder or 16-channel VAE from its safetensors header; `name` (the file
    name) only breaks ties that the shapes leave open."""
    clip = _find(shapes, CLIP_TOKEN_EMBEDDING)
    if clip is not None:
        prefix, key = clip
        shape = shapes[key]
        width = shape[1] if len(shape) == 2 else 0
        role = _clip_role(width, name)
        quantisation = safetensors_quantisation(dtypes, shapes, prefix)
        if role is None:
            return PartInfo(
                None,
                width,
                quantisation,
                f"A CLIP text encoder {width} wide, neither CLIP-L (768) nor CLIP-G (1280); "
                "name the file clip_l... or clip_g... if it is one of them.",
            )
        return PartInfo(role, width, quantisation)
    t5 = _find(shapes, T5_FIRST_QUERY)
    if t5 is not None:
        prefix, key = t5
        width = shapes[key][1] if len(shapes[key]) == 2 else 0
        quantisation = safetensors_quantisation(dtypes, shapes, prefix)
        if prefix + UMT5_MARK in shapes:
            return PartInfo(None, width, quantisation, "A UMT5 text encoder (not Flux's T5).")
        if prefix + T5_GATED not in shapes:
            return PartInfo(
                None, width, quantisation, "A T5 1.0 text encoder (Flux and SD 3.5 use T5 v1.1)."
            )
        return PartInfo(PartKind.T5XXL, width, quantisation)
    vae = _find(shapes, VAE_LDM_MARK) or _find(shapes, VAE_DIFFUSERS_MARK)
    if vae is not None:
        decoder_in = shapes.get(vae[0] + VAE_DECODER_IN, ())
        channels = decoder_in[1] if len(decoder_in) == 4 else None
        if channels != 16:
            return PartInfo(
                None, None, None, f"A VAE for {channels}-channel latents (Flux and SD 3.5: 16)."
            )
        return PartInfo(PartKind.VAE, None, safetensors_quantisation(dtypes, shapes, vae[0]))
    return PartInfo(None, None, None, "Not a text encoder or VAE.")


#: The real widths of the parts: the one to prefer when files of other widths exist.
REAL_WIDTHS = {PartKind.CLIP_L: 768, PartKind.CLIP_G: 1280, PartKind.T5XXL: 4096}


def _vae_hint(name: str) -> str | None:
    """The architecture ("flux" / "sd3") a VAE file's name says it is for, if any."""
    lowered = name.lower()
    stem = lowered.rsplit(".", 1)[0]
    if "sd3" in lowered or "sd_3" in lowered or "sd35" in lowered:
        return "sd3"
    if "flux" in lowered or stem == "ae" or stem.startswith(("ae_", "ae-", "ae.")):
        return "flux"
    return None


# --------------------------------------------------------------------------------------
# Finding the parts


@dataclass(frozen=True)
class PartFile:
    """A text encoder or VAE file found in a part folder."""

    path: Path
    relative: str  # in its folder, with `/`
    order: int  # folder order (configured folders x subfolders), for ties
    info: PartInfo


def find_parts(folders: Iterable[Path]) -> list[PartFile]:
    """Every text encoder and 16-channel VAE file in the part folders of `folders`
    (.safetensors only; pickles and GGUF text encoders are not used). Unreadable files
    are skipped with a log line."""
    from kd_server.library import HeaderError, read_safetensors

    found: list[PartFile] = []
    seen: set[Path] = set()
    order = 0
    for folder in folders:
        folder = Path(folder).expanduser()
        for sub in TEXT_ENCODER_SUBDIRS + PART_VAE_SUBDIRS:
            where = folder / sub
            if not where.is_dir():
                continue
            try:
                real = where.resolve()
            except OSError:
                continue
            if real in seen:
                continue  # `vae` and `VAE` on a case-insensitive disk
            seen.add(real)
            order += 1
            for path in sorted(where.rglob("*")):
                if path.name.startswith(".") or not path.name.lower().endswith(SAFETENSORS_SUFFIX):
                    continue
                if not path.is_file():
                    continue
                try:
                    header = read_safetensors(path)
                except HeaderError as exc:
                    log.info("Skipped %s as a model part: %s", path, exc.detection.reason)
                    continue
                info = examine_part(header.shapes, header.dtypes, path.name)
                if info.kind is None:
                    continue
                relative = path.relative_to(where).as_posix()
                found.append(PartFile(path, relative, order, info))
    return found


def choose_part(
    candidates: Iterable[PartFile],
    kind: PartKind,
    architecture: str,
    transformer_quantised: bool,
) -> PartFile | None:
    """The part of `kind` to pair with a transformer (rules in the module docstring)."""
    best: tuple[Any, ...] | None = None
    chosen: PartFile | None = None
    for part in candidates:
        if part.info.kind is not kind:
            continue
        if kind is PartKind.VAE:
            hint = _vae_hint(part.path.name)
            if hint is not None and hint != architecture:
                continue
            first = 0 if hint == architecture else 1
        else:
            first = 0 if part.info.width == REAL_WIDTHS[kind] else 1
        rank = _precision_rank(part.info.quantisation, transformer_quantised)
        key = (first, rank, part.order, part.relative.casefold(), part.relative)
        if best is None or key < best:
            best, chosen = key, part
    return chosen


def missing_parts_reason(what: str, architecture: str, missing: list[str]) -> str:
    """The reason of an unusable SPLIT entry, e.g. "Flux.1 dev transformer found, but no
    T5 text encoder (t5xxl) in models/text_encoders or models/clip." """
    encoders = [PART_LABELS[p] for p in missing if p != "vae"]
    pieces = []
    if encoders:
        pieces.append(f"no {' and no '.join(encoders)} in {TEXT_ENCODER_FOLDERS}")
    if "vae" in missing:
        vae = "Flux VAE (ae.safetensors)" if architecture == "flux" else "SD 3.5 VAE"
        pieces.append(f"no {vae} in {VAE_FOLDERS}")
    return f"{what} transformer found, but {', and '.join(pieces)}."
