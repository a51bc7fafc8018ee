"""The controller's side of issue 17 with the stand-in client: what reaches a server of
protocol 4 (nothing new) and of protocol 5 (hires, fill, upscale, expand), and where
upscaled and expanded results land. The real server runs the same paths in
test_panel_resize_live.py."""

from __future__ import annotations

import pytest
from plugin.memory_canvas import MemoryCanvas
from plugin.test_controller import StandInClient, finish, run_now

from krita_diffusers import images
from krita_diffusers.controller import OLD_SERVER, Controller, GenerateInput
from krita_diffusers.expanding import Sides
from krita_diffusers.geometry import Rect
from krita_diffusers.planning import PAST_THE_EDGE
from krita_diffusers.protocol import FillMode, Task
from krita_diffusers.qt import QImage
from krita_diffusers.settings import Settings
from krita_diffusers.upscaling import Destination, UpscaleChoice


def make(protocol: int, canvas: MemoryCanvas | None = None, **settings):
    client = StandInClient()
    client.protocol = protocol
    canvas = canvas or MemoryCanvas(64, 64)
    messages: list[str] = []
    controller = Controller(client, canvas, Settings(**settings), background=run_now)
    controller.message.connect(messages.append)
    return controller, client, canvas, messages


def png(width: int, height: int, rgba=(0, 200, 0, 255)) -> bytes:
    return images.encode_rgba_png(bytes(rgba) * (width * height), width, height)


def decoded(data: bytes) -> QImage:
    return images.decode(data)


def transparent_canvas(width: int = 64, height: int = 64) -> MemoryCanvas:
    return MemoryCanvas(width, height, rgba=(0, 0, 0, 0))


# -- what older servers get --------------------------------------------------------------


def test_a_protocol_4_server_gets_no_new_fields():
    controller, client, canvas, _messages = make(4, MemoryCanvas(128, 96), working_resolution=64)
    assert controller.generate(GenerateInput("a"))
    body = client.requests[-1].body()
    assert body["task"] == "txt2img" and "hires" not in body
    canvas.select(Rect(8, 8, 16, 16))
    controller.generate(GenerateInput("a"))
    assert "fill" not in client.requests[-1].body()


def test_upscale_on_a_protocol_4_server_says_update_and_sends_nothing():
    controller, client, _canvas, messages = make(4)
    assert not controller.upscale(GenerateInput(""), UpscaleChoice())
    assert client.requests == [] and messages[-1] == OLD_SERVER


def test_expand_on_a_protocol_4_server_inpaints_without_fill():
    controller, client, canvas, _messages = make(4)
    assert controller.expand(GenerateInput("sea"), Sides(right=16))
    body = client.requests[-1].body()
    assert body["task"] == "inpaint" and "fill" not in body
    assert canvas.width == 80


# -- hi-res fix -------------------------------------------------------------------------


def test_a_large_canvas_asks_for_hires_to_its_size():
    controller, client, _canvas, _ = make(5, MemoryCanvas(160, 96), working_resolution=64)
    controller.generate(GenerateInput("hills"))
    body = client.requests[-1].body()
    assert (body["width"], body["height"]) == (80, 48)
    assert body["hires"] == {"upscaler": None, "width": 160, "height": 96}


def test_hires_fix_off_asks_for_the_working_size_only():
    controller, client, _c, _ = make(
        5, MemoryCanvas(160, 96), working_resolution=64, hires_fix=False
    )
    controller.generate(GenerateInput("hills"))
    assert "hires" not in client.requests[-1].body()


# -- fill per action ------------------------------------------------------------------


def test_inpaint_of_an_opaque_selection_keeps_the_picture():
    controller, client, canvas, _ = make(5)
    canvas.select(Rect(8, 8, 16, 16))
    controller.generate(GenerateInput("a"))
    assert client.requests[-1].fill is FillMode.KEEP


def test_transparent_pixels_are_sent_as_they_are_and_filled_by_the_server():
    controller, client, canvas, _ = make(5, transparent_canvas())
    canvas.select(Rect(8, 8, 16, 16))
    controller.generate(GenerateInput("a"))
    request = client.requests[-1]
    assert request.fill is FillMode.EDGE
    sent = decoded(request.image or b"")
    assert sent.hasAlphaChannel() and sent.pixelColor(0, 0).alpha() == 0  # not on white
    canvas.deselect()
    controller.generate(GenerateInput("a", strength_percent=50))
    assert client.requests[-1].task is Task.IMG2IMG
    assert client.requests[-1].fill is FillMode.BLUR


# -- upscale ----------------------------------------------------------------------------


def test_upscale_sends_the_whole_canvas_and_the_target():
    controller, client, canvas, _ = make(5, MemoryCanvas(64, 32))
    choice = UpscaleChoice(factor=2.0, upscaler="4x-tiny", strength_percent=0)
    assert controller.upscale(GenerateInput("", seed=7), choice)
    request = client.requests[-1]
    body = request.body()
    assert body["task"] == "upscale" and body["seed"] == 7 and body["batch_size"] == 1
    assert body["upscale"] == {"width": 128, "height": 64, "upscaler": "4x-tiny", "strength": 0.0}
    assert decoded(request.image or b"").size().width() == 64
    assert canvas.width == 64  # nothing changes before the result is applied


