"""Issue 17's plain logic: upscale sizes and bodies, the hi-res plan, fill per
action, expand's region, mask and pixels, and what is sent to which server."""

from __future__ import annotations

import base64

import pytest

from krita_diffusers.expanding import ExpandError, Expansion, Sides, plan_expansion
from krita_diffusers.geometry import Rect
from krita_diffusers.planning import (
    fill_for,
    has_transparency,
    hires_size,
    make_plan,
    reaches_past,
)
from krita_diffusers.protocol import (
    Enlarge,
    FillMode,
    JobRequest,
    Task,
    parse_models,
)
from krita_diffusers.upscaling import (
    LANCZOS,
    Destination,
    UpscaleChoice,
    UpscaleError,
    enlarge,
    result_name,
    target_size,
    upscaler_entries,
)

# -- upscaling --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factor", "expected"), [(1.5, (768, 384)), (2.0, (1024, 512)), (4.0, (2048, 1024))]
)
def test_a_factor_gives_the_canvas_times_it(factor, expected):
    assert target_size((512, 256), UpscaleChoice(factor=factor)) == expected


def test_odd_sizes_round_to_whole_pixels():
    assert target_size((333, 101), UpscaleChoice(factor=1.5)) == (500, 152)


def test_a_target_size_is_taken_as_given():
    choice = UpscaleChoice(factor=None, width=1000, height=700)
    assert target_size((500, 500), choice) == (1000, 700)


@pytest.mark.parametrize(
    ("canvas", "choice", "words"),
    [
        (None, UpscaleChoice(), "Open or create"),
        ((5000, 100), UpscaleChoice(factor=2.0), "at most 8192"),
        ((512, 512), UpscaleChoice(factor=None, width=256, height=1024), "not larger"),
        ((512, 512), UpscaleChoice(factor=None, width=512, height=512), "not larger"),
        ((512, 512), UpscaleChoice(factor=None, width=0, height=0), "width and height"),
        ((20, 20), UpscaleChoice(factor=2.0), "at least 64"),
    ],
)
def test_sizes_the_server_cannot_make_are_refused_in_words(canvas, choice, words):
    with pytest.raises(UpscaleError, match=words):
        target_size(canvas, choice)


def test_the_upscale_body_has_the_exact_size_upscaler_and_refine():
    choice = UpscaleChoice(upscaler="4x-tiny", strength_percent=20)
    request = JobRequest(Task.UPSCALE, "", image=b"png", upscale=enlarge(choice, (128, 96)))
    body = request.body()
    assert body["task"] == "upscale"
    assert body["upscale"] == {"width": 128, "height": 96, "upscaler": "4x-tiny", "strength": 0.2}
    assert base64.b64decode(body["image"]) == b"png"
    assert "strength" not in body and "width" not in body and "fill" not in body


def test_lanczos_is_null_and_a_factor_can_be_sent():
    body = Enlarge(factor=2.0).body()
    assert body == {"upscaler": None, "factor": 2.0}


def test_upscaler_list_starts_with_lanczos_and_keeps_unusable_ones_with_reason():
    models = parse_models(
        {
            "checkpoints": [],
            "upscalers": [
                {"name": "4x-tiny", "usable": True, "scale": 4, "architecture": "ESRGAN"},
                {"name": "odd", "usable": False, "reason": "unknown architecture"},
                {"no name": 1},
            ],
        }
    )
    entries = upscaler_entries(models)
    assert [(e.label, e.name, e.usable) for e in entries] == [
        (LANCZOS, None, True),
        ("4x-tiny (4x)", "4x-tiny", True),
        ("odd", "odd", False),
    ]
    assert entries[2].reason == "unknown architecture"
    assert upscaler_entries(parse_models({"checkpoints": []})) == entries[:1]


def test_result_names_say_the_size():
    assert result_name((1024, 512), "") == "Upscaled 1024x512"
    assert result_name((1024, 512), "a  cat") == "Upscaled 1024x512: a cat"
    assert Destination("layer") is Destination.LAYER


# -- hi-res fix -----------------------------------------------------------------------


def test_a_large_canvas_gets_a_first_pass_at_the_working_size_and_hires_to_its_size():
    plan = make_plan((2048, 1024), None, 100, 64, 512, hires=True)
    assert plan.task is Task.TXT2IMG
    assert (plan.width, plan.height) == (728, 360)  # 512x512's area, the canvas's aspect
    assert plan.hires == (2048, 1024)
    body = JobRequest(
        Task.TXT2IMG, "a", width=plan.width, height=plan.height, hires=Enlarge(2048, None)
    ).body()
    assert body["width"] == 728 and "hires" in body


def test_no_hires_when_off_or_the_canvas_is_not_larger():
    assert make_plan((2048, 1024), None, 100, 64, 512, hires=False).hires is None
    assert make_plan((512, 512), None, 100, 64, 512, hires=True).hires is None
    assert make_plan((300, 200), None, 100, 64, 512, hires=True).hires is None
    assert make_plan((2048, 1024), None, 50, 64, 512, hires=True).hires is None  # refine
    assert make_plan((600, 600), Rect(0, 0, 9, 9), 100, 64, 512, hires=True).hires is None


def test_hires_size_is_the_canvas_within_the_servers_largest_side():
    assert hires_size(1001, 701) == (1001, 701)  # no scaling needed afterwards
    assert hires_size(9000, 3000) == (8192, 2731)
    assert hires_size(6000, 6000) == (6000, 6000)  # tiled: no pixel budget


def test_no_hires_for_a_sliver_thinner_than_the_servers_smallest_side():
    assert make_plan((2000, 40), None, 100, 64, 512, hires=True).hires is None


