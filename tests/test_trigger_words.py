"""Trigger words from a LoRA's header metadata: the model-spec phrase first, else
kohya's most frequent tags; anything unreadable gives none rather than a guess."""

from __future__ import annotations

import json

from kd_server.trigger_words import MAX_TAGS, trigger_words


def kohya(*datasets: dict[str, int]) -> dict[str, str]:
    return {"ss_tag_frequency": json.dumps({f"set{i}": d for i, d in enumerate(datasets)})}


def test_the_model_spec_phrase_is_split_like_a_prompt() -> None:
    words = trigger_words({"modelspec.trigger_phrase": "inkstyle, sketch ,, inkstyle"})
    assert words == ("inkstyle", "sketch")


def test_the_phrase_wins_over_tag_frequency() -> None:
    metadata = {"modelspec.trigger_phrase": "inkstyle", **kohya({"cat": 9})}
    assert trigger_words(metadata) == ("inkstyle",)


def test_kohya_tags_are_the_most_frequent_over_all_datasets() -> None:
    metadata = kohya(
        {"1girl": 3, "ohwx": 10, " ": 50, "": 40, "hat": 2},
        {"1girl": 8, "red": 1, "blue": 1, "green": 1, "bad": -4},
    )
    assert trigger_words(metadata) == ("1girl", "ohwx", "hat", "red", "blue")
    many = kohya({f"tag{i}": 100 - i for i in range(20)})
    assert len(trigger_words(many)) == MAX_TAGS


def test_malformed_or_missing_metadata_gives_no_words() -> None:
    assert trigger_words({"ss_tag_frequency": "{not json"}) == ()
    assert trigger_words({"ss_tag_frequency": '["a", "b"]'}) == ()
    assert trigger_words({"ss_tag_frequency": '{"set": {"a": "many"}}'}) == ()
    assert trigger_words({"modelspec.trigger_phrase": " , "}) == ()
    assert trigger_words({"ss_output_name": "inkstyle"}) == ()  # a name, not a word
    assert trigger_words({}) == ()
