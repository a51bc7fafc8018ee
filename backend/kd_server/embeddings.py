"""Textual-inversion embeddings: found in the artist's folders, used by name in prompts.

Why: an embedding is a few learned word vectors (a style, a character, the popular
negative-prompt embeddings) that artists trigger by writing its file name in the
prompt, in A1111 (`embeddings/`) and ComfyUI (`models/embeddings/`, written
`embedding:name`). Both spellings work here, so a prompt copied from either means the
same.

Files are read from the safetensors header only when scanned. The layouts:

- A1111 for SD 1.5: one tensor `emb_params` [vectors, 768];
- diffusers' `learned_embeds.safetensors`: one tensor under any key, [768] or [n, 768];
- SDXL (both A1111 and ComfyUI): `clip_l` [n, 768] and `clip_g` [n, 1280].

Pickles (`.pt`, `.bin`: most older A1111 embeddings) are listed as refused with the
one-line conversion: unpickling runs code from the file.

An embedding is loaded into a model the first time a prompt names it, with diffusers'
`load_textual_inversion` (new tokens in the tokenizer, their vectors in the text
encoder's table), under a token named after the file's path, size and time, so a
replaced file is loaded again; `kd_server.prompt_encoding` puts those tokens where the
name is written (A1111's way: the name's tokens anywhere in the prompt).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kd_server.families import Family
from kd_server.load_lock import one_load_at_a_time

log = logging.getLogger(__name__)

#: Relative to a configured model folder: A1111's root and ours (= ComfyUI's models/),
#: then ComfyUI's root.
EMBEDDING_SUBDIRS = ("embeddings", "models/embeddings")
SAFETENSORS = ".safetensors"
PICKLES = (".pt", ".bin", ".ckpt", ".pth")
SDXL_KEYS = ("clip_l", "clip_g")
#: The text encoders' widths of the real families (the tests' tiny models differ; an
#: embedding of another width is still listed, without a family).
SD15_WIDTH, SDXL_WIDTHS = 768, (768, 1280)

_COMFY_SYNTAX = re.compile(r"\bembedding:([^\s,()\[\]:]+)", re.IGNORECASE)


@dataclass(frozen=True)
class EmbeddingFile:
    """One embedding file as the library lists it."""

    name: str  # the file name without extension: what a prompt writes
    path: Path
    #: the vectors' width per text encoder: one for SD 1.5 files, two for SDXL
    widths: tuple[int, ...]
    vectors: int  # how many tokens it takes in a prompt
    family: Family | None
    usable: bool
    reason: str | None = None


def find_embeddings(folders: list[Path]) -> list[EmbeddingFile]:
    """Every embedding-like file in the embedding folders (subfolders too), usable or
    with the reason why not; the first file of a name wins."""
    found: dict[str, EmbeddingFile] = {}
    for folder in _embedding_folders(folders):
        for path in sorted(folder.rglob("*")):
            lowered = path.name.lower()
            if path.name.startswith(".") or not lowered.endswith((SAFETENSORS, *PICKLES)):
                continue
            if not path.is_file():
                continue
            entry = _examine(path)
            found.setdefault(entry.name.casefold(), entry)
    return list(found.values())


def _embedding_folders(folders: list[Path]) -> list[Path]:
    return [f / sub for f in folders for sub in EMBEDDING_SUBDIRS if (f / sub).is_dir()]


def _examine(path: Path) -> EmbeddingFile:
    from kd_server.library import CONVERT_HINT, HeaderError, read_safetensors_header

    name = path.name.rsplit(".", 1)[0]
    if not path.name.lower().endswith(SAFETENSORS):
        return EmbeddingFile(name, path, (), 0, None, False, CONVERT_HINT)
    try:
        shapes = read_safetensors_header(path)
    except HeaderError as exc:
        return EmbeddingFile(name, path, (), 0, None, False, exc.detection.reason)
    return _from_shapes(name, path, shapes)


def _from_shapes(name: str, path: Path, shapes: dict[str, tuple[int, ...]]) -> EmbeddingFile:
    if all(key in shapes for key in SDXL_KEYS):
        parts = [_as_matrix(shapes[key]) for key in SDXL_KEYS]
        if None not in parts and len({p[0] for p in parts if p}) == 1:
            widths = tuple(p[1] for p in parts if p)
            family = Family.SDXL if widths == SDXL_WIDTHS else None
            return EmbeddingFile(name, path, widths, parts[0][0] if parts[0] else 0, family, True)
    elif len(shapes) == 1:
        matrix = _as_matrix(next(iter(shapes.values())))
        if matrix is not None:
            family = Family.SD15 if matrix[1] == SD15_WIDTH else None
            return EmbeddingFile(name, path, (matrix[1],), matrix[0], family, True)
    return EmbeddingFile(
        name,
        path,
        (),
        0,
        None,
        False,
        "Not a textual-inversion embedding: expected one tensor (emb_params, or "
        "diffusers' learned_embeds) or SDXL's clip_l and clip_g.",
    )


def _as_matrix(shape: tuple[int, ...]) -> tuple[int, int] | None:
    """(vectors, width) of an embedding tensor's shape, or None."""
    if len(shape) == 1 and shape[0] > 0:
        return 1, shape[0]
    if len(shape) == 2 and shape[0] > 0 and shape[1] > 0:
        return shape[0], shape[1]
    return None


