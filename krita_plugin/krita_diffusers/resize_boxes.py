"""The docker's Upscale and Expand sections: inputs that read back as the plain
choices of `upscaling.py` and `expanding.py`, nothing more. The panel wires their
buttons to the controller.
"""

from __future__ import annotations

from .expanding import MAX_EXPAND, Sides
from .planning import MAX_SIDE
from .protocol import ModelList
from .qt import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QStandardItemModel,
    Qt,
    QWidget,
)
from .upscaling import FACTORS, Destination, UpscaleChoice, upscaler_entries
from .widgets import named

SIZE = "Size…"  # the factor list's last entry: a target width and height


def _spin(name: str, low: int, high: int, value: int, suffix: str = " px") -> QSpinBox:
    box = named(QSpinBox(), name)
    box.setRange(low, high)
    box.setValue(value)
    box.setSuffix(suffix)
    return box


class UpscaleBox(QWidget):
    """Factor (or a target size), upscaler, refine strength, where the result goes,
    and the Upscale button (`kd-upscale`)."""

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.setObjectName("kd-upscale-box")
        self.factor = named(QComboBox(), "kd-upscale-factor")
        for factor in FACTORS:
            self.factor.addItem(f"{factor:g}x", factor)
        self.factor.addItem(SIZE, None)
        self.factor.setCurrentIndex(FACTORS.index(2.0))
        self.factor.setToolTip("How much larger, or a size of your choice")
        self.target_width = _spin("kd-upscale-width", 8, MAX_SIDE, 2048)
        self.target_height = _spin("kd-upscale-height", 8, MAX_SIDE, 2048)
        self.size_line = QWidget()
        size = QHBoxLayout(self.size_line)
        size.setContentsMargins(0, 0, 0, 0)
        size.addWidget(self.target_width, 1)
        size.addWidget(QLabel("x"))
        size.addWidget(self.target_height, 1)
        self.size_line.setVisible(False)
        self.upscaler = named(QComboBox(), "kd-upscale-upscaler")
        self.upscaler.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.upscaler.setToolTip("The model that enlarges the picture (Lanczos needs none)")
        self.strength = _spin("kd-upscale-strength", 0, 100, 35, "%")
        self.strength.setToolTip(
            "How much the prompt may redraw details after enlarging (0%: enlarge only)"
        )
        self.destination = named(QComboBox(), "kd-upscale-destination")
        self.destination.addItem("New document", Destination.NEW_DOCUMENT)
        self.destination.addItem("Layer (scales this image)", Destination.LAYER)
        self.destination.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.destination.setToolTip(
            "New document: this one stays as it is. Layer: this image is scaled to the "
            "new size (Image > Scale Image) and the result added on top."
        )
        self.button = named(QPushButton("Upscale"), "kd-upscale")
        self.button.setToolTip("Enlarge the whole picture (applied from the history)")
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Factor", self.factor)
        form.addRow("", self.size_line)
        form.addRow("Upscaler", self.upscaler)
        form.addRow("Refine", self.strength)
        form.addRow("Result", self.destination)
        form.addRow(self.button)
        self.factor.currentIndexChanged.connect(self._factor_changed)
        self.set_models(ModelList([], []))

    def _factor_changed(self, _index: int) -> None:
        self.size_line.setVisible(self.factor.currentData() is None)

    def set_models(self, models: ModelList) -> None:
        """Lanczos and the server's upscalers; unusable ones listed but disabled, with
        the server's reason as a tooltip. The current choice is kept when listed."""
        chosen = self.upscaler.currentData()
        self.upscaler.clear()
        model = self.upscaler.model()
        for entry in upscaler_entries(models):
            self.upscaler.addItem(entry.label, entry.name)
            index = self.upscaler.count() - 1
            if entry.reason:
                self.upscaler.setItemData(index, entry.reason, Qt.ItemDataRole.ToolTipRole)
            if not entry.usable and isinstance(model, QStandardItemModel):
                item = model.item(index)
                if item is not None:
                    item.setEnabled(False)
        found = self.upscaler.findData(chosen) if chosen is not None else -1
        self.upscaler.setCurrentIndex(max(0, found))

    def choice(self) -> UpscaleChoice:
        factor = self.factor.currentData()
        destination = self.destination.currentData()
        return UpscaleChoice(
            factor=float(factor) if factor is not None else None,
            width=self.target_width.value(),
            height=self.target_height.value(),
            upscaler=self.upscaler.currentData(),
            strength_percent=self.strength.value(),
            destination=destination
            if isinstance(destination, Destination)
            else Destination.NEW_DOCUMENT,
        )


class ExpandBox(QWidget):
    """How many pixels, on which sides, and the Expand button (`kd-expand`)."""

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.setObjectName("kd-expand-box")
        self.pixels = _spin("kd-expand-pixels", 8, MAX_EXPAND, 256)
        self.pixels.setSingleStep(8)
        self.sides = {
            side: named(QCheckBox(side.capitalize()), f"kd-expand-{side}")
            for side in ("left", "top", "right", "bottom")
        }
        self.sides["right"].setChecked(True)
        self.button = named(QPushButton("Expand"), "kd-expand")
        self.button.setToolTip(
            "Grow the canvas and paint the new area from the picture around it "
            "(applied from the history)"
        )
        ticks = QGridLayout()  # two by two: a docker is narrow
        ticks.setContentsMargins(0, 0, 0, 0)
        for number, box in enumerate(self.sides.values()):
            ticks.addWidget(box, number // 2, number % 2)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("By", self.pixels)
        form.addRow(ticks)
        form.addRow(self.button)

    def chosen(self) -> Sides:
        ticked = {side: box.isChecked() for side, box in self.sides.items()}
        return Sides.chosen(self.pixels.value(), **ticked)
