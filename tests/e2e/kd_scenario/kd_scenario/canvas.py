"""Krita documents for the scenarios: making them, painting and selecting, and reading
back every layer so the log can prove what changed and what did not.

Pixels leave Krita as PNG files (the pytest side analyses them with numpy) and as
SHA-256 digests (to prove byte-identity cheaply). RGBA/U8 pixel data in Krita is BGRA,
which is exactly QImage's ARGB32 on a little-endian machine, so no byte shuffling.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

from krita import Document, Krita, Node, Selection  # type: ignore[import-not-found]
from PyQt5.QtGui import QImage

INTERNAL_TYPES = {"selectionmask"}  # Krita's own helper nodes, not the artist's layers


def new_document(width: int, height: int, name: str) -> Document:
    """An RGBA/U8 document shown in a view, in batch mode so exports never open dialogs."""
    app = Krita.instance()
    doc = app.createDocument(width, height, name, "RGBA", "U8", "", 72.0)
    doc.setBatchmode(True)
    app.activeWindow().addView(doc)
    return doc


def is_active(doc: Document) -> bool:
    """True once the document's view has become the active one (views open asynchronously)."""
    active = Krita.instance().activeDocument()
    return active is not None and active.rootNode().uniqueId() == doc.rootNode().uniqueId()