def comfy_names(text: str) -> str:
    """ComfyUI's `embedding:name` (or `embedding:name.safetensors`) -> `name`, the
    spelling A1111 triggers an embedding with."""

    def name(match: re.Match[str]) -> str:
        written = match.group(1).replace("\\", "/").rsplit("/", 1)[-1]
        for suffix in (SAFETENSORS, *PICKLES):
            if written.lower().endswith(suffix):
                return written[: -len(suffix)]
        return written

    return _COMFY_SYNTAX.sub(name, text)


# --------------------------------------------------------------------- loading


@dataclass(frozen=True)
class EmbeddingTokens:
    """An embedding as one text encoder sees a prompt: the ids its name tokenizes to,
    and the ids of its vectors (added to that encoder's tokenizer)."""

    name_ids: tuple[int, ...]
    ids: tuple[int, ...]


def mentioned(files: list[EmbeddingFile], texts: list[str]) -> list[EmbeddingFile]:
    """The usable embeddings whose names appear in the texts (a quick text check; the
    tokens decide where exactly)."""
    lowered = " ".join(comfy_names(text) for text in texts).casefold()
    return [f for f in files if f.usable and f.name.casefold() in lowered]


def tokens_for(pipe: Any, files: list[EmbeddingFile]) -> list[list[EmbeddingTokens]]:
    """Per text encoder of `pipe`, the named embeddings' tokens, loading each into the
    model on first use. One that does not fit the model (another family's width) is
    left out with a warning: its name then stays ordinary words, as in A1111."""
    encoders = _encoders(pipe)
    per_encoder: list[list[EmbeddingTokens]] = [[] for _ in encoders]
    for file in files:
        widths = tuple(int(e.get_input_embeddings().weight.shape[-1]) for _, e in encoders)
        if file.widths != widths:
            log.warning(
                "The embedding %s (width %s) does not fit this model (width %s); its "
                "name is read as words.",
                file.name,
                file.widths,
                widths,
            )
            continue
        token = _token(file)
        for index, (tokenizer, encoder) in enumerate(encoders):
            if not _has_token(tokenizer, token):
                _load(pipe, file, index, token, tokenizer, encoder)
            names = [token] + [f"{token}_{i}" for i in range(1, file.vectors)]
            ids = tuple(int(i) for i in tokenizer.convert_tokens_to_ids(names))
            name_ids = tuple(tokenizer(file.name, add_special_tokens=False)["input_ids"])
            per_encoder[index].append(EmbeddingTokens(name_ids, ids))
    return per_encoder


def _has_token(tokenizer: Any, token: str) -> bool:
    """Whether the tokenizer knows `token` (without `get_vocab()`, which copies the
    whole vocabulary)."""
    return bool(tokenizer.convert_tokens_to_ids(token) != tokenizer.unk_token_id)


def _encoders(pipe: Any) -> list[tuple[Any, Any]]:
    second = getattr(pipe, "text_encoder_2", None)
    pairs = [(pipe.tokenizer, pipe.text_encoder)]
    if second is not None:
        pairs.append((pipe.tokenizer_2, second))
    return pairs


def _token(file: EmbeddingFile) -> str:
    """A token no prompt can type, new when the file is replaced."""
    stat = file.path.stat()
    signature = f"{file.path}|{stat.st_size}|{stat.st_mtime_ns}"
    return f"<kd-embedding-{hashlib.sha1(signature.encode()).hexdigest()[:12]}>"


@one_load_at_a_time
def _load(
    pipe: Any, file: EmbeddingFile, index: int, token: str, tokenizer: Any, encoder: Any
) -> None:
    from safetensors.torch import load_file

    tensors = load_file(str(file.path))
    vectors = tensors[SDXL_KEYS[index]] if len(file.widths) > 1 else next(iter(tensors.values()))
    vectors = vectors.reshape(file.vectors, -1)
    if file.vectors == 1:
        vectors = vectors[0]
    pipe.load_textual_inversion(vectors, token=token, tokenizer=tokenizer, text_encoder=encoder)
    log.info("Loaded the embedding %s (%d vectors)", file.name, file.vectors)
