"""Reaching the Krita Diffusers docker the way a person does: through its widgets.

Widgets are found by objectName (kd-prompt, kd-generate, ...) and used through their
public Qt API (setPlainText, click, setValue), so a scenario exercises exactly what a
mouse and keyboard would. Nothing here imports the plugin's own modules.
"""

from __future__ import annotations

from typing import Any, TypeVar

from krita import Krita  # type: ignore[import-not-found]
from PyQt5.QtCore import Qt
from PyQt5.QtWidgets import (
    QAbstractButton,
    QApplication,
    QDialog,
    QDockWidget,
    QLabel,
    QLineEdit,
    QListWidget,
    QPlainTextEdit,
    QProgressBar,
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
