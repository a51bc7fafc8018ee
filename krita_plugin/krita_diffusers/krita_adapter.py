"""Everything that touches Krita: the canvas adapter on the active document, the
settings store, opening an image, the extension with its actions, the docker shell,
and the one `PluginCore` all dockers of this Krita share. The only module importing
`krita`.

Pixel formats: an RGBA/U8 document's pixel data is BGRA, straight alpha; RGBA/U16
is the same order with two little-endian bytes a channel (the high byte is kept).
The adapter hands BGRA over as it is (`pixel_order`): Qt reads that order natively.
Float and non-RGB documents are refused with a message, since converting them
faithfully needs their colour profile, which Krita's Python API does not apply.
Results become 8-bit RGBA layers (a layer may have its own colour space), so they fit
any document.

Nothing temporary is ever added to a document: Krita 5.1's `addChildNode`,
`remove` and `removeChildNode` each record an undo step and mark the document
modified, and `setChildNodes` (the only call that does not) also takes the parent's
bottom layer out and puts it back on top. So only layers the artist applies go in.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from krita import DockWidget, DockWidgetFactory, DockWidgetFactoryBase, Extension, Krita

from .canvas import BGRA, CanvasError, LayerImage, LayerInfo
from .core import PluginCore
from .docker import DiffusersPanel
from .extension import ACTIONS, DOCKER_ID, MENU, trigger
from .geometry import Rect
from .qt import QByteArray, QTimer, sip

LAYER_PROFILE = "sRGB-elle-V2-srgbtrac.icc"

#: Krita's own objects (Document, Node, Window): Krita ships no type information for
#: its Python module, so they are Any to the type checker.
KritaObject = Any


def _active_document() -> KritaObject:
    return Krita.instance().activeDocument()


class KritaCanvas:
    """`CanvasAdapter` on Krita's active document."""

    pixel_order = BGRA

    def _document(self) -> KritaObject:
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

    def read_note(self, kind: str) -> bytes | None:
        """`DocumentNotes` on Krita's annotations (Document.annotation, in Krita 5.1.5
        and saved in the .kra: measured with kritarunner, see recipes.py)."""
        document = _active_document()
        if document is None or kind not in document.annotationTypes():
            return None
        return bytes(document.annotation(kind))

    def write_note(self, kind: str, description: str, data: bytes) -> None:
        """Krita 5.1.5 marks the document modified on `setAnnotation` (measured): a
        document that was unmodified is set back, so a result alone never asks the
        artist to save (tests/e2e `undo` scenario); the note is saved with the next
        save all the same (measured with kritarunner)."""
        document = _active_document()
        if document is None:
            return
        modified = document.modified()
        document.setAnnotation(kind, description, QByteArray(data))
        if not modified:
            document.setModified(False)

    def selection_bounds(self) -> Rect | None:
        """Each of Selection's x/y/width/height scans the selection for its exact
        bounds (the docker polls this), so each is asked once."""
        document = _active_document()
        selection = None if document is None else document.selection()
        if selection is None:
            return None
        bounds = Rect(selection.x(), selection.y(), selection.width(), selection.height())
        return None if bounds.is_empty else bounds

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
        return data

    def read_mask(self, rect: Rect) -> bytes:
        document = self._document()
        selection = document.selection()
        if selection is None:
            return b"\xff" * (rect.width * rect.height)
        data = bytes(selection.pixelData(rect.x, rect.y, rect.width, rect.height))
        if len(data) != rect.width * rect.height:
            raise CanvasError("Krita returned an unexpected selection size; try again.")
        return data

    def _paint_layer(self, document: KritaObject, image: LayerImage) -> KritaObject:
        node = document.createNode(image.name, "paintlayer")
        if document.colorModel() != "RGBA" or document.colorDepth() != "U8":
            node.setColorSpace("RGBA", "U8", LAYER_PROFILE)
        rect = image.rect
        if len(image.data) != rect.width * rect.height * 4:  # setPixelData fails silently
            raise CanvasError("A result does not match its region's size; it was not inserted.")
        node.setPixelData(QByteArray(image.data), rect.x, rect.y, rect.width, rect.height)
        return node

    def _insertion_point(self, document: KritaObject) -> tuple[KritaObject, KritaObject]:
        """Above the active layer, in its group; on top when nothing usable is active."""
        root = document.rootNode()
        active = document.activeNode()
        if active is not None and active.type().endswith("mask"):
            active = active.parentNode()
        if active is None or active.parentNode() is None:
            return root, None
        return active.parentNode(), active

    def insert_layers(self, images: list[LayerImage], group_name: str | None) -> list[str]:
        document = self._document()
        parent, above = self._insertion_point(document)
        nodes = [self._paint_layer(document, image) for image in images]
        if group_name:
            group = document.createGroupLayer(group_name)
            parent.addChildNode(group, above)
            for node in nodes:
                group.addChildNode(node, None)
        else:
            for node in nodes:
                parent.addChildNode(node, above)
        document.refreshProjection()
        return [_node_id(node) for node in nodes]

    def resize_canvas(self, left: int, top: int, width: int, height: int) -> None:
        """Krita's Image > Resize Canvas: `resizeImage` takes the new canvas's top-left
        in the old one's coordinates, so growing on the left or top is negative."""
        document = self._document()
        document.resizeImage(-left, -top, width, height)
        document.waitForDone()
        document.refreshProjection()

    def scale_canvas(self, width: int, height: int) -> None:
        document = self._document()
        document.scaleImage(width, height, int(document.xRes()), int(document.yRes()), "Bicubic")
        document.waitForDone()
        document.refreshProjection()

    def open_document(self, image: LayerImage) -> None:
        app = Krita.instance()
        current = _active_document()
        resolution = float(current.resolution()) if current is not None else 72.0
        rect = image.rect
        document = app.createDocument(
            rect.width, rect.height, image.name, "RGBA", "U8", "", resolution
        )
        document.rootNode().addChildNode(self._paint_layer(document, image), None)
        document.refreshProjection()
        window = app.activeWindow()
        if window is not None:
            window.addView(document)

    def list_layers(self) -> list[LayerInfo]:
        document = _active_document()
        if document is None:
            return []
        return [LayerInfo(_node_id(node), node.name()) for node in _control_nodes(document)]

    def read_layer_pixels(self, layer_id: str, rect: Rect) -> bytes:
        """A paint layer's own pixels (`pixelData`), a group's merged content
        (`projectionPixelData`); visible or hidden. Read only."""
        document = self._document()
        node = next((n for n in _control_nodes(document) if _node_id(n) == layer_id), None)
        if node is None:
            raise CanvasError("A control layer is not in this document any more; pick another.")
        model, depth = node.colorModel(), node.colorDepth()
        if model != "RGBA" or depth not in ("U8", "U16"):
            raise CanvasError(
                f"The layer “{node.name()}” is {model}/{depth}; a control layer must be "
                "RGB/Alpha 8-bit or 16-bit integer. Convert the layer (Layer > Convert > "
                "Convert Layer Color Space)."
            )
        document.waitForDone()
        read = node.projectionPixelData if node.type() == "grouplayer" else node.pixelData
        data = bytes(read(rect.x, rect.y, rect.width, rect.height))
        if depth == "U16":
            data = data[1::2]  # high byte of each little-endian 16-bit channel
        if len(data) != rect.width * rect.height * 4:
            raise CanvasError("Krita returned an unexpected amount of layer data; try again.")
        return data


