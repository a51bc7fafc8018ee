"""The styles editor: create, edit, duplicate, delete and import styles.

Widgets wired to `styles.py`, which holds every rule (files, names, A1111's
`styles.csv`). Saving writes the artist's JSON file at once and tells the docker
(`changed`, with the name to select), so the picker follows without a restart.
Shipped styles are shown but saved as the artist's own copy when edited; files that
cannot be read are listed below with the reason.
"""

from __future__ import annotations

from pathlib import Path

from .family_settings import MEMORY_MODE_LABELS, MEMORY_MODES
from .qt import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
    pyqtSignal,
)
from .styles import (
    AUTO,
    LiveSampling,
    Style,
    StyleLibrary,
    delete_style,
    detect_a1111,
    duplicate,
    format_loras,
    import_a1111,
    load_library,
    parse_loras,
    save_style,
    unused_name,
)
from .widgets import named

KEEP = "Keep the docker's"


def _choice(name: str, items: list[str]) -> QComboBox:
    """An editable choice whose empty text means "keep what the docker has"."""
    box = named(QComboBox(), name)
    box.setEditable(True)
    box.addItems(["", *items])
    line = box.lineEdit()
    if line is not None:
        line.setPlaceholderText(KEEP)
    return box


def _count(name: str) -> QSpinBox:
    """Steps; 0 shows as "Keep": the style leaves them to the docker."""
    box = named(QSpinBox(), name)
    box.setRange(0, 150)
    box.setSpecialValueText("Keep")
    return box


def _decimal(name: str) -> QDoubleSpinBox:
    """CFG; 0 shows as "Keep": the style leaves it to the docker."""
    box = named(QDoubleSpinBox(), name)
    box.setRange(0, 30)
    box.setSingleStep(0.5)
    box.setSpecialValueText("Keep")
    return box


