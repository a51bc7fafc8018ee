"""Control rows as plain logic: which ControlNets a checkpoint is offered, what a row
becomes in the job body, and why a row cannot be sent."""

from __future__ import annotations

import base64

import pytest

from krita_diffusers.control import (
    MODES,
    ControlChoice,
    ControlError,
    ControlRow,
    ReferenceSetting,
    check_reference,
    check_rows,
    choices_for,
    mode_from_name,
    preprocess_layer_name,
    reference_models_for,
)
from krita_diffusers.protocol import Control, JobRequest, Reference, Task, parse_models

MODELS = parse_models(
    {
        "checkpoints": [
            {"name": "dreamshaper", "family": "sd15", "default": True},
            {"name": "dreamshaper-inpaint", "family": "sd15-inpaint"},
            {"name": "juggernaut", "family": "sdxl"},
        ],
        "controls": [
            {"name": "control_v11f1p_sd15_depth_fp16", "family": "sd15", "kind": "controlnet"},
            {"name": "my-sketch-net", "family": "sd15", "kind": "controlnet"},
            {"name": "ip-adapter_sd15", "family": "sd15", "kind": "ip-adapter"},
            {"name": "controlnet-union-sdxl", "family": "sdxl", "kind": "union"},
        ],
    }
)


def test_a_checkpoint_is_offered_only_the_controlnets_of_its_family():
    sd15 = choices_for(MODELS, None)  # the server's default
    assert sd15 == [
        ControlChoice("control_v11f1p_sd15_depth_fp16", "depth"),
        ControlChoice("my-sketch-net", None),
    ]
    assert choices_for(MODELS, "dreamshaper-inpaint") == sd15  # inpaint models share the base
    sdxl = choices_for(MODELS, "juggernaut")
    assert [c.mode for c in sdxl] == list(MODES)  # a union model: one entry per mode
    assert all(c.model == "controlnet-union-sdxl" and c.union for c in sdxl)
    assert choices_for(parse_models({"checkpoints": []}), None) == []


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("control_v11p_sd15_lineart", "lineart"),
        ("control_v11p_sd15_canny_fp16", "canny"),
        ("control_v11p_sd15_openpose", "pose"),
        ("control_v11e_sd15_tile", "tile"),
        ("tiny-lines", "lineart"),
        ("something", None),
    ],
)
def test_a_plain_controlnets_mode_comes_from_its_name(name, mode):
    assert mode_from_name(name) == mode


def test_rows_that_cannot_be_sent_say_which_and_what_to_do():
    depth = ControlChoice("d", "depth")
    with pytest.raises(ControlError, match="Control 2: pick the layer"):
        check_rows([ControlRow("a", depth), ControlRow(None, depth)], {"a"})
    with pytest.raises(ControlError, match="Control 1: its layer is not in this document"):
        check_rows([ControlRow("gone", depth)], {"a"})
    with pytest.raises(ControlError, match="no control model fits"):
        check_rows([ControlRow("a", None)], {"a"})
    with pytest.raises(ControlError, match="union"):
        check_rows(
            [ControlRow("a", depth), ControlRow("a", ControlChoice("u", "canny", True))], {"a"}
        )
    with pytest.raises(ControlError, match="Control 1: its range must start before it ends"):
        check_rows([ControlRow("a", depth, 1.0, 0.6, 0.4)], {"a"})
    assert check_rows([ControlRow("a", depth, 0.5, 0.2, 0.8)], {"a"}) == [depth]


def test_a_control_is_in_the_body_in_the_protocols_shape():
    request = JobRequest(
        Task.TXT2IMG, "p", width=64, height=64, control=[Control("d", b"png", "depth", 0.7, 0, 0.8)]
    )
    assert request.body()["control"] == [
        {
            "model": "d",
            "image": base64.b64encode(b"png").decode(),
            "strength": 0.7,
            "start": 0,
            "end": 0.8,
            "mode": "depth",
        }
    ]
    plain = JobRequest(Task.TXT2IMG, "p", control=[Control("d", b"png")]).body()["control"][0]
    assert "mode" not in plain  # null: the server uses the image exactly as sent


def test_from_canvas_layers_are_named_for_their_mode():
    assert preprocess_layer_name("depth") == "Depth (control)"


def test_a_reference_is_offered_the_ip_adapters_of_the_family_and_checked():
    assert reference_models_for(MODELS, None) == ["ip-adapter_sd15"]
    assert reference_models_for(MODELS, "juggernaut") == []
    with pytest.raises(ControlError, match="no IP-Adapter fits"):
        check_reference(ReferenceSetting(None, "a"), {"a"})
    with pytest.raises(ControlError, match="pick a layer or an image file"):
        check_reference(ReferenceSetting("ip"), {"a"})
    with pytest.raises(ControlError, match="not in this document"):
        check_reference(ReferenceSetting("ip", "gone"), {"a"})
    assert check_reference(ReferenceSetting("ip", None, "/x.png"), set()) == "ip"
    body = JobRequest(Task.TXT2IMG, "p", reference=Reference("ip", b"png", 0.4)).body()
    assert body["reference"] == {
        "model": "ip",
        "image": base64.b64encode(b"png").decode(),
        "weight": 0.4,
    }
    assert "reference" not in JobRequest(Task.TXT2IMG, "p").body()