CONTROL_NODE_TYPES = ("paintlayer", "grouplayer")


def _node_id(node: KritaObject) -> str:
    return str(node.uniqueId().toString())


def _control_nodes(document: KritaObject) -> list[KritaObject]:
    """Paint layers and groups, top of the stack first, inside groups too."""
    found: list[KritaObject] = []

    def walk(parent: KritaObject) -> None:
        for node in reversed(parent.childNodes()):  # childNodes is bottom first
            if node.type() in CONTROL_NODE_TYPES:
                found.append(node)
            if node.type() == "grouplayer":
                walk(node)

    walk(document.rootNode())
    return found


def open_image(path: Path) -> None:
    """Open an image file as a document in the active window (the first image)."""
    app = Krita.instance()
    document = app.openDocument(str(path))
    window = app.activeWindow()
    if document is not None and window is not None:
        window.addView(document)


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


_core: PluginCore | None = None


def shared_core() -> PluginCore:
    """The one `PluginCore` of this Krita, made when the first docker asks."""
    global _core
    if _core is None:
        _core = PluginCore(KritaSettingsStore())
    return _core


#: Notifier signals that mean "the active document may be another one now", by name:
#: each is connected only where this Krita has it (Krita 5.1 has all three; a later
#: Krita that renames or drops one loses only that prompt refresh, never the plugin).
DOCUMENT_SIGNALS = ("imageClosed", "viewClosed", "viewCreated")


