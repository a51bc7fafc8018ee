"""Request bodies, event parsing, error wording, URLs and the Generate plan."""

import base64
import json

import pytest

from krita_diffusers.geometry import Rect
from krita_diffusers.planning import PlanError, action_label, make_plan
from krita_diffusers.protocol import (
    EventType,
    JobRequest,
    Lora,
    ServerError,
    Task,
    error_from_response,
    events_url,
    friendly_message,
    join_url,
    parse_event,
    parse_models,
    server_protocol,
)


def test_txt2img_body_has_size_and_no_image_fields():
    body = JobRequest(Task.TXT2IMG, "cat", width=64, height=48, client_id="c").body()
    assert body["width"] == 64 and body["height"] == 48 and body["seed"] == -1
    assert "image" not in body and "mask" not in body and "strength" not in body


def test_inpaint_body_has_base64_image_mask_and_mask_settings():
    request = JobRequest(
        Task.INPAINT,
        "cat",
        loras=[Lora("ink", 0.5)],
        seed=3,
        strength=0.8,
        image=b"\x89PNGimg",
        mask=b"\x89PNGmask",
        mask_grow=4,
        mask_feather=2,
    )
    body = request.body()
    assert base64.b64decode(body["image"]) == b"\x89PNGimg"
    assert base64.b64decode(body["mask"]) == b"\x89PNGmask"
    assert body["loras"] == [{"name": "ink", "weight": 0.5}]
    assert (body["strength"], body["seed"], body["mask_grow"], body["mask_feather"]) == (
        0.8,
        3,
        4,
        2,
    )
    assert "width" not in body
    json.dumps(body)


def test_parse_event_reads_fields_and_ignores_garbage():
    event = parse_event('{"type": "progress", "job_id": "j", "step": 2, "total": 5}')
    assert event.type is EventType.PROGRESS and (event.step, event.total) == (2, 5)
    failed = parse_event(
        json.dumps({"type": "failed", "job_id": "j", "error": {"code": "x", "message": "Boom."}})
    )
    assert failed.error == "Boom."
    assert parse_event("not json") is None
    assert parse_event('{"type": "hello", "job_id": "j"}') is None
    assert parse_event('{"job_id": "j"}') is None
    assert parse_event("[1, 2]") is None


def test_error_body_is_read_and_unknown_bodies_still_give_a_sentence():
    error = error_from_response(
        404, '{"error": {"code": "model_not_found", "message": "No model x."}}'
    )
    assert (error.status, error.code, error.message) == (404, "model_not_found", "No model x.")
    assert "Pick another model" in friendly_message(error)
    html = error_from_response(502, "<html><body>Bad gateway</body></html>")
    assert "502" in html.message
    assert "token" in friendly_message(error_from_response(401, ""))


def test_friendly_message_out_of_memory_says_what_to_do():
    text = friendly_message(ServerError(507, "out_of_memory", "The GPU ran out of memory."))
    assert text.startswith("The GPU ran out of memory.") and "smaller" in text


def test_urls_keep_prefix_and_switch_scheme():
    assert join_url("http://h:1/", "/v1/jobs/a/images/0") == "http://h:1/v1/jobs/a/images/0"
    assert join_url("https://h/kd", "/v1/health") == "https://h/kd/v1/health"
    assert events_url("http://h:1", "a b") == "ws://h:1/v1/events?client_id=a%20b&resume=true"
    assert events_url("https://h/kd/", "c") == "wss://h/kd/v1/events?client_id=c&resume=true"


def test_the_protocol_version_is_read_from_health_and_one_when_absent():
    assert server_protocol({"protocol": 4}) == 4
    assert server_protocol({"status": "ok"}) == 1  # the first release says none
    assert server_protocol({"protocol": "2"}) == 1 and server_protocol(None) == 1


