"""Everything that touches Krita: the canvas adapter on the active document, the
extension with its actions, and the docker shell. The only module importing `krita`.

Pixel formats: an RGBA/U8 document's pixel data is BGRA, straight alpha; RGBA/U16
is the same order with two little-endian bytes a channel (the high byte is kept).
Float and non-RGB documents are refused with a message, since converting them
faithfully needs their colour profile, which Krita's Python API does not apply.
Results become 8-bit RGBA layers (a layer may have its own colour space), so they fit
any document.
"""

from __future__ import annotations

import contextlib

from krita import DockWidget, DockWidgetFactory, DockWidgetFactoryBase, Extension, Krita
from PyQt5.QtCore import QByteArray

from .canvas import CanvasError, LayerImage
from .docker import DiffusersPanel
from .extension import ACTIONS, DOCKER_ID, MENU, trigger
from .geometry import Rect
from .images import swap_red_blue

PREVIEW_PREFIX = "[Diffusers preview] "
LAYER_PROFILE = "sRGB-elle-V2-srgbtrac.icc"


def _active_document():
    return Krita.instance().activeDocument()


class KritaCanvas:
    """`CanvasAdapter` on Krita's active document."""

    def __init__(self) -> None:
        self._preview = None  # (document id, Node)

    def _document(self):
        document = _active_document()
        if document is None:
            raise CanvasError("Open or create a document first.")
        return document

    def canvas_size(self) -> tuple[int, int] | None:
        document = _active_document()
        return None if document is None else (document.width(), document.height())

    def document_id(self) -> str:
        document = _active_document()
        if document is None:
            return ""
        try:
            return document.rootNode().uniqueId().toString()
        except AttributeError:  # an older Krita without Node.uniqueId
            return document.fileName() or document.name()

    def selection_bounds(self) -> Rect | None:
        document = _active_document()
        selection = None if document is None else document.selection()
        if selection is None or selection.width() <= 0 or selection.height() <= 0:
            return None
        return Rect(selection.x(), selection.y(), selection.width(), selection.height())

    def read_pixels(self, rect: Rect) -> bytes:
        document = self._document()
        model, depth = document.colorModel(), document.colorDepth()
        if model != "RGBA" or depth not in ("U8", "U16"):
            raise CanvasError(
                f"This document is {model}/{depth}; Krita Diffusers reads RGB/Alpha 8-bit or "
                "16-bit integer documents. Convert it with Image > Convert Image Color "
                "Space, or work on a converted copy."
            )
        document.waitForDone()
        data = bytes(document.pixelData(rect.x, rect.y, rect.width, rect.height))
        if depth == "U16":
            data = data[1::2]  # high byte of each little-endian 16-bit channel
        if len(data) != rect.width * rect.height * 4:
            raise CanvasError("Krita returned an unexpected amount of pixel data; try again.")
        return swap_red_blue(data)

    def read_mask(self, rect: Rect) -> bytes:
        document = self._document()
        selection = document.selection()
        if selection is None:
            return b"\xff" * (rect.width * rect.height)
        data = bytes(selection.pixelData(rect.x, rect.y, rect.width, rect.height))
        if len(data) != rect.width * rect.height:
            raise CanvasError("Krita returned an unexpected selection size; try again.")
        return data

    def _paint_layer(self, document, image: LayerImage):
        node = document.createNode(image.name, "paintlayer")
        if document.colorModel() != "RGBA" or document.colorDepth() != "U8":
            node.setColorSpace("RGBA", "U8", LAYER_PROFILE)
        rect = image.rect
        data = swap_red_blue(image.rgba)
        if len(data) != rect.width * rect.height * 4:  # setPixelData fails silently otherwise
            raise CanvasError("A result does not match its region's size; it was not inserted.")
        node.setPixelData(QByteArray(data), rect.x, rect.y, rect.width, rect.height)
        return node

    def _insertion_point(self, document):
        """Above the active layer, in its group; on top when nothing usable is active."""
        root = document.rootNode()
        active = document.activeNode()
        if active is not None and active.type().endswith("mask"):
            active = active.parentNode()
        if (
            active is None
            or active.parentNode() is None
            or active.name().startswith(PREVIEW_PREFIX)
        ):
            return root, None
        return active.parentNode(), active

    def insert_layers(self, images: list[LayerImage], group_name: str | None) -> None:
        document = self._document()
        parent, above = self._insertion_point(document)
        if group_name:
            group = document.createGroupLayer(group_name)
            parent.addChildNode(group, above)
            for image in images:
                group.addChildNode(self._paint_layer(document, image), None)
        else:
            for image in images:
                parent.addChildNode(self._paint_layer(document, image), above)
        document.refreshProjection()

    def show_preview(self, image: LayerImage) -> None:
        """Replace the preview layer.

        Krita's `refreshProjection` runs queued events while it waits, so a second
        result can call this again before the first call returns. Every step therefore
        works from the document itself (all preview-named layers go), never from a
        remembered node alone, and exactly one preview layer is left whatever the
        interleaving.
        """
        document = self._document()
        self._remove_previews(document)
        preview = LayerImage(PREVIEW_PREFIX + image.name, image.rect, image.rgba)
        node = self._paint_layer(document, preview)
        document.rootNode().addChildNode(node, None)
        self._preview = node
        document.refreshProjection()

    def clear_preview(self) -> None:
        document = _active_document()
        self._remove_previews(document)
        if document is not None:
            document.refreshProjection()

    def _remove_previews(self, document) -> None:
        """Remove the remembered preview and any preview-named top-level layer."""
        node, self._preview = self._preview, None
        if node is not None:
            with contextlib.suppress(RuntimeError):  # its document was closed meanwhile
                node.remove()
        if document is None:
            return
        for child in document.rootNode().childNodes():
            if child.name().startswith(PREVIEW_PREFIX):
                child.remove()


class KritaSettingsStore:
    """`SettingsStore` in Krita's own settings file (kritarc), the way Krita's Python
    plugins keep theirs: keys "group/name" become group [krita_diffusers], key name."""

    _MISSING = "\x00missing"

    def value(self, key: str) -> str | None:
        group, _, name = key.rpartition("/")
        raw = Krita.instance().readSetting(group, name, self._MISSING)
        return None if raw == self._MISSING else str(raw)

    def set_value(self, key: str, value: str) -> None:
        group, _, name = key.rpartition("/")
        Krita.instance().writeSetting(group, name, value)


class DiffusersDocker(DockWidget):
    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle("Krita Diffusers")
        self.panel = DiffusersPanel(KritaCanvas(), KritaSettingsStore())
        self.setWidget(self.panel)

    def canvasChanged(self, canvas) -> None:
        """The panel reads the active document on demand; nothing to follow here."""


class DiffusersExtension(Extension):
    def setup(self) -> None:
        pass

    def createActions(self, window) -> None:
        for spec in ACTIONS:
            action = window.createAction(spec.action_id, spec.text, MENU)
            action.triggered.connect(
                lambda _checked=False, s=spec, w=window: trigger(w.qwindow(), s)
            )


def register() -> None:
    app = Krita.instance()
    app.addExtension(DiffusersExtension(app))
    app.addDockWidgetFactory(
        DockWidgetFactory(DOCKER_ID, DockWidgetFactoryBase.DockRight, DiffusersDocker)
    )