def optional_signals(source: KritaObject, names: tuple[str, ...]) -> list[KritaObject]:
    """The bound signals among `names` that `source` has: Krita's API grows and
    changes between versions (5.1, 5.2, 6), so optional parts are found by name,
    never by comparing version strings."""
    found = [getattr(source, name, None) for name in names]
    return [signal for signal in found if signal is not None and hasattr(signal, "connect")]


def watch_documents(on_change: Callable[[], None]) -> int:
    """Calls `on_change` whenever Krita's notifier reports a view or document coming
    or going. The notifier is off until activated (Krita's rule); activating it is
    harmless for other plugins. Returns how many signals were connected (0 on a
    Krita without a notifier: the panel's polling still notices changes)."""
    notifier_of = getattr(Krita.instance(), "notifier", None)
    notifier = notifier_of() if notifier_of is not None else None
    if notifier is None:
        return 0
    if hasattr(notifier, "setActive"):
        notifier.setActive(True)
    signals = optional_signals(notifier, DOCUMENT_SIGNALS)
    for signal in signals:
        signal.connect(lambda *_args: on_change())
    return len(signals)


class DiffusersDocker(DockWidget):
    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle("Krita Diffusers")
        self.panel = DiffusersPanel(KritaCanvas(), shared_core(), open_image)
        self.setWidget(self.panel)
        watch_documents(self._document_changed)

    def _document_changed(self) -> None:
        """Deferred to the event loop: Krita emits these while it is still switching
        views, before `activeDocument()` names the new one. The notifier outlives a
        closed window's docker, hence the checks for a deleted panel."""
        if not sip.isdeleted(self):
            QTimer.singleShot(0, self._refresh_panel)

    def _refresh_panel(self) -> None:
        if not sip.isdeleted(self) and not sip.isdeleted(self.panel):
            self.panel.document_changed()

    def canvasChanged(self, canvas: KritaObject) -> None:
        """Krita calls this on every docker when the active canvas changes (another
        document or view): the panel refreshes at once instead of at its next poll."""
        self._document_changed()


class DiffusersExtension(Extension):
    def setup(self) -> None:
        pass

    def createActions(self, window: KritaObject) -> None:
        for spec in ACTIONS:
            action = window.createAction(spec.action_id, spec.text, MENU)
            action.triggered.connect(
                lambda _checked=False, s=spec, w=window: trigger(w.qwindow(), s)
            )


def _dock_right() -> KritaObject:
    """Krita 6's module (PyQt6 style) has only the scoped `DockPosition.DockRight`;
    Krita 5's has both spellings."""
    positions = getattr(DockWidgetFactoryBase, "DockPosition", DockWidgetFactoryBase)
    return positions.DockRight


def register() -> None:
    app = Krita.instance()
    app.addExtension(DiffusersExtension(app))
    app.addDockWidgetFactory(DockWidgetFactory(DOCKER_ID, _dock_right(), DiffusersDocker))