class StylesDialog(QDialog):
    changed = pyqtSignal(str)  # a style was saved, deleted or imported: its name, or ""

    def __init__(
        self,
        folder: Path,
        current: Style | None,
        checkpoints: list[str],
        samplers: list[str],
        blank: Style,
        parent: QWidget | None = None,
        vaes: list[str] | None = None,
    ) -> None:
        """`blank`: what New starts from (the docker's model, LoRAs and sampling);
        `vaes`: the server's usable VAE files, offered in the VAE choice."""
        super().__init__(parent)
        self.setObjectName("kd-styles-dialog")
        self.setWindowTitle("Styles")
        self.folder = folder
        self.blank = blank
        self.library = StyleLibrary()
        self.editing: Style | None = None  # as loaded; None: a new style
        self._build(checkpoints, samplers, vaes or [])
        self.reload(current.name if current else None)

    def _build(self, checkpoints: list[str], samplers: list[str], vaes: list[str]) -> None:
        self.list = named(QListWidget(), "kd-styles-list")
        self.name = named(QLineEdit(), "kd-style-name")
        self.checkpoint = _choice("kd-style-checkpoint", checkpoints)
        self.sampler = _choice("kd-style-sampler", [AUTO, *samplers])
        self.sampler.setToolTip('"auto": the server picks the fast model\'s own sampling')
        self.steps = _count("kd-style-steps")
        self.cfg = _decimal("kd-style-cfg")
        self.guidance = _decimal("kd-style-guidance")
        self.guidance.setToolTip("Flux.1 dev / Fill only, in place of CFG (3.5 is usual)")
        self.clip_skip = _count("kd-style-clip-skip")
        self.clip_skip.setRange(0, 12)
        self.clip_skip.setToolTip("A1111's clip skip (SD 1.5 models only): 2 for many anime models")
        self.vae = _choice("kd-style-vae", vaes)
        self.vae.setToolTip("A VAE file of the server's (SD 1.5 / SDXL)")
        self.memory_mode = named(QComboBox(), "kd-style-memory-mode")
        self.memory_mode.addItem("Server's choice", None)
        for mode in MEMORY_MODES:
            self.memory_mode.addItem(MEMORY_MODE_LABELS[mode], mode)
        self.memory_mode.setToolTip(
            "How the server fits the model in the graphics card's memory (servers of "
            "protocol 6); lower modes need less memory and run slower"
        )
        self.loras = named(QLineEdit(), "kd-style-loras")
        self.loras.setPlaceholderText("name:weight, name:weight")
        self.prompt = named(QPlainTextEdit(), "kd-style-prompt")
        self.prompt.setPlaceholderText("{prompt}, detailed oil painting")
        self.prompt.setMaximumHeight(60)
        self.negative = named(QPlainTextEdit(), "kd-style-negative")
        self.negative.setMaximumHeight(48)
        self.live_auto = named(QCheckBox("Live: the fast model's own sampling"), "kd-style-live")
        self.live_sampler = _choice("kd-style-live-sampler", samplers)
        self.live_steps = _count("kd-style-live-steps")
        self.live_cfg = _decimal("kd-style-live-cfg")
        self.problems = named(QLabel(), "kd-styles-problems")
        self.problems.setWordWrap(True)
        self.problems.setStyleSheet("color: #c0392b")

        form = QFormLayout()
        form.addRow("Name", self.name)
        form.addRow("Model", self.checkpoint)
        form.addRow("Sampler", self.sampler)
        form.addRow("Steps", self.steps)
        form.addRow("CFG scale", self.cfg)
        form.addRow("Guidance", self.guidance)
        form.addRow("Clip skip", self.clip_skip)
        form.addRow("VAE", self.vae)
        form.addRow("Memory mode", self.memory_mode)
        form.addRow("LoRAs", self.loras)
        form.addRow("Prompt", self.prompt)
        form.addRow("Negative", self.negative)
        form.addRow("", self.live_auto)
        form.addRow("Live sampler", self.live_sampler)
        form.addRow("Live steps", self.live_steps)
        form.addRow("Live CFG", self.live_cfg)

        buttons = QHBoxLayout()
        self.new_button = named(QPushButton("New"), "kd-style-new")
        self.duplicate_button = named(QPushButton("Duplicate"), "kd-style-duplicate")
        self.delete_button = named(QPushButton("Delete"), "kd-style-delete")
        self.save_button = named(QPushButton("Save"), "kd-style-save")
        self.import_button = named(QPushButton("Import A1111 styles…"), "kd-style-import")
        for button in (
            self.new_button,
            self.duplicate_button,
            self.delete_button,
            self.save_button,
            self.import_button,
        ):
            buttons.addWidget(button)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.folder_note = named(QLabel(f"Your styles: {self.folder}"), "kd-styles-folder")
        self.folder_note.setWordWrap(True)

        sides = QHBoxLayout()
        sides.addWidget(self.list, 1)
        sides.addLayout(form, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(sides)
        layout.addLayout(buttons)
        layout.addWidget(self.folder_note)
        layout.addWidget(self.problems)
        layout.addWidget(close)

        self.list.currentRowChanged.connect(self._on_row)
        self.new_button.clicked.connect(self.new_style)
        self.duplicate_button.clicked.connect(self.duplicate_style)
        self.delete_button.clicked.connect(self.delete_current)
        self.save_button.clicked.connect(lambda: self._on_save())
        self.import_button.clicked.connect(self._choose_a1111)
        self.live_auto.toggled.connect(self._refresh_live)
        close.rejected.connect(self.reject)

    # the list

    def reload(self, select: str | None = None) -> None:
        self.library = load_library(self.folder)
        self.list.blockSignals(True)
        self.list.clear()
        for style in self.library.styles:
            self.list.addItem(f"{style.name} (shipped)" if style.shipped else style.name)
        self.list.blockSignals(False)
        names = self.library.names
        self.list.setCurrentRow(names.index(select) if select in names else 0)
        self._on_row(self.list.currentRow())
        self.problems.setText(
            "\n".join(
                f"{problem.path.name} is left out: {problem.reason}"
                for problem in self.library.problems
            )
        )
        self.problems.setVisible(bool(self.library.problems))

    def _on_row(self, row: int) -> None:
        if 0 <= row < len(self.library.styles):
            self.show_style(self.library.styles[row])

    def show_style(self, style: Style, new: bool = False) -> None:
        self.editing = None if new else style
        self.name.setText(style.name)
        self.checkpoint.setCurrentText(style.checkpoint or "")
        self.sampler.setCurrentText(style.sampler or "")
        self.steps.setValue(style.steps or 0)
        self.cfg.setValue(style.cfg_scale or 0)
        self.guidance.setValue(style.guidance or 0)
        self.clip_skip.setValue(style.clip_skip or 0)
        self.vae.setCurrentText(style.vae or "")
        self.memory_mode.setCurrentIndex(max(0, self.memory_mode.findData(style.memory_mode)))
        self.loras.setText(format_loras(style.loras))
        self.prompt.setPlainText(style.prompt)
        self.negative.setPlainText(style.negative_prompt)
        self.live_auto.setChecked(style.live.auto)
        self.live_sampler.setCurrentText(style.live.sampler or "")
        self.live_steps.setValue(style.live.steps or 0)
        self.live_cfg.setValue(style.live.cfg_scale or 0)
        self._refresh_live(style.live.auto)
        self.delete_button.setEnabled(not new and not style.shipped)

    def _refresh_live(self, auto: bool) -> None:
        for box in (self.live_sampler, self.live_steps, self.live_cfg):
            box.setEnabled(not auto)

    def edited(self) -> Style:
        """The style as the fields say."""
        return Style(
            name=self.name.text().strip(),
            checkpoint=self.checkpoint.currentText().strip() or None,
            sampler=self.sampler.currentText().strip() or None,
            steps=int(self.steps.value()) or None,
            cfg_scale=float(self.cfg.value()) or None,
            loras=parse_loras(self.loras.text()),
            prompt=self.prompt.toPlainText().strip(),
            negative_prompt=self.negative.toPlainText().strip(),
            live=LiveSampling(
                self.live_auto.isChecked(),
                self.live_sampler.currentText().strip() or None,
                int(self.live_steps.value()) or None,
                float(self.live_cfg.value()) or None,
            ),
            guidance=float(self.guidance.value()) or None,
            clip_skip=int(self.clip_skip.value()) or None,
            vae=self.vae.currentText().strip() or None,
            memory_mode=self.memory_mode.currentData() or None,
        )

    # actions

    def new_style(self) -> None:
        blank = Style(
            unused_name(self.blank.name, self.library.names),
            self.blank.checkpoint,
            self.blank.sampler,
            self.blank.steps,
            self.blank.cfg_scale,
            self.blank.loras,
        )
        self.show_style(blank, new=True)

    def duplicate_style(self) -> None:
        self.show_style(duplicate(self.edited(), self.library.names), new=True)

    def _on_save(self) -> None:
        self.save_current()

    def save_current(self) -> bool:
        """Write the artist's file; a renamed style of the artist's drops its old file.
        False (with the reason shown) when the name is empty."""
        style = self.edited()
        if not style.name:
            self.problems.setText("Give the style a name.")
            self.problems.setVisible(True)
            return False
        old = self.editing
        save_style(self.folder, style)
        if old is not None and not old.shipped and old.name != style.name:
            delete_style(self.folder, old.name)
        self.reload(style.name)
        self.changed.emit(style.name)
        return True

    def delete_current(self) -> None:
        if self.editing is not None and delete_style(self.folder, self.editing.name):
            self.reload()
            self.changed.emit("")

    def _choose_a1111(self) -> None:
        found = detect_a1111(Path.home())
        folder = QFileDialog.getExistingDirectory(
            self, "A1111 folder (holds styles.csv)", str(found or Path.home())
        )
        if folder:
            self.import_from(Path(folder))

    def import_from(self, folder: Path) -> list[Style]:
        """Import `styles.csv` of an A1111 folder (or the file itself)."""
        path = folder if folder.is_file() else folder / "styles.csv"
        if not path.is_file():
            self.problems.setText(f"No styles.csv in {folder}.")
            self.problems.setVisible(True)
            return []
        saved = import_a1111(path, self.folder, self.library.names)
        self.reload(saved[0].name if saved else None)
        self.changed.emit("")
        return saved
