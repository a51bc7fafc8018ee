"""Trigger words of a LoRA, read from its safetensors header metadata (no weights).

A LoRA trained on a word only reacts when the prompt contains it, and artists rarely
remember the word. Training tools record it: the Stability model spec writes
`modelspec.trigger_phrase`; kohya's sd-scripts write `ss_tag_frequency`, a JSON string
{dataset: {tag: count}} whose most frequent tags are the words the LoRA was trained
on. Anything else (other keys, malformed values) yields no words: a guess would put
wrong words into a prompt.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping

TRIGGER_PHRASE_KEY = "modelspec.trigger_phrase"
TAG_FREQUENCY_KEY = "ss_tag_frequency"
#: kohya tags are every caption tag; the top few are the ones the LoRA learned most
MAX_TAGS = 5
#: a scan keeps the words per file: bound what one odd header can make it keep
MAX_WORD_LENGTH = 100


def trigger_words(metadata: Mapping[str, str]) -> tuple[str, ...]:
    """The trigger phrase when the file has one, else kohya's most frequent tags."""
    phrase = metadata.get(TRIGGER_PHRASE_KEY)
    if isinstance(phrase, str) and phrase.strip():
        return _split_phrase(phrase)
    frequency = metadata.get(TAG_FREQUENCY_KEY)
    if isinstance(frequency, str):
        return _top_tags(frequency)
    return ()


def _split_phrase(phrase: str) -> tuple[str, ...]:
    """A trigger phrase may list several words, comma-separated as in a prompt."""
    words = (word.strip() for word in phrase.split(","))
    return _unique(word[:MAX_WORD_LENGTH] for word in words if word)


def _top_tags(text: str) -> tuple[str, ...]:
    """The MAX_TAGS most frequent tags over every dataset; malformed JSON gives none."""
    try:
        datasets = json.loads(text)
    except ValueError:
        return ()
    if not isinstance(datasets, dict):
        return ()
    counts: Counter[str] = Counter()
    for tags in datasets.values():
        if not isinstance(tags, dict):
            continue
        for tag, count in tags.items():
            word = tag.strip() if isinstance(tag, str) else ""
            if word and isinstance(count, int) and not isinstance(count, bool) and count > 0:
                counts[word[:MAX_WORD_LENGTH]] += count
    # most_common keeps first-seen order among ties: the result is stable per file
    return tuple(tag for tag, _ in counts.most_common(MAX_TAGS))


def _unique(words: Iterable[str]) -> tuple[str, ...]:
    """Each word once, in the file's order."""
    return tuple(dict.fromkeys(words))