@pytest.mark.parametrize("destination", list(Destination))
def test_an_upscaled_result_goes_where_the_artist_chose(destination):
    controller, client, canvas, _ = make(5, MemoryCanvas(64, 32))
    controller.upscale(GenerateInput("x"), UpscaleChoice(factor=2.0, destination=destination))
    client.files["/r"] = png(128, 64)
    finish(client, "j1", ["/r"])
    item = controller.history.items[0]
    assert item.region == Rect(0, 0, 128, 64) and item.layer_name == "Upscaled 128x64: x"
    assert controller.apply_items([item.item_id])
    if destination is Destination.NEW_DOCUMENT:
        assert [d.rect for d in canvas.documents] == [Rect(0, 0, 128, 64)]
        assert (canvas.width, canvas.height) == (64, 32) and canvas.layers == []
    else:
        assert canvas.scales == [(128, 64)] and canvas.documents == []
        assert [layer.image.rect for layer in canvas.layers] == [Rect(0, 0, 128, 64)]
    assert item.applied
    controller.apply_items([item.item_id])  # again: the canvas is already that size
    assert len(canvas.scales) <= 1


# -- expand -----------------------------------------------------------------------------


def test_expand_grows_the_canvas_once_the_job_is_accepted_and_sends_the_new_strip():
    canvas = MemoryCanvas(64, 48, rgba=(10, 20, 30, 255))
    controller, client, canvas, _ = make(5, canvas, context_margin=8, mask_feather=4)
    accepted_at_size: list[tuple[int, int]] = []
    client.on_submit = lambda _job: accepted_at_size.append((canvas.width, canvas.height))
    assert controller.expand(GenerateInput("sea", strength_percent=80), Sides(right=32))
    assert accepted_at_size == [(64, 48)]  # the picture was read before it grew
    assert (canvas.width, canvas.height) == (96, 48) and canvas.resizes == [(0, 0, 96, 48)]
    request = client.requests[-1]
    body = request.body()
    assert body["task"] == "inpaint" and body["fill"] == "edge" and body["strength"] == 0.8
    assert (body["mask_grow"], body["mask_feather"]) == (0, 0)
    region = controller.jobs["j1"].context.region
    assert region == Rect(32, 0, 64, 48)  # the strip and as much picture as context
    image, mask = decoded(request.image or b""), decoded(request.mask or b"")
    assert (image.width(), image.height()) == (64, 48)
    assert image.pixelColor(0, 0).alpha() == 255 and image.pixelColor(40, 0).alpha() == 0
    assert mask.pixelColor(0, 0).red() == 0 and mask.pixelColor(31, 0).red() > 0
    assert mask.pixelColor(32, 0).red() == 255 and mask.pixelColor(63, 47).red() == 255

    client.files["/r"] = png(64, 48)
    finish(client, "j1", ["/r"])
    item = controller.history.items[0]
    controller.apply_items([item.item_id])
    assert [layer.image.rect for layer in canvas.layers] == [Rect(32, 0, 64, 48)]


def test_expand_left_moves_the_picture_and_places_the_result_at_the_left():
    canvas = MemoryCanvas(32, 32, rgba=(10, 20, 30, 255))
    controller, _client, canvas, _ = make(5, canvas, context_margin=0)
    controller.expand(GenerateInput("sea"), Sides(left=16))
    assert canvas.resizes == [(16, 0, 48, 32)]
    assert controller.jobs["j1"].context.region == Rect(0, 0, 32, 32)
    assert canvas.read_pixels(Rect(16, 0, 1, 1)) == bytes((10, 20, 30, 255))
    assert canvas.read_pixels(Rect(0, 0, 1, 1)) == bytes(4)


def test_expand_refused_when_the_server_refuses_leaves_the_canvas_alone():
    controller, client, canvas, messages = make(5)

    def refuse(prepare, on_ok, on_error):
        prepare()
        on_error("The server refused it.")

    client.submit = refuse  # type: ignore[method-assign]
    assert controller.expand(GenerateInput("sea"), Sides(top=8))
    assert (canvas.width, canvas.height) == (64, 64) and canvas.resizes == []
    assert messages[-1] == "The server refused it."


def test_expand_cancels_its_job_when_the_document_changed_meanwhile():
    controller, client, canvas, messages = make(5)
    client.on_submit = lambda _job: setattr(canvas, "doc", "another")
    controller.expand(GenerateInput("sea"), Sides(top=8))
    assert canvas.resizes == [] and client.cancelled == ["j1"]
    assert "changed" in messages[-1]


def test_a_selection_past_the_edge_is_clamped_and_the_artist_pointed_to_expand():
    controller, _client, canvas, _ = make(5)
    notices: list[str] = []
    controller.notice.connect(notices.append)
    canvas.select(Rect(40, 8, 24, 16))
    canvas.selection = Rect(40, 8, 60, 16)  # Krita keeps the part past the edge
    assert controller.generate(GenerateInput("a"))
    assert controller.jobs["j1"].context.region.right == 64
    assert notices == [PAST_THE_EDGE]
    canvas.selection = Rect(40, 8, 24, 16)
    controller.generate(GenerateInput("a"))
    assert notices == [PAST_THE_EDGE]  # said once: this selection is on the canvas
