"""The Qt compatibility module (krita_diffusers/qt.py): the only door to PyQt5/PyQt6.

These tests run in both runs of tests/run.sh (PyQt5 in .venv, PyQt6 in .venv-qt6),
so the helpers are exercised on each binding."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from krita_diffusers import qt
from krita_diffusers.qt import QImage, Qt

PACKAGE = Path(qt.__file__).resolve().parent
IMPORTS_A_BINDING = re.compile(r"^\s*(from|import)\s+PyQt[56]\b", re.MULTILINE)


def plugin_modules() -> list[Path]:
    """Every Python file of the plugin except its bundled third-party libraries."""
    return [path for path in PACKAGE.rglob("*.py") if "vendor" not in path.parts]


def test_no_plugin_module_but_qt_py_imports_a_binding():
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in plugin_modules()
        if path.name != "qt.py" and IMPORTS_A_BINDING.search(path.read_text(encoding="utf-8"))
    ]
    assert len(plugin_modules()) > 20  # the walk found the package
    assert offenders == []


def test_the_running_binding_is_the_only_one_loaded():
    """Two Qt's in one process would crash Krita; the tests prove the plugin never
    pulls in the other binding (the PyQt6 run can see PyQt5's files, see run.sh)."""
    other = qt.PYQT6 if qt.BINDING == qt.PYQT5 else qt.PYQT5
    assert qt.BINDING in sys.modules
    assert other not in sys.modules
    assert (5 if qt.BINDING == qt.PYQT5 else 6) == qt.QT_MAJOR


@pytest.mark.parametrize(
    ("environ", "loaded", "importable", "chosen"),
    [
        # Krita 5: its PyQt5 is loaded before any plugin runs
        ({}, ["PyQt5", "PyQt5.QtCore"], ["PyQt5", "PyQt6"], qt.PYQT5),
        # Krita 6: its PyQt6 is loaded, even if a PyQt5 lies on the path
        ({}, ["PyQt6", "PyQt6.QtCore"], ["PyQt5", "PyQt6"], qt.PYQT6),
        # scripts and tests with nothing loaded: PyQt5 first, else PyQt6
        ({}, [], ["PyQt5", "PyQt6"], qt.PYQT5),
        ({}, [], ["PyQt6"], qt.PYQT6),
        # KD_QT decides (the second test run)
        ({"KD_QT": "6"}, [], ["PyQt5", "PyQt6"], qt.PYQT6),
        ({"KD_QT": "5"}, ["PyQt6.QtCore"], ["PyQt5", "PyQt6"], qt.PYQT5),
        # a KD_QT that is neither is ignored
        ({"KD_QT": "7"}, ["PyQt6.QtCore"], ["PyQt5", "PyQt6"], qt.PYQT6),
    ],
)
def test_choose_binding(environ, loaded, importable, chosen):
    assert qt.choose_binding(environ, loaded, importable) == chosen


def test_no_binding_says_what_is_needed():
    with pytest.raises(ImportError, match=r"PyQt5 .*PyQt6"):
        qt.choose_binding({}, [], [])


def test_image_bytes_copies_every_padded_row():
    image = QImage(3, 2, QImage.Format.Format_RGB888)  # 9 bytes a row, padded to 12
    image.fill(Qt.GlobalColor.white)
    data = qt.image_bytes(image)
    assert len(data) == image.bytesPerLine() * 2 == 24
    assert data[:9] == b"\xff" * 9


def test_image_bytes_of_a_null_image_is_empty():
    assert qt.image_bytes(QImage()) == b""


def test_enum_int_reads_enums_and_flags_on_either_binding():
    assert qt.enum_int(Qt.ItemDataRole.UserRole) == 256
    assert qt.enum_int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop) == 0x21


def test_run_dialog_runs_a_modal_dialog(qtbot):
    dialog = qt.QDialog()
    qtbot.addWidget(dialog)
    qt.QTimer.singleShot(0, dialog.accept)
    assert qt.run_dialog(dialog) == qt.enum_int(qt.QDialog.DialogCode.Accepted)


def test_action_and_shortcut_come_from_their_binding_module(qtbot):
    widget = qt.QWidget()
    qtbot.addWidget(widget)
    action = qt.QAction("Generate", widget)
    shortcut = qt.QShortcut(widget)
    expected = "QtWidgets" if qt.QT_MAJOR == 5 else "QtGui"
    assert type(action).__module__.endswith(expected)
    assert type(shortcut).__module__.endswith(expected)
    assert qt.device_pixel_ratio(widget) >= 1.0


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="reads /proc")
def test_the_real_server_runs_on_the_server_python(live_server):
    """In the PyQt6 run the test process is .venv-qt6's Python, but the server it
    starts is the main venv's (KD_SERVER_PYTHON), which has torch and diffusers."""
    from support.servers import SERVER_PYTHON

    program = Path(f"/proc/{live_server.pid}/cmdline").read_bytes().split(b"\0")[0]
    assert program.decode() == SERVER_PYTHON
    if os.environ.get("KD_SERVER_PYTHON"):
        assert Path(SERVER_PYTHON) != Path(sys.executable)
