"""The models view: what the server can use, per family, and "Why is my model
missing?": every file it found but cannot use, with its reason.

Widgets only: the grouping and the wording come from `model_catalogue.py`. Double
clicking a LoRA adds it to the docker, an embedding writes its name into the prompt,
a LoRA's trigger-words line (under the LoRA) writes its words into the prompt
(`picked`), so the list is also a way to use them.
"""

from __future__ import annotations

from .model_catalogue import (
    Catalogue,
    MissingFile,
    catalogue,
    missing,
    missing_text,
    trigger_words_text,
)
from .protocol import ModelList
from .qt import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QListWidget,
    QListWidgetItem,
    Qt,
    QVBoxLayout,
    QWidget,
    pyqtSignal,
)
from .widgets import named

#: Item data role holding (kind, name) of a line that can be used.
ROLE = Qt.ItemDataRole.UserRole


class ModelsDialog(QDialog):
    picked = pyqtSignal(str, str)  # kind ("lora", "embedding", "trigger-words"), name

    def __init__(self, models: ModelList, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("kd-models-dialog")
        self.setWindowTitle("Models on the server")
        self.usable = named(QListWidget(), "kd-models-list")
        self.usable.setToolTip(
            "Double click a LoRA to add it, an embedding or trigger words to write them"
        )
        self.summary = named(QLabel(), "kd-models-missing-summary")
        self.summary.setWordWrap(True)
        self.missing = named(QListWidget(), "kd-models-missing")
        self.missing.setWordWrap(True)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.usable, 2)
        layout.addWidget(named(QLabel("<b>Why is my model missing?</b>"), "kd-models-why"))
        layout.addWidget(self.summary)
        layout.addWidget(self.missing, 1)
        layout.addWidget(close)
        close.rejected.connect(self.reject)
        self.usable.itemDoubleClicked.connect(self._on_double_click)
        self.show_models(models)

    def show_models(self, models: ModelList) -> None:
        self._show_catalogue(catalogue(models))
        self._show_missing(missing(models))

    def _heading(self, text: str) -> None:
        item = QListWidgetItem(text)
        font = item.font()  # a copy: changed, then set back
        font.setBold(True)
        item.setFont(font)
        item.setFlags(Qt.ItemFlag.ItemIsEnabled)  # a heading: not selectable
        self.usable.addItem(item)

    def _line(self, text: str, kind: str = "", name: str = "", indent: int = 1) -> QListWidgetItem:
        item = QListWidgetItem("    " * indent + text)
        if kind:
            item.setData(ROLE, (kind, name))
        self.usable.addItem(item)
        return item

    def _trigger_line(self, lora: str, words: tuple[str, ...]) -> None:
        """Under its LoRA, so the LoRA's own line keeps adding the LoRA."""
        text = f"Trigger words: {trigger_words_text(words)}"
        item = self._line(text, "trigger-words", lora, indent=2)
        item.setToolTip("Double click to write these words into the prompt")

    def _show_catalogue(self, found: Catalogue) -> None:
        self.usable.clear()
        for group in found.families:
            self._heading(group.name)
            for name in group.checkpoints:
                self._line(f"Checkpoint: {name}")
            for name in group.loras:
                self._line(f"LoRA: {name}", "lora", name)
                words = found.trigger_words.get(name)
                if words:
                    self._trigger_line(name, words)
            for name in group.embeddings:
                self._line(f"Embedding: {name}", "embedding", name)
        if found.vaes:
            self._heading("VAEs (SD 1.5 and SDXL)")
            for name in found.vaes:
                self._line(f"VAE: {name}")

    def _show_missing(self, files: list[MissingFile]) -> None:
        self.summary.setText(missing_text(files))
        self.missing.clear()
        for item in files:
            self.missing.addItem(f"{item.name} ({item.kind}): {item.reason}")
        self.missing.setVisible(bool(files))

    def _on_double_click(self, item: QListWidgetItem) -> None:
        data = item.data(ROLE)
        if isinstance(data, tuple) and len(data) == 2:
            self.picked.emit(str(data[0]), str(data[1]))
