"""`GET /v1/models` lists each LoRA's trigger words (since 5), read from the metadata
real training tools write into the file: the model-spec phrase, kohya's tag counts,
and none for a file that records neither."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from api.live import LiveServer, start_server, stop_server
from kd_server.config import Settings
from kd_server.engine import Engine
from kd_server.library import ModelLibrary
from modelkit.loras import write_test_lora


@pytest.fixture(scope="module")
def lora_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("webui")
    loras = root / "models" / "Lora"
    write_test_lora(loras, "spec", seed=1, metadata={"modelspec.trigger_phrase": "inkstyle, bold"})
    frequency = {"set": {"ohwx": 12, "1girl": 7, "hat": 1}}
    write_test_lora(loras, "kohya", seed=2, metadata={"ss_tag_frequency": json.dumps(frequency)})
    write_test_lora(loras, "plain", seed=3, metadata={"ss_output_name": "plain"})
    library = ModelLibrary([root])
    live = start_server(Settings(device="cpu"), Engine(library, device="cpu"), library)
    yield live
    stop_server(live)


def test_models_list_the_trigger_words_of_each_lora(lora_server: LiveServer) -> None:
    loras = {lora["name"]: lora for lora in lora_server.get("/v1/models").json()["loras"]}
    assert loras["spec"]["trigger_words"] == ["inkstyle", "bold"]
    assert loras["kohya"]["trigger_words"] == ["ohwx", "1girl", "hat"]
    assert loras["plain"]["trigger_words"] == []
