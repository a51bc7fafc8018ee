"""Recipes and the history a document keeps: JSON round trips, damaged annotations
read as an empty history, the newest first and bounded. Plain logic."""

from __future__ import annotations

import json

from krita_diffusers.protocol import Lora
from krita_diffusers.recipes import (
    Recipe,
    SavedHistory,
    SavedResult,
    decode,
    encode,
    from_dict,
    to_dict,
    with_result,
)

RECIPE = Recipe(
    prompt="a fox",
    negative_prompt="text",
    style="Ink",
    model="sd15/dream.safetensors",
    sampler="Euler",
    steps=25,
    cfg_scale=4.5,
    seed=2**33,  # past 32 bits: kept exactly
    strength_percent=60,
    loras=(Lora("ink", 0.8),),
    task="img2img",
    region=(0, 0, 512, 512),
    controls=("control_v11p_sd15_canny",),
    reference="ip-adapter_sd15",
    sent_prompt="a fox, in ink",
)


def test_recipe_round_trips():
    assert from_dict(json.loads(json.dumps(to_dict(RECIPE)))) == RECIPE


def test_wrong_fields_fall_back_and_non_recipes_are_none():
    assert from_dict({"prompt": "x", "steps": "many", "seed": True, "region": [1, 2]}) == (
        Recipe("x")
    )
    assert from_dict({"negative_prompt": "no prompt"}) is None
    assert from_dict([1]) is None


def test_saved_history_round_trips_newest_first_and_bounded():
    history = SavedHistory()
    for number in range(4):
        entry = SavedResult(
            RECIPE, f"a fox (seed {number})", b"\x89PNG" + bytes([number]), "j", number
        )
        history = with_result(history, entry, limit=3)
    again = decode(encode(history))
    assert [e.index for e in again.entries] == [3, 2, 1]
    assert again.entries[0].thumbnail == b"\x89PNG\x03" and again.entries[0].recipe == RECIPE
    same = with_result(again, SavedResult(RECIPE, "again", b"", "j", 2))
    assert [e.index for e in same.entries] == [2, 3, 1]  # one entry per result


def test_damaged_annotations_read_as_empty_or_partial():
    assert decode(None).entries == [] and decode(b"{oops").entries == []
    assert decode(b"\xff\xfe").entries == []
    data = {"format": 1, "entries": [{"recipe": {"prompt": "kept"}, "thumbnail": "!!"}, 7]}
    entries = decode(json.dumps(data).encode()).entries
    assert [e.recipe.prompt for e in entries] == ["kept"] and entries[0].thumbnail == b""