def _block_row(width: int, band: int, palette: list[tuple[int, int, int]]) -> bytes:
    """One row of BGRA pixels in vertical colour bands."""
    row = bytearray()
    for x in range(width):
        r, g, b = palette[(x // 32 + band) % len(palette)]
        row += bytes((b, g, r, 255))
    return bytes(row)


PALETTE = [(200, 40, 40), (40, 160, 60), (40, 70, 200), (230, 200, 40), (150, 50, 170)]


def paint_pattern(doc: Document, name: str = "painted") -> Node:
    """Adds an opaque layer of coloured checks, distinct everywhere, above the background.

    A pattern (not a flat colour) makes any change to the artist's pixels show up in the
    layer's digest and makes the inpainted region's context meaningful.
    """
    width, height = doc.width(), doc.height()
    rows = [_block_row(width, band, PALETTE) for band in range(len(PALETTE))]
    data = b"".join(rows[(y // 32) % len(PALETTE)] for y in range(height))
    layer = doc.createNode(name, "paintlayer")
    doc.rootNode().addChildNode(layer, None)
    expected = width * height * 4
    if len(data) != expected:
        raise ValueError(f"pattern has {len(data)} bytes, the layer needs {expected}")
    layer.setPixelData(data, 0, 0, width, height)
    doc.refreshProjection()
    return layer


def select_rect(doc: Document, x: int, y: int, w: int, h: int) -> None:
    """A hard-edged rectangular selection, as the rectangle tool makes."""
    selection = Selection()
    selection.select(x, y, w, h, 255)
    doc.setSelection(selection)


def select_soft(doc: Document, cx: int, cy: int, inner: int, outer: int) -> None:
    """A round selection fully selected inside `inner`, fading to nothing at `outer`.

    Written byte by byte so the test knows the exact grey levels the plugin must keep.
    """
    x0, y0 = max(0, cx - outer), max(0, cy - outer)
    x1, y1 = min(doc.width(), cx + outer), min(doc.height(), cy + outer)
    data = bytearray()
    for y in range(y0, y1):
        for x in range(x0, x1):
            distance = math.hypot(x + 0.5 - cx, y + 0.5 - cy)
            level = (outer - distance) / (outer - inner)
            data.append(max(0, min(255, round(level * 255))))
    selection = Selection()
    selection.setPixelData(bytes(data), x0, y0, x1 - x0, y1 - y0)
    doc.setSelection(selection)


def artist_nodes(doc: Document) -> list[Node]:
    """Every node in the layer stack, depth first, without Krita's helper masks."""
    found: list[Node] = []

    def walk(node: Node) -> None:
        for child in node.childNodes():
            if child.type() in INTERNAL_TYPES:
                continue
            found.append(child)
            walk(child)

    walk(doc.rootNode())
    return found


def node_digest(doc: Document, node: Node) -> str:
    """SHA-256 of the node's pixels over the whole canvas (offsets included)."""
    data = bytes(node.pixelData(0, 0, doc.width(), doc.height()))
    return hashlib.sha256(data).hexdigest()


def describe_node(doc: Document, node: Node) -> dict[str, Any]:
    bounds = node.bounds()
    parent = node.parentNode()
    return {
        "id": node.uniqueId().toString(),
        "name": node.name(),
        "type": node.type(),
        "parent": parent.name() if parent is not None and parent.parentNode() is not None else None,
        "visible": node.visible(),
        "opacity": node.opacity(),
        "bounds": [bounds.x(), bounds.y(), bounds.width(), bounds.height()],
        "digest": node_digest(doc, node),
    }


def snapshot(doc: Document) -> list[dict[str, Any]]:
    """The layer stack as data: what the tests compare before and after."""
    return [describe_node(doc, node) for node in artist_nodes(doc)]


def save_bgra_png(data: bytes, width: int, height: int, path: Path) -> str:
    if len(data) != width * height * 4:
        raise ValueError(f"{len(data)} bytes is not {width}x{height} BGRA")
    image = QImage(data, width, height, width * 4, QImage.Format_ARGB32).copy()
    if not image.save(str(path), "PNG"):
        raise OSError(f"could not write {path}")
    return str(path)


def export_node(doc: Document, node: Node, path: Path) -> str:
    """The node's pixels over the whole canvas as an RGBA PNG (straight alpha)."""
    data = bytes(node.pixelData(0, 0, doc.width(), doc.height()))
    return save_bgra_png(data, doc.width(), doc.height(), path)


def export_selection(doc: Document, path: Path) -> str | None:
    """The selection's grey levels over the whole canvas as an 8-bit PNG, or None."""
    selection = doc.selection()
    if selection is None:
        return None
    width, height = doc.width(), doc.height()
    data = bytes(selection.pixelData(0, 0, width, height))
    image = QImage(data, width, height, width, QImage.Format_Grayscale8).copy()
    if not image.save(str(path), "PNG"):
        raise OSError(f"could not write {path}")
    return str(path)


def projection_digest(doc: Document) -> str:
    """SHA-256 of the flattened image: what the docker sends as a job's input."""
    data = bytes(doc.pixelData(0, 0, doc.width(), doc.height()))
    return hashlib.sha256(data).hexdigest()


def export_projection(doc: Document, path: Path) -> str:
    """What the artist sees: the flattened image."""
    data = bytes(doc.pixelData(0, 0, doc.width(), doc.height()))
    return save_bgra_png(data, doc.width(), doc.height(), path)


def close_all_documents() -> None:
    """Closes every document without a "save changes?" dialog."""
    for doc in list(Krita.instance().documents()):
        doc.setModified(False)
        doc.close()


def paint_stroke(doc: Document, node: Node, rect: tuple[int, int, int, int], bgra: bytes) -> None:
    """The artist paints: a block of one colour on their layer (what a brush stroke
    leaves on the pixels live mode polls)."""
    x, y, width, height = rect
    node.setPixelData(bgra * (width * height), x, y, width, height)
    doc.refreshProjection()


def paint_gradient(doc: Document, name: str) -> Node:
    """A hidden layer holding a left-to-right grey ramp (black far, white near): a
    depth map as an artist might paint one, kept out of the picture."""
    width, height = doc.width(), doc.height()
    row = b"".join(
        bytes((v, v, v, 255)) for v in (x * 255 // max(1, width - 1) for x in range(width))
    )
    layer = doc.createNode(name, "paintlayer")
    doc.rootNode().addChildNode(layer, None)
    layer.setPixelData(row * height, 0, 0, width, height)
    layer.setVisible(False)
    doc.refreshProjection()
    return layer


def hidden_group_projection(doc: Document) -> dict[str, Any]:
    """What the plugin relies on to read a group as a control: a hidden group's
    `projectionPixelData` holds its children's pixels. Records both digests."""
    width, height = doc.width(), doc.height()
    group = doc.createGroupLayer("hidden group")
    doc.rootNode().addChildNode(group, None)
    child = paint_gradient(doc, "inside")
    child.setVisible(True)
    child.remove()
    group.addChildNode(child, None)
    group.setVisible(False)
    doc.refreshProjection()
    doc.waitForDone()
    projection = bytes(group.projectionPixelData(0, 0, width, height))
    pixels = bytes(child.pixelData(0, 0, width, height))
    return {
        "projection": hashlib.sha256(projection).hexdigest(),
        "child": hashlib.sha256(pixels).hexdigest(),
        "projection_alpha_max": max(projection[3::4]) if projection else None,
    }


def rect_digests(doc: Document, x: int, y: int, w: int, h: int) -> dict[str, str]:
    """SHA-256 of each layer's pixels in one rectangle, by layer id: proves a layer's
    pixels stayed where they were while the canvas around them changed size."""
    return {
        node.uniqueId().toString(): hashlib.sha256(bytes(node.pixelData(x, y, w, h))).hexdigest()
        for node in artist_nodes(doc)
    }
