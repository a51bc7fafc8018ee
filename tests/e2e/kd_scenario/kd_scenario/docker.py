"""Reaching the Krita Diffusers docker the way a person does: through its widgets.

Widgets are found by objectName (kd-prompt, kd-generate, ...) and used through their
public Qt API (setPlainText, click, setValue), so a scenario exercises exactly what a
mouse and keyboard would. Nothing here imports the plugin's own modules.
"""

from __future__ import annotations

from typing import Any, TypeVar

from krita import Krita  # type: ignore[import-not-found]
from PyQt5.QtCore import QPoint, QRect, Qt
from PyQt5.QtWidgets import (
    QAbstractButton,
    QAbstractSlider,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QDialog,
    QDockWidget,
    QLabel,
    QLineEdit,
    QListWidget,
    QPlainTextEdit,
    QProgressBar,
    QScrollArea,
    QSpinBox,
    QWidget,
)

DOCKER_ID = "krita_diffusers_docker"
PREVIEW_LAYER_PREFIX = "[Diffusers preview] "
W = TypeVar("W", bound=QWidget)


class DockerMissing(Exception):
    """The docker or one of its widgets is not where the plugin promises it."""


def find_dock() -> QDockWidget | None:
    window = Krita.instance().activeWindow()
    if window is None:
        return None
    return window.qwindow().findChild(QDockWidget, DOCKER_ID)


def dock() -> QDockWidget:
    found = find_dock()
    if found is None:
        raise DockerMissing(f"no QDockWidget named {DOCKER_ID!r} in Krita's window")
    return found


def show_dock() -> QDockWidget:
    """Makes the docker visible and on top of its tab group, as an artist would."""
    found = dock()
    found.show()
    found.raise_()
    return found


def kd_names() -> list[str]:
    """Every kd-* objectName inside the docker (logged when a widget is missing)."""
    names = {w.objectName() for w in dock().findChildren(QWidget)}
    return sorted(name for name in names if name.startswith("kd-"))


def widget(name: str, kind: type[W] = QWidget) -> W:  # type: ignore[assignment]
    found = dock().findChild(kind, name)
    if found is None:
        raise DockerMissing(f"no {kind.__name__} {name!r} in the docker; it has {kd_names()}")
    return found


def set_prompt(text: str) -> None:
    editor = widget("kd-prompt")
    if isinstance(editor, QPlainTextEdit):
        editor.setPlainText(text)
    elif isinstance(editor, QLineEdit):
        editor.setText(text)
    else:
        raise DockerMissing(f"kd-prompt is a {type(editor).__name__}, not a text field")


def set_number(name: str, value: int) -> None:
    box = widget(name)
    if not hasattr(box, "setValue"):
        raise DockerMissing(f"{name} is a {type(box).__name__}, which takes no number")
    box.setValue(value)
    if box.value() != value:
        raise ValueError(f"{name} refused {value} (it shows {box.value()})")


def click(name: str) -> None:
    """Clicks a button; a disabled button is an error, as it would be for a person."""
    button = widget(name, QAbstractButton)
    if not button.isEnabled():
        raise RuntimeError(f"{name} ({button.text()!r}) is disabled")
    button.click()


def busy() -> bool:
    """The docker is working on a job exactly while its Cancel button is enabled."""
    return widget("kd-cancel", QAbstractButton).isEnabled()


def connection() -> dict[str, Any]:
    label = widget("kd-connection", QLabel)
    return {"state": label.property("state"), "text": label.text()}


def error_text() -> str:
    label = dock().findChild(QLabel, "kd-error")
    return label.text() if label is not None and label.isVisibleTo(dock()) else ""


def shown(name: str) -> bool:
    """The widget exists and the docker shows it (it may need scrolling to)."""
    found = dock().findChild(QWidget, name)
    return found is not None and found.isVisibleTo(dock())


def label_text(name: str) -> str:
    label = dock().findChild(QLabel, name)
    return label.text() if label is not None and label.isVisibleTo(dock()) else ""


CONTROLS = (
    QAbstractButton,
    QAbstractSlider,
    QAbstractSpinBox,
    QComboBox,
    QLineEdit,
    QPlainTextEdit,
    QListWidget,
    QProgressBar,
    QLabel,
)


def _global_rect(widget: QWidget) -> QRect:
    return QRect(widget.mapToGlobal(widget.rect().topLeft()), widget.size())


def _visible_area(widget: QWidget) -> tuple[QRect, str]:
    """The part of the screen where `widget` can be seen: its rect cut by every
    ancestor's rect (a scroll area's viewport, the docker, the window) and the screen;
    and the first ancestor that cut it (for the log)."""
    area = _global_rect(widget)
    clipped_by = ""
    parent = widget.parentWidget()
    while parent is not None:
        cut = area.intersected(_global_rect(parent))
        if cut != area and not clipped_by:
            clipped_by = f"{parent.metaObject().className()} {parent.objectName()}".strip()
        area = cut
        parent = parent.parentWidget()
    screen = area.intersected(QApplication.primaryScreen().geometry())
    if screen != area and not clipped_by:
        clipped_by = "screen"
    return screen, clipped_by


