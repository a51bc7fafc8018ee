"""The preview on a high-DPI screen (Retina, 200%): drawn in device pixels, so it is
sharp at the same on-screen size. A separate process, because the scale factor is
fixed when Qt starts (QT_SCALE_FACTOR=2 stands in for such a screen, offscreen)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from krita_diffusers import qt

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import sys
from krita_diffusers.qt import QApplication, QImage, Qt
app = QApplication(sys.argv)
from krita_diffusers.docker import FittedPreview
image = QImage(512, 512, QImage.Format.Format_RGB32)
image.fill(Qt.GlobalColor.white)
preview = FittedPreview()
preview.resize(200, 200)
preview.show_image(image)
preview.show()
app.processEvents()
pixmap = preview.pixmap()
print(preview.devicePixelRatioF(), pixmap.width(), pixmap.height(), pixmap.devicePixelRatio())
"""


@pytest.mark.parametrize(("scale", "pixels"), [("1", 200), ("2", 400)])
def test_the_preview_is_drawn_in_device_pixels(scale, pixels):
    env = {
        **os.environ,
        "KD_QT": "6" if qt.BINDING == qt.PYQT6 else "5",
        "QT_QPA_PLATFORM": "offscreen",
        "QT_SCALE_FACTOR": scale,
        "PYTHONPATH": str(ROOT / "krita_plugin"),
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    ratio, width, height, pixmap_ratio = done.stdout.split()
    assert float(ratio) == float(pixmap_ratio) == float(scale)
    assert (int(width), int(height)) == (pixels, pixels)  # 200x200 on screen either way
