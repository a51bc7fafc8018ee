"""Small helpers for building the plugin's widgets.

Every control has an objectName (kd-...), so tests and scripts can find it. PyQt
takes `objectName=` (any Qt property) as a constructor keyword, but its type stubs
do not know that, so names are set here, where the type checker can follow them.
"""

from __future__ import annotations

from typing import TypeVar

from .qt import QObject, QToolButton

Named = TypeVar("Named", bound=QObject)


def named(widget: Named, name: str) -> Named:
    """`widget`, with its objectName set to `name`."""
    widget.setObjectName(name)
    return widget


def tool_button(name: str, text: str) -> QToolButton:
    """A small button showing `text` (a symbol or a word) instead of an icon."""
    button = named(QToolButton(), name)
    button.setText(text)
    return button