def test_parse_models_and_family_lookup():
    models = parse_models(
        {
            "checkpoints": [
                {"name": "tiny", "family": "sd15", "default": True},
                {"name": "xl", "family": "sdxl"},
            ],
            "loras": [{"name": "ink"}],
        }
    )
    assert models.family_of(None) == "sd15" and models.family_of("xl") == "sdxl"
    assert models.loras == ["ink"]
    assert parse_models("nonsense").checkpoints == []


def test_working_size_comes_from_the_server_and_falls_back_to_the_family():
    """Protocol 2 servers say each model's working size; older ones only its family."""
    models = parse_models(
        {
            "checkpoints": [
                {"name": "tiny", "family": "sd15", "default": True, "working_size": 64},
                {"name": "xl-told", "family": "sdxl", "working_size": 768},
                {"name": "xl-old", "family": "sdxl"},
                {"name": "odd", "family": "sd15", "working_size": "big"},
            ]
        }
    )
    assert models.working_size_of(None) == 64  # the server's default model
    assert models.working_size_of("xl-told") == 768  # not the 1024 the name suggests
    assert models.working_size_of("xl-old") == 1024
    assert models.working_size_of("odd") == 512
    assert models.working_size_of("unknown") == 512


@pytest.mark.parametrize(
    ("strength", "selection", "label"),
    [
        (100, False, "Generate"),
        (60, False, "Refine"),
        (100, True, "Inpaint"),
        (30, True, "Inpaint"),
    ],
)
def test_action_label(strength, selection, label):
    assert action_label(strength, selection) == label


def test_plan_whole_canvas_txt2img_and_img2img():
    plan = make_plan((100, 50), None, 100, 32, 64)
    assert plan.task is Task.TXT2IMG and plan.region == Rect(0, 0, 100, 50)
    assert (plan.width, plan.height) == (88, 48)
    refine = make_plan((100, 50), None, 40, 32, 64)
    assert (
        refine.task is Task.IMG2IMG
        and refine.strength == 0.4
        and refine.region == Rect(0, 0, 100, 50)
    )


def test_plan_selection_is_inpaint_of_grown_region():
    plan = make_plan((64, 64), Rect(20, 20, 10, 10), 75, 8, 512)
    assert (
        plan.task is Task.INPAINT and plan.region == Rect(12, 12, 26, 26) and plan.strength == 0.75
    )


def test_plan_refuses_without_document_or_with_selection_off_canvas():
    with pytest.raises(PlanError, match="Open or create"):
        make_plan(None, None, 100, 0, 512)
    with pytest.raises(PlanError, match="outside the canvas"):
        make_plan((64, 64), Rect(100, 100, 5, 5), 100, 8, 512)


def test_parse_event_server_shapes_preview_image_and_finished_images():
    preview = parse_event('{"type": "preview", "job_id": "j", "step": 1, "image": "QUJD"}')
    assert preview.preview == "QUJD"
    done = parse_event(
        json.dumps(
            {
                "type": "finished",
                "job_id": "j",
                "images": [{"index": 0, "seed": 4, "url": "/a"}, "junk"],
            }
        )
    )
    assert done.images == ((0, 4, "/a"),)
    started = parse_event('{"type": "started", "job_id": "j", "loading_model": "m"}')
    assert started.loading_model == "m"


def test_parse_event_state_keeps_the_record_and_warning_its_sentence():
    """A `state` carries the fields of `GET /v1/jobs/{id}`, kept whole for the job to
    read; a `warning` carries a code and a sentence for the artist."""
    record = {
        "job_id": "j",
        "status": "finished",
        "position": None,
        "step": 3,
        "total": 3,
        "images": [{"index": 0, "seed": 4, "url": "/a"}],
        "error": None,
        "loading_model": None,
    }
    state = parse_event(json.dumps({"type": "state", **record}))
    assert state.type is EventType.STATE and state.record == record
    warning = parse_event(
        json.dumps(
            {"type": "warning", "job_id": "j", "code": "result_not_saved", "message": "Disk full."}
        )
    )
    assert warning.type is EventType.WARNING
    assert (warning.code, warning.message) == ("result_not_saved", "Disk full.")
    assert warning.record is None
