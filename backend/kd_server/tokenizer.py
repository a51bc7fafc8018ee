"""The CLIP tokenizer, built offline from the files shipped in `resources/tokenizer/`.

Why: diffusers would fetch `vocab.json`/`merges.txt` from the hub for every SD1.5 or
SDXL checkpoint. We ship one converted copy (see `resources/make_tokenizer.py`) and pair
it with each family's `tokenizer_config.json`, which carries the per-tokenizer settings
(SDXL's second tokenizer pads with "!").

Note for transformers 5: `CLIPTokenizer(vocab_file=..., merges_file=...)` silently
builds a 3-token tokenizer (the constructor takes `vocab=`/`merges=` now), so this
module passes the files as `vocab=`/`merges=`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kd_server.families import tokenizer_dir

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

# The settings of tokenizer_config.json / special_tokens_map.json we pass on. Others
# (tokenizer_class, errors, do_lower_case, add_prefix_space) describe what CLIPTokenizer
# does anyway.
_PASSED_SETTINGS = ("model_max_length", "bos_token", "eos_token", "unk_token", "pad_token")


class TokenizerFilesMissing(FileNotFoundError):
    """The shipped tokenizer files are not where the package says they are."""


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _token_text(value: Any) -> Any:
    """Special tokens may be written as {"content": "..."} objects; use the text."""
    if isinstance(value, dict) and "content" in value:
        return value["content"]
    return value


def tokenizer_settings(config_dir: Path) -> dict[str, Any]:
    """The settings a family's tokenizer folder asks for (config file wins over map)."""
    merged = _read_json(config_dir / "special_tokens_map.json")
    merged.update(_read_json(config_dir / "tokenizer_config.json"))
    return {key: _token_text(merged[key]) for key in _PASSED_SETTINGS if key in merged}


def load_tokenizer(
    family_config_dir_for_tokenizer: Path, pad_token: str | None = None
) -> CLIPTokenizer:
    """Build a CLIPTokenizer from our shipped files and one tokenizer folder's settings.

    `family_config_dir_for_tokenizer` is e.g. `resources/model-configs/sdxl/tokenizer_2`;
    `pad_token` overrides what that folder says. Never touches the network.
    """
    from transformers import CLIPTokenizer

    files = tokenizer_dir()
    vocab, merges = files / "vocab.json", files / "merges.txt"
    for path in (vocab, merges):
        if not path.is_file():
            raise TokenizerFilesMissing(
                f"The tokenizer file {path} is missing: reinstall the server, or rebuild it "
                "with resources/make_tokenizer.py."
            )
    settings = tokenizer_settings(Path(family_config_dir_for_tokenizer))
    if pad_token is not None:
        settings["pad_token"] = pad_token
    return CLIPTokenizer(vocab=str(vocab), merges=str(merges), **settings)
