"""The plugin's one door to Qt: PyQt5 inside Krita 5, PyQt6 inside Krita 6.

Every other plugin module imports Qt names from here, never from PyQt5 or PyQt6
(tests/plugin/test_qt_compat.py greps the package to keep it so). Krita reports its
Qt through the binding it has already loaded: Krita imports its own PyQt before any
plugin runs (its `krita` module is built against exactly one of them), so the binding
found in `sys.modules` is Krita's, and `qVersion()` of it is Krita's Qt. Importing the
other binding into the same process would load a second Qt and crash, so the rule is:

1. `KD_QT=5` or `KD_QT=6` in the environment decides (the tests' second run uses it);
2. else a binding already loaded wins (PyQt6 looked for first: a Qt 6 Krita);
3. else (scripts, tests) PyQt5 when it can be imported, else PyQt6.

What differs between the two and the plugin uses is handled here, in one place:

- Enums: PyQt6 only has the scoped spelling (`Qt.AlignmentFlag.AlignCenter`,
  `QImage.Format.Format_RGBA8888`); PyQt5 5.15 accepts it too, so plugin code always
  writes the scoped form and needs no helper. `enum_int` turns one into an int where
  a number is needed (PyQt6 enums are Python enums, not ints).
- `exec_()` is gone in PyQt6; `exec()` exists in both (PyQt5 5.15): `run_dialog`.
- `QAction`, `QShortcut` moved from QtWidgets to QtGui; both are exported from here.
- `QRegExp` is gone in Qt 6: the plugin uses `QRegularExpression` (both have it).
- High-DPI: Qt 6 always scales and dropped `AA_EnableHighDpiScaling`; pixmaps drawn
  for a widget use the widget's `devicePixelRatioF()` (`device_pixel_ratio`).
- Image bytes: `constBits()` is a `sip.voidptr` in both, sized with `setsize`;
  `sizeInBytes()` exists in both (`byteCount()` is Qt 5 only): `image_bytes`.

Type checking runs against PyQt5 (mypy sees the PyQt5 branch only).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

PYQT5 = "PyQt5"
PYQT6 = "PyQt6"


def choose_binding(
    environ: Mapping[str, str], loaded: Iterable[str], importable: Iterable[str]
) -> str:
    """Which binding to use, by the rule in the module docstring. `loaded` names the
    modules already imported, `importable` the bindings that could be. Pure, so each
    case is tested without loading either binding."""
    forced = environ.get("KD_QT", "").strip()
    if forced in ("5", "6"):
        return PYQT5 if forced == "5" else PYQT6
    loaded = set(loaded)
    for binding in (PYQT6, PYQT5):
        if f"{binding}.QtCore" in loaded:
            return binding
    importable = list(importable)
    for binding in (PYQT5, PYQT6):
        if binding in importable:
            return binding
    raise ImportError("Krita Diffusers needs PyQt5 (Krita 5) or PyQt6 (Krita 6).")


def _importable() -> list[str]:
    import importlib.util

    return [name for name in (PYQT5, PYQT6) if importlib.util.find_spec(name) is not None]


BINDING = choose_binding(os.environ, sys.modules, _importable())

if TYPE_CHECKING or BINDING == PYQT5:
    from PyQt5 import QtCore, QtGui, QtWidgets, sip
    from PyQt5.QtCore import (
        QBuffer,
        QByteArray,
        QEvent,
        QIODevice,
        QObject,
        QProcess,
        QRegularExpression,
        QSettings,
        QSize,
        Qt,
        QThreadPool,
        QTimer,
        pyqtSignal,
        pyqtSlot,
        qVersion,
    )
    from PyQt5.QtGui import (
        QIcon,
        QImage,
        QPainter,
        QPixmap,
        QRegularExpressionValidator,
        QResizeEvent,
        QStandardItemModel,
    )
    from PyQt5.QtWidgets import (
        QAbstractItemView,
        QAction,
        QApplication,
        QCheckBox,
        QComboBox,
        QDialog,
        QDialogButtonBox,
        QDockWidget,
        QDoubleSpinBox,
        QFileDialog,
        QFormLayout,
        QFrame,
        QGridLayout,
        QGroupBox,
        QHBoxLayout,
        QLabel,
        QLineEdit,
        QListWidget,
        QListWidgetItem,
        QMainWindow,
        QPlainTextEdit,
        QProgressBar,
        QPushButton,
        QScrollArea,
        QShortcut,
        QSizePolicy,
        QSlider,
        QSpinBox,
        QToolButton,
        QVBoxLayout,
        QWidget,
    )
else:
    from PyQt6 import QtCore, QtGui, QtWidgets, sip
    from PyQt6.QtCore import (
        QBuffer,
        QByteArray,
        QEvent,
        QIODevice,
        QObject,
        QProcess,
        QRegularExpression,
        QSettings,
        QSize,
        Qt,
        QThreadPool,
        QTimer,
        pyqtSignal,
        pyqtSlot,
        qVersion,
    )
    from PyQt6.QtGui import (
        QAction,
        QIcon,
        QImage,
        QPainter,
        QPixmap,
        QRegularExpressionValidator,
        QResizeEvent,
        QShortcut,
        QStandardItemModel,
    )
    from PyQt6.QtWidgets import (
        QAbstractItemView,
        QApplication,
        QCheckBox,
        QComboBox,
        QDialog,
        QDialogButtonBox,
        QDockWidget,
        QDoubleSpinBox,
        QFileDialog,
        QFormLayout,
        QFrame,
        QGridLayout,
        QGroupBox,
        QHBoxLayout,
        QLabel,
        QLineEdit,
        QListWidget,
        QListWidgetItem,
        QMainWindow,
        QPlainTextEdit,
        QProgressBar,
        QPushButton,
        QScrollArea,
        QSizePolicy,
        QSlider,
        QSpinBox,
        QToolButton,
        QVBoxLayout,
        QWidget,
    )

#: The major version of the Qt actually running (Krita's own Qt inside Krita).
QT_MAJOR = int((qVersion() or "0").split(".")[0])


def enum_int(value: Any) -> int:
    """An enum or flag as an int: PyQt5's are ints already, PyQt6's are Python enums
    whose number is `.value`."""
    return int(getattr(value, "value", value))


def run_dialog(dialog: QDialog) -> int:
    """Show a dialog modally: `exec()` in both bindings (PyQt6 dropped `exec_()`)."""
    return int(dialog.exec())


def image_bytes(image: QImage) -> bytes:
    """A copy of an image's pixel buffer, rows padded to `bytesPerLine()`: the
    `sip.voidptr` of `constBits()` has no size until `setsize` gives it one."""
    pointer = image.constBits()
    if pointer is None:  # a null image
        return b""
    pointer.setsize(image.sizeInBytes())
    return bytes(pointer.asstring())


def device_pixel_ratio(widget: QWidget) -> float:
    """The widget's screen scale (2.0 on a Retina or 200% display): a pixmap drawn at
    size x ratio with this ratio set stays sharp. Qt 5 and 6 both have it."""
    return float(widget.devicePixelRatioF())


__all__ = [
    "BINDING",
    "PYQT5",
    "PYQT6",
    "QT_MAJOR",
    "QAbstractItemView",
    "QAction",
    "QApplication",
    "QBuffer",
    "QByteArray",
    "QCheckBox",
    "QComboBox",
    "QDialog",
    "QDialogButtonBox",
    "QDockWidget",
    "QDoubleSpinBox",
    "QEvent",
    "QFileDialog",
    "QFormLayout",
    "QFrame",
    "QGridLayout",
    "QGroupBox",
    "QHBoxLayout",
    "QIODevice",
    "QIcon",
    "QImage",
    "QLabel",
    "QLineEdit",
    "QListWidget",
    "QListWidgetItem",
    "QMainWindow",
    "QObject",
    "QPainter",
    "QPixmap",
    "QPlainTextEdit",
    "QProcess",
    "QProgressBar",
    "QPushButton",
    "QRegularExpression",
    "QRegularExpressionValidator",
    "QResizeEvent",
    "QScrollArea",
    "QSettings",
    "QShortcut",
    "QSize",
    "QSizePolicy",
    "QSlider",
    "QSpinBox",
    "QStandardItemModel",
    "QThreadPool",
    "QTimer",
    "QToolButton",
    "QVBoxLayout",
    "QWidget",
    "Qt",
    "QtCore",
    "QtGui",
    "QtWidgets",
    "choose_binding",
    "device_pixel_ratio",
    "enum_int",
    "image_bytes",
    "pyqtSignal",
    "pyqtSlot",
    "qVersion",
    "run_dialog",
    "sip",
]