def test_hires_is_sent_only_when_set():
    body = JobRequest(Task.TXT2IMG, "a", width=64, height=64).body()
    assert "hires" not in body
    hires = Enlarge(width=128, height=96)
    body = JobRequest(Task.TXT2IMG, "a", width=64, height=64, hires=hires).body()
    assert body["hires"] == {"upscaler": None, "width": 128, "height": 96}
    assert "hires" not in JobRequest(Task.IMG2IMG, "a", hires=hires).body()  # txt2img only


# -- fill -------------------------------------------------------------------------------


def test_transparency_is_any_alpha_below_255():
    assert not has_transparency(bytes([1, 2, 3, 255]) * 10)
    assert has_transparency(bytes([1, 2, 3, 255]) * 9 + bytes([1, 2, 3, 254]))
    assert not has_transparency(b"")


def test_fill_per_action():
    assert fill_for(Task.INPAINT, transparent=False) is FillMode.KEEP
    assert fill_for(Task.IMG2IMG, transparent=False) is FillMode.KEEP
    assert fill_for(Task.INPAINT, transparent=True) is FillMode.EDGE
    assert fill_for(Task.IMG2IMG, transparent=True) is FillMode.BLUR


def test_fill_is_sent_only_when_set_and_only_on_image_tasks():
    assert "fill" not in JobRequest(Task.INPAINT, "a", image=b"x", mask=b"m").body()
    body = JobRequest(Task.INPAINT, "a", image=b"x", mask=b"m", fill=FillMode.BLUR).body()
    assert body["fill"] == "blur"
    assert "fill" not in JobRequest(Task.TXT2IMG, "a", fill=FillMode.EDGE).body()


# -- expand -----------------------------------------------------------------------------


def test_expanding_right_grows_the_canvas_and_keeps_the_picture_at_the_origin():
    expansion = plan_expansion((512, 384), Sides(right=256))
    assert expansion.new_size == (768, 384)
    assert expansion.old_rect == Rect(0, 0, 512, 384)
    region = expansion.region(256)
    assert region == Rect(256, 0, 512, 384)  # the strip and 256 px of the picture
    assert expansion.old_part(region) == Rect(256, 0, 256, 384)


def test_expanding_left_and_top_moves_the_picture():
    expansion = Expansion((100, 80), Sides(left=20, top=10))
    assert expansion.new_size == (120, 90)
    assert expansion.old_rect == Rect(20, 10, 100, 80)
    region = expansion.region(16)
    assert region == Rect(0, 0, 120, 90)  # both strips and their context: all of it
    assert expansion.old_part(region) == Rect(0, 0, 100, 80)
    small = Expansion((400, 300), Sides(top=16)).region(32)
    assert small == Rect(0, 0, 400, 48)


def test_expand_mask_is_full_on_the_new_area_and_fades_into_the_old():
    expansion = Expansion((8, 2), Sides(right=4))
    region = expansion.region(8)
    assert region == Rect(0, 0, 12, 2)
    mask = expansion.mask(region, feather=3)
    row = list(mask[:12])
    assert row == [0, 0, 0, 0, 0, 64, 128, 191, 255, 255, 255, 255]
    assert mask[12:] == mask[:12]
    no_feather = expansion.mask(region, feather=0)
    assert list(no_feather[:12]) == [0] * 8 + [255] * 4


def test_expand_mask_corners_take_the_larger_of_both_sides():
    expansion = Expansion((4, 4), Sides(right=2, bottom=2))
    region = expansion.region(4)
    mask = expansion.mask(region, feather=2)
    rows = [list(mask[i * 6 : i * 6 + 6]) for i in range(6)]
    assert rows[0] == [0, 0, 85, 170, 255, 255]
    assert rows[3] == [170, 170, 170, 170, 255, 255]  # last old row: the bottom ramp
    assert rows[4] == [255] * 6


def test_expand_pixels_are_the_old_picture_with_transparent_new_area():
    expansion = Expansion((2, 2), Sides(left=1, bottom=1))
    region = expansion.region(4)
    assert region == Rect(0, 0, 3, 3)
    old = bytes([1, 1, 1, 255, 2, 2, 2, 255, 3, 3, 3, 255, 4, 4, 4, 255])
    assert expansion.old_part(region) == Rect(0, 0, 2, 2)
    pixels = expansion.pixels(region, old)
    clear = bytes(4)
    assert pixels == (clear + old[0:8] + clear + old[8:16] + clear * 3), (
        "left column and bottom row transparent, the picture moved right"
    )
    with pytest.raises(ExpandError):
        expansion.pixels(region, old[:4])


@pytest.mark.parametrize(
    ("sides", "words"),
    [
        (Sides(), "Tick at least one side"),
        (Sides(right=-4), "to crop"),
        (Sides(right=5000), "at most"),
    ],
)
def test_impossible_expansions_are_refused_in_words(sides, words):
    with pytest.raises(ExpandError, match=words):
        plan_expansion((64, 64), sides)


def test_sides_from_ticks():
    assert Sides.chosen(64, False, True, True, False) == Sides(0, 64, 64, 0)


def test_reaching_past_the_canvas():
    assert reaches_past(Rect(50, 0, 20, 10), (64, 64))
    assert reaches_past(Rect(-5, -5, 20, 10), (64, 64))
    assert not reaches_past(Rect(0, 0, 64, 64), (64, 64))
    assert not reaches_past(Rect(100, 0, 20, 10), (64, 64))  # wholly outside: refused
    assert not reaches_past(None, (64, 64)) and not reaches_past(Rect(0, 0, 1, 1), None)


def test_expand_context_is_the_margin_but_at_least_the_widest_strip():
    assert Expansion((512, 512), Sides(right=256)).context_for(64) == 256
    assert Expansion((512, 512), Sides(top=16, left=32)).context_for(64) == 64
