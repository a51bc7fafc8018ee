"""A1111's prompt syntax, parsed: emphasis weights, `BREAK`, and `<lora:...>` tags.

Artists paste prompts between A1111, ComfyUI and this server, so a prompt must mean
the same here as there. This module only reads text (no torch, no tokenizer); turning
the weighted pieces into embeddings is `kd_server.prompt_encoding`'s job.

Emphasis, as A1111 documents it:

- `(word)` multiplies the attention to `word` by 1.1, `((word))` by 1.21;
- `[word]` divides it by 1.1;
- `(word:1.5)` multiplies it by 1.5 (`(word:0.25)` divides it by 4);
- `\\(`, `\\)`, `\\[`, `\\]` are literal brackets;
- a bracket left open applies to the rest of the prompt, a closing bracket with
  nothing open is literal text, and `(word:x)` without its opening `(` is text too;
- `BREAK` (upper case, a word of its own) ends the current 75-token chunk.

One deliberate difference: A1111 turns a `BREAK` inside brackets into the literal
word "BREAK" with a negative weight (its weight marker gets multiplied); here it
always breaks the chunk, which is what the artist wrote it for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: What `(...)` multiplies a weight by, and what `[...]` divides it by (A1111's values).
ROUND_BRACKET_FACTOR = 1.1
SQUARE_BRACKET_FACTOR = 1 / 1.1

# One alternative per kind of lexeme, in A1111's order of precedence: escapes first,
# then openers, an explicit weight closing a round bracket, closers, plain text, and a
# colon that is not part of a weight (plain text too).
_LEXEME = re.compile(
    r"""
    \\\( | \\\) | \\\[ | \\\] | \\\\ | \\     # escapes (a lone backslash vanishes)
    | \(  | \[                                # openers
    | :\s*(?P<weight>[+-]?[.\d]+)\s*\)        # ":1.3)" closes a round bracket with a weight
    | \)  | \]                                # closers
    | [^\\()\[\]:]+                           # text
    | :                                       # a colon that is not a weight
    """,
    re.VERBOSE,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.DOTALL)
_NETWORK_TAG = re.compile(r"<(\w+):([^>]*)>")
#: Extra networks: LoRA kinds (LyCORIS files load as LoRAs), and the ones A1111 has
#: that this server cannot apply (a prompt naming one is refused, not silently changed).
LORA_KINDS = ("lora", "lyco")
UNAVAILABLE_KINDS = ("hypernet",)


@dataclass
class Fragment:
    """A run of prompt text with one emphasis weight (1.0: as written)."""

    text: str
    weight: float = 1.0


@dataclass(frozen=True)
class Break:
    """`BREAK`: the text after it starts a new 75-token chunk."""


Piece = Fragment | Break


class PromptSyntaxError(ValueError):
    """A prompt that cannot mean anything (a `<lora:>` tag without a name ...)."""


def parse_emphasis(text: str) -> list[Piece]:
    """The prompt as fragments with their weights, and `BREAK`s, in order.

    Neighbouring fragments of equal weight are merged, so a prompt without any syntax
    is one fragment holding exactly its text (and encodes as it always did).
    """
    pieces: list[Piece] = []
    round_open: list[int] = []  # index into `pieces` where each open "(" began
    square_open: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            if isinstance(piece, Fragment):
                piece.weight *= factor

    for match in _LEXEME.finditer(text):
        lexeme, weight = match.group(0), match.group("weight")
        if lexeme.startswith("\\"):
            pieces.append(Fragment(lexeme[1:]))
        elif lexeme == "(":
            round_open.append(len(pieces))
        elif lexeme == "[":
            square_open.append(len(pieces))
        elif weight is not None and round_open:
            multiply(round_open.pop(), _number(weight))
        elif lexeme == ")" and round_open:
            multiply(round_open.pop(), ROUND_BRACKET_FACTOR)
        elif lexeme == "]" and square_open:
            multiply(square_open.pop(), SQUARE_BRACKET_FACTOR)
        else:
            pieces.extend(_split_breaks(lexeme))
    for start in round_open:  # brackets left open reach to the end, as in A1111
        multiply(start, ROUND_BRACKET_FACTOR)
    for start in square_open:
        multiply(start, SQUARE_BRACKET_FACTOR)
    # merged first, as A1111 does (an empty run between two weights keeps them apart),
    # then the empty runs go: they have no tokens
    kept = [p for p in _merged(pieces) if not (isinstance(p, Fragment) and not p.text)]
    return kept or [Fragment("")]


def _number(text: str) -> float:
    """A weight as A1111 reads it; "1.2.3" is not a number and counts as 1."""
    try:
        return float(text)
    except ValueError:
        return 1.0


def _split_breaks(text: str) -> list[Piece]:
    parts = _BREAK.split(text)
    pieces: list[Piece] = [Fragment(parts[0])]
    for part in parts[1:]:
        pieces += [Break(), Fragment(part)]
    return pieces


def _merged(pieces: list[Piece]) -> list[Piece]:
    merged: list[Piece] = []
    for piece in pieces:
        last = merged[-1] if merged else None
        if (
            isinstance(piece, Fragment)
            and isinstance(last, Fragment)
            and last.weight == piece.weight
        ):
            last.text += piece.text
        else:
            merged.append(piece)
    return merged


def has_syntax(pieces: list[Piece]) -> bool:
    """Whether the parsed prompt weights anything or breaks a chunk."""
    return any(isinstance(p, Break) or p.weight != 1.0 for p in pieces)


# ------------------------------------------------------------------ extra networks


@dataclass(frozen=True)
class NetworkTag:
    """An A1111 extra-network tag, `<kind:name:weight...>` (`<lora:ink:0.8>`)."""

    kind: str  # lower case: "lora", "lyco", "hypernet" ...
    name: str
    weights: tuple[float, ...]  # as written: none, one, or text-encoder and UNet weights

    @property
    def is_lora(self) -> bool:
        return self.kind in LORA_KINDS

    @property
    def is_unavailable(self) -> bool:
        """An extra network A1111 has and this server does not. Tags of kinds A1111
        does not know either (`<3:x>`) are removed and ignored, as A1111 skips them."""
        return self.kind in UNAVAILABLE_KINDS

    @property
    def weight(self) -> float:
        """The one weight it applies (1 when none is written)."""
        return self.weights[0] if self.weights else 1.0

    @property
    def has_split_weights(self) -> bool:
        """Separate text-encoder and UNet weights (`<lora:x:0.5:1>`), which differ."""
        return any(w != self.weights[0] for w in self.weights[1:])


def extract_networks(text: str) -> tuple[str, list[NetworkTag]]:
    """The prompt without its `<kind:...>` tags, and the tags in order.

    The tags are removed as A1111 removes them (runs of spaces left behind collapse,
    stray commas and spaces at the ends go), so the text encoder never sees them.
    Raises PromptSyntaxError for a LoRA tag without a name or with a weight that is not
    a number (other kinds' arguments are not checked)."""
    tags: list[NetworkTag] = []

    def take(match: re.Match[str]) -> str:
        tags.append(_network_tag(match.group(1), match.group(2)))
        return ""

    cleaned = _NETWORK_TAG.sub(take, text)
    return re.sub(r"[ \t]{2,}", " ", cleaned).strip(" ,\t"), tags


class UnavailableNetwork(ValueError):
    """A tag asking for what this server cannot apply (a hypernetwork, separate
    text-encoder and UNet weights): ignoring it would change the picture."""


def lora_weights(tags: list[NetworkTag]) -> list[tuple[str, float]]:
    """(name, weight) of each LoRA the tags ask for (`<lora:>`, `<lyco:>`), in order.
    Tags of kinds A1111 does not know either are ignored, as A1111 ignores them;
    raises UnavailableNetwork for one that cannot be honoured. Both front doors and
    the CLI read tags through this one rule."""
    loras: list[tuple[str, float]] = []
    for tag in tags:
        if tag.is_unavailable:
            raise UnavailableNetwork(f"the extra network <{tag.kind}:...> is not available")
        if not tag.is_lora:
            continue
        if tag.has_split_weights:
            raise UnavailableNetwork(
                f"<{tag.kind}:{tag.name}:...>: separate text-encoder and UNet weights are "
                "not available"
            )
        loras.append((tag.name, tag.weight))
    return loras


def strip_networks(text: str) -> str:
    """The prompt without its `<kind:...>` tags (cleaned as `extract_networks` cleans
    it), never raising; a prompt without tags is returned exactly as it is."""
    if not _NETWORK_TAG.search(text):
        return text
    cleaned = _NETWORK_TAG.sub("", text)
    return re.sub(r"[ \t]{2,}", " ", cleaned).strip(" ,\t")


def _network_tag(kind: str, args: str) -> NetworkTag:
    parts = [part.strip() for part in args.split(":")]
    name, numbers = parts[0], [n for n in parts[1:] if n]
    strict = kind.lower() in LORA_KINDS
    if not name and strict:
        raise PromptSyntaxError(f"a <{kind}:...> tag has no name")
    try:
        weights = tuple(float(n) for n in numbers)
    except ValueError:
        if strict:
            raise PromptSyntaxError(f"<{kind}:{args}>: the weight must be a number") from None
        weights = ()
    return NetworkTag(kind.lower(), name, weights)
