"""The T5 tokenizer of Flux and SD 3.5, found on disk and never fetched at run time.

Why: the T5 v1.1 XXL text encoder reads SentencePiece (Unigram) token ids, and the
vocabulary is not part of any single-file checkpoint or split text encoder file. The
server ships the CLIP vocabulary (`resources/tokenizer/`) but not T5's (2.4 MB, from
Google's google/t5-v1_1-xxl, Apache-2.0), so it is looked up where one already is:

1. the folders given by the caller: the `t5_tokenizer` setting (server.toml,
   KD_T5_TOKENIZER, --t5-tokenizer; kd_server.config checks it is such a folder);
2. `resources/tokenizer-t5/` (a checkout or a packager may put it there; git-ignored);
3. `tokenizer-t5/` in each model folder (and in `models/` below it): where
   `python3 -m installer download t5-tokenizer` puts Google's tokenizer.json, pinned by
   revision, size and sha256 (resources/catalogue.json);
4. the tokenizer of a diffusers Flux folder (`tokenizer_2/`) or SD 3 folder
   (`tokenizer_3/`) in the library;
5. ComfyUI's own copy, `comfy/text_encoders/t5_tokenizer/`, beside a scanned ComfyUI
   models folder (`<ComfyUI>/models` or `<ComfyUI>` configured).

A folder counts when it holds `tokenizer.json` (what `T5TokenizerFast` reads without
further packages) or `spiece.model` (converted by transformers, which then needs the
`sentencepiece` / `protobuf` packages).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kd_server.families import resources_dir

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from kd_server.library import ModelLibrary

log = logging.getLogger(__name__)

#: The folder name under resources/ and under a model folder.
FOLDER_NAME = "tokenizer-t5"
COMFYUI_PATH = Path("comfy") / "text_encoders" / "t5_tokenizer"
TOKENIZER_FILES = ("tokenizer.json", "spiece.model")

MISSING_HINT = (
    "Flux and SD 3.5 need the T5 tokenizer, which was not found: run "
    "`python3 -m installer download t5-tokenizer --models-dir <your models folder>` "
    "(2.4 MB), or copy T5's tokenizer.json (from a diffusers Flux model's tokenizer_2/ "
    "or ComfyUI's comfy/text_encoders/t5_tokenizer/) into a tokenizer-t5 folder in "
    "the models folder."
)


class T5TokenizerMissing(FileNotFoundError):
    """No T5 tokenizer on disk; the message says how to get one."""


def is_t5_tokenizer_folder(folder: Path) -> bool:
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def candidate_folders(
    extra: Iterable[Path] = (),
    model_folders: Iterable[Path] = (),
    diffusers_folders: Iterable[Path] = (),
) -> Iterator[Path]:
    """Every place looked at, in the search order of the module docstring."""
    yield from (Path(p).expanduser() for p in extra)
    yield resources_dir() / FOLDER_NAME
    folders = [Path(f).expanduser() for f in model_folders]
    for folder in folders:
        yield folder / FOLDER_NAME
        yield folder / "models" / FOLDER_NAME
    for folder in diffusers_folders:
        yield Path(folder) / "tokenizer_2"
        yield Path(folder) / "tokenizer_3"
    for folder in folders:
        yield folder / COMFYUI_PATH  # the ComfyUI folder itself was configured
        yield folder.parent / COMFYUI_PATH  # its models/ folder was


def find_t5_tokenizer(
    extra: Iterable[Path] = (),
    model_folders: Iterable[Path] = (),
    diffusers_folders: Iterable[Path] = (),
) -> Path | None:
    """The first folder holding a T5 tokenizer, or None. A diffusers folder counts only
    through its T5 tokenizer folder (`tokenizer_2` of Flux, `tokenizer_3` of SD 3), so
    pass Flux / SD 3 folders only (`find_for_library` does)."""
    for folder in candidate_folders(extra, model_folders, diffusers_folders):
        try:
            if is_t5_tokenizer_folder(folder) and _is_t5(folder):
                return folder
        except OSError:
            continue
    return None


def _is_t5(folder: Path) -> bool:
    """A SentencePiece model, or a tokenizer.json of the Unigram kind (SD 3's
    tokenizer_2 is a CLIP tokenizer: BPE)."""
    if (folder / "spiece.model").is_file():
        return True
    try:
        data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    model = data.get("model") if isinstance(data, dict) else None
    return isinstance(model, dict) and model.get("type") == "Unigram"


def find_for_library(library: ModelLibrary, extra: Iterable[Path] = ()) -> Path | None:
    """`find_t5_tokenizer` over the library's folders and its Flux / SD 3 diffusers
    models (usable or not: their tokenizer is fine either way)."""
    from kd_server.library import ModelFormat

    diffusers = [
        entry.path
        for entry in library.checkpoints()
        if entry.format is ModelFormat.DIFFUSERS
        and entry.path is not None
        and _transformer_pipeline(entry.path)
    ]
    return find_t5_tokenizer(extra, library.folders, diffusers)


def _transformer_pipeline(folder: Path) -> bool:
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    name = str(index.get("_class_name", "")) if isinstance(index, dict) else ""
    return name.startswith(("Flux", "StableDiffusion3"))


def require_t5_tokenizer(
    extra: Iterable[Path] = (),
    model_folders: Iterable[Path] = (),
    diffusers_folders: Iterable[Path] = (),
) -> Path:
    """`find_t5_tokenizer`, or T5TokenizerMissing with what to do."""
    folder = find_t5_tokenizer(extra, model_folders, diffusers_folders)
    if folder is None:
        raise T5TokenizerMissing(MISSING_HINT)
    return folder


def load_t5_tokenizer(folder: Path, model_max_length: int | None = None) -> PreTrainedTokenizerBase:
    """The T5 tokenizer in `folder` (its tokenizer_config.json / special_tokens_map.json
    apply when present), offline. `model_max_length` overrides the folder's (Flux dev
    reads 512 tokens, schnell and SD 3.5 256)."""
    # transformers 5: T5Tokenizer is the tokenizers-backed (fast) class, and
    # T5TokenizerFast a lazily made alias of it that type checkers do not see.
    from transformers import T5Tokenizer

    folder = Path(folder)
    if not is_t5_tokenizer_folder(folder):
        raise T5TokenizerMissing(
            f"{folder} holds no tokenizer.json or spiece.model. {MISSING_HINT}"
        )
    kwargs: dict[str, Any] = {"local_files_only": True}
    if model_max_length is not None:
        kwargs["model_max_length"] = model_max_length
    try:
        tokenizer = T5Tokenizer.from_pretrained(str(folder), **kwargs)
    except (OSError, ValueError, ImportError) as exc:
        raise T5TokenizerMissing(
            f"The T5 tokenizer in {folder} cannot be read ({exc}). {MISSING_HINT}"
        ) from exc
    log.info("T5 tokenizer from %s", folder)
    return tokenizer
