"""Build the CLIP tokenizer files (`vocab.json`, `merges.txt`) from OpenAI's BPE file.

Why this exists: diffusers would download the tokenizer of SD1.5/SDXL from the hub.
We ship our own copy instead, converted from `bpe_simple_vocab_16e6.txt.gz`, the BPE
table OpenAI published with CLIP, which the `open-clip-torch` wheel (MIT) carries. The
conversion follows how CLIP itself builds its vocabulary, so the ids match
openai/clip-vit-large-patch14 ("a photo of a cat" ->
[49406, 320, 1125, 539, 320, 2368, 49407]).

Usage (the output is committed under resources/tokenizer/; rerun only to rebuild it):

    pip download open-clip-torch --no-deps -d /tmp/oc
    python resources/make_tokenizer.py /tmp/oc/open_clip_torch-*.whl
    python resources/make_tokenizer.py path/to/bpe_simple_vocab_16e6.txt.gz -o OUTDIR

The argument is either the wheel (the script reads the member from the zip itself)
or the `.gz` file. Nothing is fetched from the network.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import zipfile
from pathlib import Path

BPE_MEMBER_NAME = "bpe_simple_vocab_16e6.txt.gz"
# CLIP's vocabulary size: 256 bytes, 256 end-of-word bytes, the merges, 2 specials.
VOCAB_SIZE = 49408
MERGE_COUNT = VOCAB_SIZE - 2 * 256 - 2  # 48,894: lines[1 : 49152 - 256 - 2 + 1]
START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
MERGES_HEADER = "#version: 0.2"  # the header line tokenizers' BPE reader skips


class ConversionError(Exception):
    """The input is not the BPE file we expect; the message says what was found."""


def byte_to_unicode() -> list[tuple[int, str]]:
    """Byte-level BPE's reversible map from the 256 byte values to printable characters.

    Printable Latin-1 bytes map to themselves; the rest (controls, space, ...) map in
    order to code points from 256 upwards. The list order (printable bytes first, then
    the others) is the order CLIP uses for the first 256 vocabulary ids.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    pairs = [(b, chr(b)) for b in printable]
    extra = 0
    for b in range(256):
        if b not in printable:
            pairs.append((b, chr(256 + extra)))
            extra += 1
    return pairs


def read_bpe_text(source: Path) -> str:
    """Return the un-gzipped BPE text from a wheel/zip or from the `.gz` file itself."""
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            members = [n for n in archive.namelist() if n.endswith("/" + BPE_MEMBER_NAME)]
            members += [n for n in archive.namelist() if n == BPE_MEMBER_NAME]
            if not members:
                raise ConversionError(f"{source} does not contain {BPE_MEMBER_NAME}.")
            compressed = archive.read(members[0])
    else:
        compressed = source.read_bytes()
    try:
        return gzip.decompress(compressed).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ConversionError(f"{source} is not a gzipped UTF-8 BPE file: {exc}.") from exc


def parse_merges(text: str) -> list[tuple[str, str]]:
    """The merge pairs CLIP uses: lines 1..48,894 (line 0 is a version header)."""
    lines = text.split("\n")[1 : 1 + MERGE_COUNT]
    merges: list[tuple[str, str]] = []
    for number, line in enumerate(lines, start=2):
        parts = line.split()
        if len(parts) != 2:
            raise ConversionError(f"Line {number} of the BPE file is not a merge pair: {line!r}.")
        merges.append((parts[0], parts[1]))
    if len(merges) != MERGE_COUNT:
        raise ConversionError(f"Expected {MERGE_COUNT} merges, the file has {len(merges)}.")
    return merges


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """Token -> id in CLIP's order: bytes, bytes + `</w>`, merged pairs, specials."""
    base = [char for _, char in byte_to_unicode()]
    tokens = base + [char + END_OF_WORD for char in base]
    tokens += [left + right for left, right in merges]
    tokens += [START_TOKEN, END_TOKEN]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise ConversionError(f"Built {len(vocab)} distinct tokens, expected {VOCAB_SIZE}.")
    return vocab


def write_outputs(vocab: dict[str, int], merges: list[tuple[str, str]], out_dir: Path) -> None:
    """Write the two files in the format transformers' CLIPTokenizer reads."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(
        json.dumps(vocab, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    merge_lines = [MERGES_HEADER] + [f"{left} {right}" for left, right in merges]
    (out_dir / "merges.txt").write_text("\n".join(merge_lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path, help="open-clip-torch wheel or the .txt.gz file")
    parser.add_argument(
        "-o",
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "tokenizer",
        help="output folder (default: resources/tokenizer beside this script)",
    )
    args = parser.parse_args(argv)
    if not args.source.is_file():
        print(f"error: {args.source} is not a file.", file=sys.stderr)
        return 2
    try:
        merges = parse_merges(read_bpe_text(args.source))
        vocab = build_vocab(merges)
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    write_outputs(vocab, merges, args.out)
    print(f"Wrote {len(vocab)} tokens and {len(merges)} merges to {args.out}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