def scroll_to(scroll: QScrollArea, control: QWidget) -> None:
    """Scrolls just enough to show the whole control (its top when it is taller than
    the viewport), as a person would. (QScrollArea.ensureWidgetVisible only shows the
    text cursor of an input field, not the field.)"""
    bar = scroll.verticalScrollBar()
    top = control.mapTo(scroll.widget(), QPoint(0, 0)).y()
    room = scroll.viewport().height()
    if top < bar.value() or control.height() > room:
        bar.setValue(top)
    elif top + control.height() > bar.value() + room:
        bar.setValue(top + control.height() - room)


def reachability() -> list[dict[str, Any]]:
    """Every kd-* control the docker shows, brought into view the way a person would
    (scrolling the docker's scroll area, if it has one), and how much of it could then
    be seen. A control is reachable when it is seen whole or, when it is taller than
    all the room the docker has (a list, the preview picture), when that room shows it."""
    found: list[dict[str, Any]] = []
    panel = dock()
    for control in panel.findChildren(QWidget):
        name = control.objectName()
        if not name.startswith("kd-") or not isinstance(control, CONTROLS):
            continue
        if not control.isVisibleTo(panel):
            continue
        scroll = control.parentWidget()
        while scroll is not None and not isinstance(scroll, QScrollArea):
            scroll = scroll.parentWidget()
        room = _visible_area(panel)[0].height()
        if scroll is not None and scroll.widget() is not None:
            scroll_to(scroll, control)
            room = _visible_area(scroll.viewport())[0].height()
        QApplication.processEvents()
        seen, clipped_by = _visible_area(control)
        whole = seen.size() == control.size()
        fills_room = control.height() > room and seen.height() >= room - 1 and seen.width() > 0
        found.append(
            {
                "name": name,
                "kind": type(control).__name__,
                "size": [control.width(), control.height()],
                "seen": [seen.width(), seen.height()],
                "room": room,
                "clipped_by": clipped_by,
                "reachable": whole or fills_room,
            }
        )
    return found


def wrapped_fully(name: str) -> dict[str, Any]:
    """Whether a label shows all its lines: word-wrapped and tall enough for them."""
    label = dock().findChild(QLabel, name)
    if label is None:
        return {"exists": False}
    needed = label.heightForWidth(label.width()) if label.wordWrap() else label.sizeHint().height()
    return {
        "exists": True,
        "word_wrap": label.wordWrap(),
        "height": label.height(),
        "needed": needed,
        "text": label.text(),
    }


def progress() -> dict[str, Any]:
    bar = widget("kd-progress", QProgressBar)
    return {"value": bar.value(), "maximum": bar.maximum(), "text": bar.text()}


def preview_shown() -> bool:
    label = widget("kd-preview", QLabel)
    pixmap = label.pixmap()
    return pixmap is not None and not pixmap.isNull()


def preview_key() -> int | None:
    """Identifies the preview image shown now, to tell a fresh preview from an old one."""
    pixmap = widget("kd-preview", QLabel).pixmap()
    return None if pixmap is None or pixmap.isNull() else int(pixmap.cacheKey())


def history() -> QListWidget:
    return widget("kd-history", QListWidget)


def select_history_rows(rows: list[int]) -> None:
    """Selects these rows of the history and nothing else (a click, then ctrl+clicks)."""
    listing = history()
    if not rows:
        listing.clearSelection()
        return
    for row in rows:
        if listing.item(row) is None:
            raise IndexError(f"history has {listing.count()} rows, no row {row}")
    listing.setCurrentItem(listing.item(rows[-1]))  # clears the rest, like a plain click
    for row in rows:
        listing.item(row).setSelected(True)


def history_ids() -> list[Any]:
    """The id the plugin keeps on each history row (Qt.UserRole), in row order.

    New results may be listed first or last; ids, not positions, say which are new.
    """
    listing = history()
    return [listing.item(row).data(Qt.UserRole) for row in range(listing.count())]


def rows_of(ids: list[Any]) -> list[int]:
    return [row for row, item_id in enumerate(history_ids()) if item_id in ids]


def history_texts(rows: list[int]) -> list[str]:
    listing = history()
    return [listing.item(row).text() for row in rows]


def state() -> dict[str, Any]:
    """Everything the artist can read on the docker at this moment, for the log."""
    return {
        "connection": connection(),
        "busy": busy(),
        "progress": progress(),
        "error": error_text(),
        "generate_label": widget("kd-generate", QAbstractButton).text(),
        "generate_enabled": widget("kd-generate", QAbstractButton).isEnabled(),
        "preview_shown": preview_shown(),
        "history_count": history().count(),
    }


def settings_dialog() -> QDialog | None:
    for top in QApplication.topLevelWidgets():
        if top.objectName() == "kd-settings-dialog" and top.isVisible():
            return top  # type: ignore[return-value]
    return None


def dialog_spin(dialog: QDialog, name: str) -> QSpinBox:
    box = dialog.findChild(QSpinBox, name)
    if box is None:
        raise DockerMissing(f"the settings dialog has no spin box {name!r}")
    return box


def choose(name: str, text: str) -> None:
    """Picks the entry showing `text` in a combo box, as a person would in its list."""
    combo = widget(name, QComboBox)
    index = combo.findText(text)
    if index < 0:
        entries = [combo.itemText(i) for i in range(combo.count())]
        raise DockerMissing(f"{name} has no entry {text!r}; it offers {entries}")
    combo.setCurrentIndex(index)


def combo_text(name: str) -> str:
    return widget(name, QComboBox).currentText()


def combo_items(name: str) -> list[str]:
    combo = widget(name, QComboBox)
    return [combo.itemText(i) for i in range(combo.count())]
