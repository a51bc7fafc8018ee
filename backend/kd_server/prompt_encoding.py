"""Prompts -> the text encoders' embeddings, weighted and chunked as A1111 does.

diffusers' own `encode_prompt` reads a prompt as plain text and cuts it at 77 tokens;
artists write A1111's syntax (`(red hair:1.3)`, `[blur]`, `BREAK`) and prompts longer
than that. This module does what A1111 does with them, so a prompt means the same on
both:

1. the prompt is parsed (`kd_server.prompt_syntax`) into weighted fragments;
2. the fragments' tokens are cut into chunks of 75; a chunk that fills up moves the
   words after its last comma (when that comma is at most 20 tokens back) into the next
   chunk; `BREAK` closes a chunk early;
3. each chunk becomes 77 tokens (start, its tokens, end, padding) and goes through the
   text encoder on its own; each token's embedding is multiplied by its weight and the
   chunk's embeddings are then rescaled so their mean is what it was unweighted;
4. the chunks' embeddings are concatenated (77, 154, 231 ... positions; the UNet's
   cross-attention takes any length). The prompt and the negative prompt are padded to
   the same number of chunks with the empty prompt's chunk (A1111's "pad prompt/negative
   prompt to be same length").

SDXL runs the same steps on both of its encoders (each with its own tokenizer and
padding), concatenates their penultimate layers' outputs per position, and takes the
pooled embedding from the second encoder's first chunk.

A prompt without any syntax that fits in 75 tokens gives exactly the tensors diffusers'
`encode_prompt` gives (no weighting arithmetic is done when all weights are 1), so
plain prompts make the same pictures they made before this module existed.

Flux and SD 3.5 read their prompts mostly through T5, which reads whole sentences (up
to 512 tokens for Flux, 256 for SD 3.5) in one piece: there are no chunks and `BREAK`
is a space. Their weights act on T5, as Forge's T5 engine applies them: each fragment
is tokenized on its own, the T5 output of each token is multiplied by its weight and
the whole is rescaled to its unweighted mean (`emphasize`, as above). The CLIP
encoders (Flux: its pooled vector only; SD 3.5: CLIP-L and CLIP-G) read the plain text
(`plain_text`: brackets and weights out, words kept). A prompt without weights goes
through the pipeline's own `encode_prompt` as plain text, exactly as diffusers encodes
it (docs/prompts.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from kd_server.embeddings import EmbeddingFile, EmbeddingTokens, comfy_names, mentioned, tokens_for
from kd_server.prompt_syntax import Break, Fragment, Piece, parse_emphasis, strip_networks

#: Prompt tokens per chunk; with its start and end tokens a chunk is CLIP's 77.
CHUNK_LENGTH = 75
#: A chunk that fills up moves the text after its last comma to the next chunk when the
#: comma is at most this many tokens back (A1111's `comma_padding_backtrack` default).
COMMA_BACKTRACK = 20

#: Turns one fragment's text into its tokens, each a run of ids that must stay in one
#: chunk (one id for a word piece; several for a textual-inversion embedding).
Tokenize = Callable[[str], list[tuple[int, ...]]]


@dataclass
class Chunk:
    """Up to CHUNK_LENGTH prompt token ids and their weights (no start/end yet)."""

    tokens: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)

    def add(self, run: Sequence[int], weight: float) -> None:
        self.tokens += run
        self.weights += [weight] * len(run)


def chunk_prompt(pieces: list[Piece], tokenize: Tokenize, comma: int | None) -> list[Chunk]:
    """The parsed prompt's tokens cut into chunks as A1111 cuts them.

    `comma` is the tokenizer's id of "," as a word of its own (None: no comma rule).
    Always at least one chunk (the empty prompt is one empty chunk)."""
    chunks: list[Chunk] = []
    current = Chunk()
    last_comma = -1  # position in `current` of its last comma, -1: none

    def close() -> None:
        nonlocal current, last_comma
        chunks.append(current)
        current, last_comma = Chunk(), -1

    for piece in pieces:
        if isinstance(piece, Break):
            close()
            continue
        for run in tokenize(piece.text):
            if run == (comma,):
                last_comma = len(current.tokens)
            elif (
                len(current.tokens) == CHUNK_LENGTH
                and last_comma != -1
                and len(current.tokens) - last_comma <= COMMA_BACKTRACK
            ):
                moved = Chunk(current.tokens[last_comma + 1 :], current.weights[last_comma + 1 :])
                del current.tokens[last_comma + 1 :], current.weights[last_comma + 1 :]
                close()
                current = moved
            if len(current.tokens) == CHUNK_LENGTH:
                close()
            if len(run) > 1 and len(current.tokens) + len(run) > CHUNK_LENGTH:
                close()  # an embedding's vectors stay together
            current.add(run, piece.weight)
    if current.tokens or not chunks:
        close()
    return chunks


# ----------------------------------------------------------------------- encoders


@dataclass(frozen=True)
class TextEncoder:
    """One tokenizer and the text encoder it feeds, and which layer's output is used."""

    tokenizer: Any
    encoder: Any
    #: which hidden state: 1 = the last layer's output (after the final layer norm),
    #: n > 1 = the n-th layer from the end, put through the final layer norm (SD 1.5's
    #: clip skip); None = the penultimate layer as it is (SDXL's conditioning)
    stop_at: int | None = 1

    #: textual-inversion embeddings loaded into this encoder (kd_server.embeddings)
    embeddings: tuple[EmbeddingTokens, ...] = ()

    def tokenize(self, text: str) -> list[tuple[int, ...]]:
        """The text's tokens; an embedding's name (or ComfyUI's `embedding:name`)
        becomes the run of its vectors' tokens, longest name first, as in A1111."""
        tokenizer = self.tokenizer
        text = comfy_names(text)
        ids = tokenizer(text, add_special_tokens=False, truncation=False, verbose=False)[
            "input_ids"
        ]
        ids = [int(i) for i in ids]
        if not self.embeddings:
            return [(i,) for i in ids]
        by_length = sorted(self.embeddings, key=lambda e: len(e.name_ids), reverse=True)
        runs: list[tuple[int, ...]] = []
        position = 0
        while position < len(ids):
            found = next(
                (
                    e
                    for e in by_length
                    if e.name_ids
                    and tuple(ids[position : position + len(e.name_ids)]) == e.name_ids
                ),
                None,
            )
            if found is None:
                runs.append((ids[position],))
                position += 1
            else:
                runs.append(found.ids)
                position += len(found.name_ids)
        return runs

    @property
    def comma(self) -> int | None:
        """The id of "," as a word of its own (looked up directly: `get_vocab()` copies
        the whole 49408-entry vocabulary, ~20 ms a call)."""
        found = self.tokenizer.convert_tokens_to_ids(",</w>")
        return None if found is None or found == self.tokenizer.unk_token_id else int(found)

    def ids(self, chunk: Chunk) -> list[int]:
        """The chunk as the encoder's 77 ids: start, tokens, end, padding."""
        tokenizer = self.tokenizer
        padding = CHUNK_LENGTH - len(chunk.tokens)
        return [
            tokenizer.bos_token_id,
            *chunk.tokens,
            tokenizer.eos_token_id,
            *[tokenizer.pad_token_id] * padding,
        ]

    @torch.no_grad()
    def encode(self, chunk: Chunk) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The chunk's weighted embeddings [1, 77, width] and the pooled output (or None
        for an encoder without a projection)."""
        encoder = self.encoder
        ids = torch.tensor([self.ids(chunk)], device=encoder.device)
        mask = None
        if getattr(encoder.config, "use_attention_mask", False):
            mask = (ids != self.tokenizer.pad_token_id).long()  # never set for CLIP models
        output = encoder(ids, attention_mask=mask, output_hidden_states=self.stop_at != 1)
        pooled = output[0] if output[0].ndim == 2 else None
        if self.stop_at is None:
            hidden = output.hidden_states[-2]
        elif self.stop_at == 1:
            hidden = output.last_hidden_state
        else:
            # transformers 5's CLIPTextModel holds its layers itself, older ones in
            # `text_model` (diffusers' own clip_skip still looks there)
            layers = getattr(encoder, "text_model", encoder)
            # an encoder with fewer layers than asked for starts from its embeddings
            back = min(self.stop_at, len(output.hidden_states))
            hidden = layers.final_layer_norm(output.hidden_states[-back])
        weights = [1.0, *chunk.weights, *[1.0] * (CHUNK_LENGTH + 1 - len(chunk.weights))]
        return emphasize(hidden, weights), pooled


def emphasize(hidden: torch.Tensor, weights: list[float]) -> torch.Tensor:
    """Each position's embedding times its weight, then all rescaled to the old mean.

    The mean is restored so that emphasis shifts attention between words instead of
    making the whole prompt louder (A1111's "Original" emphasis). With every weight 1
    nothing is computed, so the result is bit for bit the unweighted one."""
    if all(weight == 1.0 for weight in weights):
        return hidden
    original_mean = hidden.mean()
    scale = torch.tensor(weights, dtype=hidden.dtype, device=hidden.device)
    weighted = hidden * scale.reshape(1, -1, 1)
    return weighted * (original_mean / weighted.mean())


@dataclass(frozen=True)
class Encoded:
    """One prompt's embeddings, chunk by chunk, and its pooled embedding (SDXL)."""

    chunks: list[torch.Tensor]  # each [1, 77, width of all encoders together]
    pooled: torch.Tensor | None

    def padded_to(self, count: int, empty: torch.Tensor | None) -> torch.Tensor:
        """All chunks side by side, with `empty` chunks appended up to `count`."""
        missing = count - len(self.chunks)
        if not missing:
            return torch.cat(self.chunks, dim=1)
        if empty is None:
            raise ValueError("padding needs the empty chunk")
        return torch.cat([*self.chunks, *[empty] * missing], dim=1)


@dataclass(frozen=True)
class PromptEncoder:
    """A pipeline's text encoders (one for SD 1.5, two for SDXL), used A1111's way."""

    encoders: tuple[TextEncoder, ...]
    #: SDXL pipelines condition on zeros, not on the encoded "", when there is no
    #: negative prompt (`force_zeros_for_empty_prompt`); kept so old pictures stay
    zeros_for_empty_negative: bool = False

    @classmethod
    def for_pipeline(
        cls,
        pipe: Any,
        clip_skip: int = 1,
        embeddings: list[list[EmbeddingTokens]] | None = None,
    ) -> PromptEncoder:
        """`clip_skip` is A1111's "Clip skip" (CLIP_stop_at_last_layers): 1 uses the
        last layer. SDXL always uses the penultimate layer (A1111 does too).
        `embeddings`: per text encoder, the textual inversions the prompts name."""
        loaded = embeddings or [[], []]
        second = getattr(pipe, "text_encoder_2", None)
        if second is None:
            first = TextEncoder(pipe.tokenizer, pipe.text_encoder, max(1, clip_skip), (*loaded[0],))
            return cls((first,))
        zeros = bool(getattr(pipe.config, "force_zeros_for_empty_prompt", False))
        return cls(
            (
                TextEncoder(pipe.tokenizer, pipe.text_encoder, None, (*loaded[0],)),
                TextEncoder(pipe.tokenizer_2, second, None, (*loaded[1],)),
            ),
            zeros,
        )

    @property
    def is_xl(self) -> bool:
        return len(self.encoders) > 1

    def encode(self, prompt: str) -> Encoded:
        pieces = parse_emphasis(prompt)
        per_encoder = [
            chunk_prompt(pieces, encoder.tokenize, encoder.comma) for encoder in self.encoders
        ]
        count = max(len(chunks) for chunks in per_encoder)
        outputs: list[list[torch.Tensor]] = [[] for _ in range(count)]
        pooled: torch.Tensor | None = None
        for encoder, chunks in zip(self.encoders, per_encoder, strict=True):
            chunks = chunks + [Chunk() for _ in range(count - len(chunks))]
            for index, chunk in enumerate(chunks):
                hidden, chunk_pooled = encoder.encode(chunk)
                outputs[index].append(hidden)
                if index == 0 and chunk_pooled is not None:
                    pooled = chunk_pooled  # the last encoder's with a projection (SDXL's second)
        return Encoded([torch.cat(parts, dim=-1) for parts in outputs], pooled)

    def empty_chunk(self) -> torch.Tensor:
        """The empty prompt's chunk: what the shorter side is padded with."""
        return torch.cat([encoder.encode(Chunk())[0] for encoder in self.encoders], dim=-1)

    def arguments(self, prompt: str, negative_prompt: str) -> dict[str, Any]:
        """The pipeline's prompt arguments: `prompt_embeds`, `negative_prompt_embeds`
        (and SDXL's pooled ones), both sides the same length."""
        positive = self.encode(prompt)
        if not negative_prompt and self.zeros_for_empty_negative:
            embeds = torch.cat(positive.chunks, dim=1)
            negative_embeds = torch.zeros_like(embeds)
            negative_pooled = None if positive.pooled is None else torch.zeros_like(positive.pooled)
        else:
            negative = self.encode(negative_prompt)
            count = max(len(positive.chunks), len(negative.chunks))
            uneven = len(positive.chunks) != len(negative.chunks)
            empty = self.empty_chunk() if uneven else None
            embeds = positive.padded_to(count, empty)
            negative_embeds = negative.padded_to(count, empty)
            negative_pooled = negative.pooled
        arguments: dict[str, Any] = {
            "prompt_embeds": embeds,
            "negative_prompt_embeds": negative_embeds,
        }
        if self.is_xl:
            arguments["pooled_prompt_embeds"] = positive.pooled
            arguments["negative_pooled_prompt_embeds"] = negative_pooled
        return arguments


def prompt_arguments(
    pipe: Any,
    prompt: str,
    negative_prompt: str,
    clip_skip: int = 1,
    embeddings: list[EmbeddingFile] | None = None,
) -> dict[str, Any]:
    """The pipeline arguments that replace `prompt` and `negative_prompt` (see the
    module docstring). `embeddings`: the library's textual inversions; those the
    prompts name are loaded into the model."""
    named = mentioned(embeddings or [], [prompt, negative_prompt])
    tokens = tokens_for(pipe, named) if named else None
    encoder = PromptEncoder.for_pipeline(pipe, clip_skip, tokens)
    return encoder.arguments(prompt, negative_prompt)


def plain_text(prompt: str) -> str:
    """The prompt's words without A1111's emphasis syntax: `(red hair:1.3), [blur]
    BREAK sky` -> `red hair, blur sky`."""
    parts = [piece.text if isinstance(piece, Fragment) else " " for piece in parse_emphasis(prompt)]
    return " ".join("".join(parts).split())


def reads_t5(pipe: Any) -> bool:
    """Whether the pipeline is a transformer one (Flux, SD 3.5) whose prompt T5 reads
    (see the module docstring)."""
    return getattr(pipe, "transformer", None) is not None


def is_weighted(prompt: str) -> bool:
    return any(
        isinstance(piece, Fragment) and piece.weight != 1.0 for piece in parse_emphasis(prompt)
    )


@torch.no_grad()
def weighted_t5(tokenizer: Any, encoder: Any, prompt: str, length: int) -> torch.Tensor:
    """T5's output [1, length, width] for the prompt with its weights: the fragments'
    tokens in a row, the end token, padding to `length` (as the pipelines pad), each
    position's output times its weight, rescaled to the unweighted mean."""
    ids: list[int] = []
    weights: list[float] = []
    for piece in parse_emphasis(prompt):
        if isinstance(piece, Fragment) and piece.text.strip():
            tokens = tokenizer(piece.text, add_special_tokens=False, truncation=False)
            ids += [int(i) for i in tokens["input_ids"]]
            weights += [piece.weight] * len(tokens["input_ids"])
    ids, weights = ids[: length - 1], weights[: length - 1]
    padding = length - len(ids) - 1
    ids += [tokenizer.eos_token_id, *[tokenizer.pad_token_id] * padding]
    weights += [1.0] * (padding + 1)
    hidden = encoder(torch.tensor([ids], device=encoder.device), output_hidden_states=False)[0]
    return emphasize(hidden, weights).to(dtype=encoder.dtype)


def flux_prompt_arguments(pipe: Any, prompt: str, count: int, length: int) -> dict[str, Any]:
    """A weighted prompt's Flux arguments: T5 weighted, CLIP's pooled vector of the
    plain text, both for `count` images (given embeddings are not repeated by the
    pipeline, so they are repeated here and it makes one image per embedding)."""
    pooled = pipe._get_clip_prompt_embeds(prompt=plain_text(prompt), num_images_per_prompt=count)
    embeds = weighted_t5(pipe.tokenizer_2, pipe.text_encoder_2, prompt, length)
    return {
        "prompt_embeds": embeds.repeat(count, 1, 1),
        "pooled_prompt_embeds": pooled,
        "num_images_per_prompt": 1,
    }


def _sd3_side(pipe: Any, prompt: str, count: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One prompt's SD 3 embeddings as its `encode_prompt` lays them out: CLIP-L and
    CLIP-G side by side, padded to T5's width, then T5's positions after them; the
    pooled vectors of both CLIPs side by side."""
    plain = plain_text(prompt)
    clip_l, pooled_l = pipe._get_clip_prompt_embeds(
        prompt=plain, num_images_per_prompt=count, clip_model_index=0
    )
    clip_g, pooled_g = pipe._get_clip_prompt_embeds(
        prompt=plain, num_images_per_prompt=count, clip_model_index=1
    )
    clip = torch.cat([clip_l, clip_g], dim=-1)
    t5 = weighted_t5(pipe.tokenizer_3, pipe.text_encoder_3, prompt, length)
    t5 = t5.to(device=clip.device, dtype=clip.dtype).repeat(count, 1, 1)
    clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
    return torch.cat([clip, t5], dim=-2), torch.cat([pooled_l, pooled_g], dim=-1)


def sd3_prompt_arguments(
    pipe: Any, prompt: str, negative_prompt: str, count: int, length: int
) -> dict[str, Any]:
    """A weighted SD 3 prompt (or negative prompt): both sides as embeddings."""
    embeds, pooled = _sd3_side(pipe, prompt, count, length)
    negative, negative_pooled = _sd3_side(pipe, negative_prompt, count, length)
    return {
        "prompt_embeds": embeds,
        "pooled_prompt_embeds": pooled,
        "negative_prompt_embeds": negative,
        "negative_pooled_prompt_embeds": negative_pooled,
        "num_images_per_prompt": 1,
    }


def t5_prompt_arguments(
    pipe: Any, arguments: dict[str, Any], prompt: str, negative_prompt: str
) -> dict[str, Any]:
    """The prompt arguments of a Flux or SD 3.5 pipeline (see the module docstring)."""
    rest = {key: value for key, value in arguments.items() if key != "negative_prompt"}
    uses_negative = "negative_prompt" in arguments  # SD 3.5; Flux runs without one
    weighted = is_weighted(prompt) or (uses_negative and is_weighted(negative_prompt))
    # an SD 3 pipeline loaded without T5 has nothing to weight: diffusers pads zeros
    without_t5 = uses_negative and getattr(pipe, "text_encoder_3", None) is None
    if not weighted or without_t5:
        plain = {"prompt": plain_text(prompt)}
        if uses_negative:
            plain["negative_prompt"] = plain_text(negative_prompt)
        return {**rest, **plain}
    count = int(rest.pop("num_images_per_prompt", 1) or 1)
    if uses_negative:
        length = int(rest.get("max_sequence_length", 256))
        encoded = sd3_prompt_arguments(pipe, prompt, negative_prompt, count, length)
    else:
        length = int(rest.get("max_sequence_length", 512))
        encoded = flux_prompt_arguments(pipe, prompt, count, length)
    return {**rest, **encoded}


def with_prompt_embeddings(
    pipe: Any,
    arguments: dict[str, Any],
    clip_skip: int = 1,
    embeddings: list[EmbeddingFile] | None = None,
) -> dict[str, Any]:
    """A task's pipeline arguments (`TaskSpec.pipeline_arguments`) with its `prompt`
    and `negative_prompt` replaced by their embeddings, read with A1111's syntax.

    The seam between the tasks, which speak text, and every pipeline they run (plain,
    ControlNet, union, inpaint: all take embeddings in place of text)."""
    if "prompt" not in arguments:  # a task that runs without a prompt (none today)
        return arguments
    rest = dict(arguments)
    # `<lora:...>` tags were turned into LoRAs by the front door; the text encoder
    # never sees them (A1111 removes them too)
    prompt = strip_networks(rest.pop("prompt"))
    negative_prompt = strip_networks(rest.pop("negative_prompt", None) or "")
    if reads_t5(pipe):
        if "negative_prompt" in arguments:
            rest["negative_prompt"] = negative_prompt
        return t5_prompt_arguments(pipe, rest, prompt, negative_prompt)
    encoded = prompt_arguments(pipe, prompt, negative_prompt, clip_skip, embeddings)
    return {**rest, **encoded}
