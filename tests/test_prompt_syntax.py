"""A1111's prompt syntax, parsed (no model): the examples A1111 documents, checked as it
gives them (its wiki's "Attention/emphasis" and parse_prompt_attention's docstring)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kd_server.prompt_syntax import (
    Break,
    Fragment,
    NetworkTag,
    PromptSyntaxError,
    extract_networks,
    has_syntax,
    parse_emphasis,
)


def pairs(text: str) -> list[tuple[str, float]]:
    """The parse as (text, weight) pairs, BREAK as ("BREAK", -1) like A1111 lists it."""
    return [
        (piece.text, round(piece.weight, 6)) if isinstance(piece, Fragment) else ("BREAK", -1)
        for piece in parse_emphasis(text)
    ]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        # the wiki's table
        ("a (word)", [("a ", 1.0), ("word", 1.1)]),
        ("a ((word))", [("a ", 1.0), ("word", 1.21)]),
        ("a [word]", [("a ", 1.0), ("word", round(1 / 1.1, 6))]),
        ("a (word:1.5)", [("a ", 1.0), ("word", 1.5)]),
        ("a (word:0.25)", [("a ", 1.0), ("word", 0.25)]),
        ("a \\(word\\)", [("a (word)", 1.0)]),
        # parse_prompt_attention's docstring
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        ("\\(literal\\]", [("(literal]", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [
                ("a ", 1.0),
                ("house", 1.573),
                (" ", 1.1),
                ("on", 1.0),
                (" a ", 1.1),
                ("hill", 0.55),
                (", sun, ", 1.1),
                ("sky", 1.4641),
                (".", 1.1),
            ],
        ),
        ("(red hair:1.3), blue eyes", [("red hair", 1.3), (", blue eyes", 1.0)]),
    ],
)
def test_documented_examples(prompt: str, expected: list[tuple[str, float]]) -> None:
    assert pairs(prompt) == expected


def test_unbalanced_closers_and_weights_are_text() -> None:
    assert pairs("a) b] c:1.2) d") == [("a) b] c:1.2) d", 1.0)]
    assert pairs("[unbalanced") == [("unbalanced", round(1 / 1.1, 6))]
    assert pairs("time: 3 (o'clock: late)") == [("time: 3 ", 1.0), ("o'clock: late", 1.1)]


def test_empty_runs_are_dropped_after_merging() -> None:
    assert pairs("(a)\\") == [("a", 1.1)]
    assert pairs("()") == [("", 1.0)]


def test_escapes_of_backslash_and_a_lone_backslash() -> None:
    assert pairs("a\\\\b") == [("a\\b", 1.0)]
    assert pairs("a\\b") == [("ab", 1.0)]
    assert pairs("\\[x\\]") == [("[x]", 1.0)]


def test_break_splits_and_keeps_weights_on_both_sides() -> None:
    assert pairs("a cat BREAK (a dog:1.2)") == [
        ("a cat", 1.0),
        ("BREAK", -1),
        ("a dog", 1.2),
    ]
    assert pairs("a BREAK BREAK b") == [("a", 1.0), ("BREAK", -1), ("BREAK", -1), ("b", 1.0)]
    # only the upper-case word on its own
    assert pairs("BREAKFAST break") == [("BREAKFAST break", 1.0)]


def test_break_inside_brackets_still_breaks() -> None:
    assert pairs("(a BREAK b)") == [("a", 1.1), ("BREAK", -1), ("b", 1.1)]


def test_plain_prompts_are_one_fragment_holding_their_text() -> None:
    text = "a photo of a cat: sitting, on a mat 1:2"
    pieces = parse_emphasis(text)
    assert pieces == [Fragment(text)]
    assert not has_syntax(pieces)
    assert parse_emphasis("") == [Fragment("")]
    assert has_syntax(parse_emphasis("(a)"))
    assert has_syntax(parse_emphasis("a BREAK b"))
    assert isinstance(parse_emphasis("a BREAK b")[1], Break)


def test_a_weight_that_is_not_a_number_counts_as_one() -> None:
    assert pairs("(a:1.2.3)") == [("a", 1.0)]


def test_network_tags_are_taken_out_of_the_prompt() -> None:
    text, tags = extract_networks(
        "a cat, <lora:ink style:0.8>, <LyCo:grain> at dusk <lora:x:0.5:1>"
    )
    assert text == "a cat, , at dusk"
    assert tags == [
        NetworkTag("lora", "ink style", (0.8,)),
        NetworkTag("lyco", "grain", ()),
        NetworkTag("lora", "x", (0.5, 1.0)),
    ]
    assert [t.weight for t in tags] == [0.8, 1.0, 0.5]
    assert [t.is_lora for t in tags] == [True, True, True]
    assert tags[2].has_split_weights and not tags[0].has_split_weights
    assert extract_networks("<hypernet:h:1> a") == ("a", [NetworkTag("hypernet", "h", (1.0,))])
    assert extract_networks("<hypernet:h:1>")[1][0].is_unavailable
    # kinds nobody knows are taken out and not checked (A1111 skips them)
    text, (odd,) = extract_networks("love <3:you:lots>")
    assert text == "love" and not odd.is_lora and not odd.is_unavailable


@pytest.mark.parametrize("text", ["<lora::1>", "<lora:x:heavy>"])
def test_bad_network_tags_are_refused(text: str) -> None:
    with pytest.raises(PromptSyntaxError):
        extract_networks(text)


@given(st.text(alphabet=st.sampled_from(list("ab (:)[]\\,.1.5BREAK<>lor")), max_size=80))
def test_any_text_parses_and_extracts(text: str) -> None:
    """No prompt makes the parser fail: every odd bracket, colon and backslash is text."""
    pieces = parse_emphasis(text)
    assert pieces
    for piece in pieces:
        assert isinstance(piece, Break) or piece.weight == piece.weight  # never NaN
    try:
        extract_networks(text)
    except PromptSyntaxError:
        assert "<lor" in text or "<lyco" in text  # only LoRA tags are checked


@given(st.text(max_size=60))
def test_text_without_syntax_characters_is_one_fragment(text: str) -> None:
    if any(c in text for c in "()[]\\") or "BREAK" in text:
        return
    assert parse_emphasis(text) == [Fragment(text)] if text else [Fragment("")]
