"""The history kept with a document survives quitting Krita: a result made through
the docker in one Krita launch (`history_save`: its recipe and thumbnail written into
the document by the plugin, the document saved as a .kra, Krita quits), then a fresh
Krita launch (`history_reopen`) opens the .kra: the docker lists the saved result
with its thumbnail, Reuse seed takes only the seed, Reuse the whole recipe.

Cost: one Krita launch more than the suite. With the rest of tests/e2e selected,
`history_save` runs inside the suite's one launch (`krita_run`) and only
`history_reopen` launches Krita again; run alone, this file launches Krita twice
(each a few seconds to start, one tiny generation in the first).
"""

from __future__ import annotations

import io
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e import harness
from e2e.krita_e2e import GENERATION, passed, require_krita
from PIL import Image

from krita_diffusers.images import THUMBNAIL
from krita_diffusers.recipes import ANNOTATION, decode

pytestmark = pytest.mark.krita

ARTIFACTS = harness.ROOT / "tests-artifacts" / "e2e-restart"


@pytest.fixture(scope="module")
def restart(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    require_krita()
    in_suite = any(
        "krita_run" in getattr(item, "fixturenames", ()) for item in request.session.items
    )
    made: list[harness.KritaRun] = []
    if in_suite:
        first = request.getfixturevalue("krita_run")
    else:
        first = harness.run_krita(
            ["history_save"], generation=GENERATION, keep=ARTIFACTS / "save", timeout_s=400
        )
        made.append(first)
    try:
        saved = passed(first, "history_save")
        kra = Path(saved["kra"])
        kept = ARTIFACTS / "kept.kra"
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(kra, kept)
        # the second Krita starts with other settings (6 steps): Reuse must bring 4 back
        second = harness.run_krita(
            ["history_reopen"],
            generation={**GENERATION, "steps": 6},
            plan_extra={"kra": str(kra)},
            keep=ARTIFACTS / "reopen",
            timeout_s=400,
        )
        made.append(second)
        yield {"saved": saved, "kra": kept, "second": second}
    finally:
        for run in made:
            shutil.rmtree(run.work, ignore_errors=True)


def test_the_kra_holds_the_recipe_and_thumbnail(restart):
    saved = restart["saved"]
    assert saved["saved"] is True
    assert ANNOTATION in saved["annotation_types"]
    with zipfile.ZipFile(restart["kra"]) as kra:
        names = [n for n in kra.namelist() if n.endswith(f"annotations/{ANNOTATION}")]
        assert len(names) == 1, kra.namelist()
        history = decode(kra.read(names[0]))
    assert len(history.entries) == 1
    entry = history.entries[0]
    recipe = entry.recipe
    assert (recipe.prompt, recipe.negative_prompt) == ("a kept fox", "blurry")
    assert recipe.seed == int(saved["seed_text"]) and recipe.model == saved["model"]
    assert (recipe.steps, recipe.task) == (GENERATION["steps"], "txt2img")
    thumbnail = Image.open(io.BytesIO(entry.thumbnail))
    assert thumbnail.format == "PNG" and max(thumbnail.size) <= THUMBNAIL


def test_a_second_krita_quits_cleanly(restart):
    launch = restart["second"].log["launch"]
    assert launch["returncode"] == 0 and not launch["timed_out"] and not launch["leftovers"]


def test_a_restarted_krita_lists_the_saved_result_with_its_thumbnail(restart):
    data = passed(restart["second"], "history_reopen")
    assert ANNOTATION in data["annotation_types"]
    assert data["saved_count"] == 1 and data["saved_shown"]
    assert data["saved_text"] == restart["saved"]["seed_text"]
    assert data["saved_icon"], "the saved result has no thumbnail"


def test_reuse_seed_takes_only_the_seed(restart):
    data = passed(restart["second"], "history_reopen")
    after = data["after_reuse_seed"]
    assert after["seed"] == restart["saved"]["seed_text"] and after["seed_locked"]
    assert (after["prompt"], after["negative"], after["strength"], after["model"]) == (
        "a boat",
        "",
        40,
        None,
    )


def test_reuse_restores_the_whole_recipe(restart):
    saved = restart["saved"]
    data = passed(restart["second"], "history_reopen")
    assert data["sampling_before"] != saved["sampling"]  # 6 steps in this launch
    after = data["after_reuse"]
    assert (after["prompt"], after["negative"], after["strength"]) == ("a kept fox", "blurry", 100)
    assert after["seed"] == saved["seed_text"] and after["seed_locked"]
    assert after["model"] == saved["model"]
    assert after["sampling"] == saved["sampling"]
    assert after["notice"] == ""
