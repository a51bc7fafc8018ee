"""The docker panel: widgets wired to the controller and the client, nothing more.

Every control has an objectName (kd-...) so tests and scripts can find it. The panel
talks to Krita only through the `CanvasAdapter` it is given.
"""

from __future__ import annotations

from PyQt5.QtCore import QRegularExpression, QSize, Qt, QTimer
from PyQt5.QtGui import QIcon, QPixmap, QRegularExpressionValidator
from PyQt5.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from . import images
from .canvas import CanvasAdapter
from .client import ConnectionState, ServerClient
from .controller import Controller, GenerateInput
from .history import HistoryItem
from .jobs import Job, JobStatus
from .managed_server import ManagedServer
from .planning import action_label
from .protocol import Lora, ModelList
from .settings import Settings, SettingsStore, load, save
from .settings_dialog import SettingsDialog

SELECTION_POLL_MS = 700  # Krita's Python API has no "selection changed" signal
THUMBNAIL = 72
MAX_SEED = 2**32 - 1  # the protocol's seed range
PREVIEW_SIZE = 256
STATE_COLOURS = {
    ConnectionState.CONNECTED: "#2e7d32",
    ConnectionState.CONNECTING: "#8d6e00",
    ConnectionState.UNREACHABLE: "#c0392b",
    ConnectionState.REFUSED: "#c0392b",
}


class FittedPreview(QLabel):
    """The live preview, fitted to the room the docker gives it, aspect kept.

    A plain QLabel sizes itself to its pixmap, so a narrow or short docker crops the
    picture; this one keeps the source and rescales on every resize instead.
    """

    def __init__(self) -> None:
        super().__init__(objectName="kd-preview")
        self._source = QPixmap()
        self.setAlignment(Qt.AlignCenter)
        self.setMinimumSize(64, 64)
        self.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)

    def show_image(self, pixmap: QPixmap) -> None:
        self._source = pixmap
        self.updateGeometry()
        self._fit()

    def hasHeightForWidth(self) -> bool:
        return not self._source.isNull()

    def heightForWidth(self, width: int) -> int:
        if self._source.isNull() or self._source.width() == 0:
            return 64
        shown = min(width, PREVIEW_SIZE)
        return max(
            64, min(PREVIEW_SIZE, round(shown * self._source.height() / self._source.width()))
        )

    def sizeHint(self) -> QSize:
        return QSize(PREVIEW_SIZE, self.heightForWidth(PREVIEW_SIZE))

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit()

    def _fit(self) -> None:
        if self._source.isNull():
            return
        width, height = min(self.width(), PREVIEW_SIZE), min(self.height(), PREVIEW_SIZE)
        self.setPixmap(
            self._source.scaled(width, height, Qt.KeepAspectRatio, Qt.SmoothTransformation)
        )


class LoraRow(QWidget):
    """One chosen LoRA: its name, a weight, and a button to take it off."""

    def __init__(self, name: str, weight: float, parent: QWidget) -> None:
        super().__init__(parent)
        self.setObjectName("kd-lora-row")
        self.name = name
        self.weight = QDoubleSpinBox(objectName="kd-lora-weight")
        self.weight.setRange(-2.0, 2.0)
        self.weight.setSingleStep(0.05)
        self.weight.setValue(weight)
        self.remove = QToolButton(objectName="kd-lora-remove", text="✕")
        self.remove.setToolTip("Remove this LoRA")
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel(name), 1)
        row.addWidget(self.weight)
        row.addWidget(self.remove)


class DiffusersPanel(QWidget):
    def __init__(
        self,
        canvas: CanvasAdapter,
        store: SettingsStore,
        client: ServerClient | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("kd-panel")
        self.canvas = canvas
        self.store = store
        self.settings = load(store)
        self.client = client or ServerClient(self)
        self.server = ManagedServer(self.client, self)
        self.controller = Controller(self.client, canvas, self.settings)
        self.lora_rows: list[LoraRow] = []
        self._samplers: list[str] = []
        self._has_selection = False
        self._build()
        self._wire()
        self._refresh_label()
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)
        self.client.configure(self.settings.server_url, self.settings.token)
        self.client.start()

    # building

    def _build(self) -> None:
        self.connection = QLabel("Connecting…", objectName="kd-connection")
        self.connection.setWordWrap(True)
        self.settings_button = QToolButton(objectName="kd-settings", text="⚙")
        self.settings_button.setToolTip("Settings: server, local server, generation defaults")
        top = QHBoxLayout()
        top.addWidget(self.connection, 1)
        top.addWidget(self.settings_button, 0, Qt.AlignTop)

        self.prompt = QPlainTextEdit(objectName="kd-prompt")
        self.prompt.setPlaceholderText("Prompt: what should appear")
        self.prompt.setMaximumHeight(80)
        self.negative_toggle = QToolButton(objectName="kd-negative-toggle", text="Negative prompt")
        self.negative_toggle.setCheckable(True)
        self.negative_toggle.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self.negative_toggle.setArrowType(Qt.RightArrow)
        self.negative = QPlainTextEdit(objectName="kd-negative-prompt")
        self.negative.setPlaceholderText("What should not appear")
        self.negative.setMaximumHeight(60)
        self.negative.setVisible(False)

        self.model = QComboBox(objectName="kd-model")
        self.model.addItem("Server default", None)
        self.lora_choice = QComboBox(objectName="kd-lora-choice")
        self.lora_add = QToolButton(objectName="kd-lora-add", text="Add")
        self.lora_box = QVBoxLayout()
        self.lora_box.setContentsMargins(0, 0, 0, 0)
        lora_line = QHBoxLayout()
        lora_line.addWidget(self.lora_choice, 1)
        lora_line.addWidget(self.lora_add)

        self.strength = QSlider(Qt.Horizontal, objectName="kd-strength")
        self.strength.setRange(1, 100)
        self.strength.setValue(100)
        self.strength_value = QLabel("100%", objectName="kd-strength-value")
        strength_line = QHBoxLayout()
        strength_line.addWidget(self.strength, 1)
        strength_line.addWidget(self.strength_value)

        self.batch = QSpinBox(objectName="kd-batch")
        self.batch.setRange(1, 8)
        self.seed = QLineEdit(objectName="kd-seed")
        self.seed.setValidator(
            QRegularExpressionValidator(QRegularExpression(r"\d{0,10}"), self.seed)
        )
        self.seed.setPlaceholderText("random")
        self.seed_lock = QToolButton(objectName="kd-seed-lock", text="Lock")
        self.seed_lock.setCheckable(True)
        self.seed_lock.setToolTip("Locked: reuse this seed. Unlocked: a new random seed each time.")
        seed_line = QHBoxLayout()
        seed_line.addWidget(QLabel("Batch"))
        seed_line.addWidget(self.batch)
        seed_line.addWidget(QLabel("Seed"))
        seed_line.addWidget(self.seed, 1)
        seed_line.addWidget(self.seed_lock)

        form = QFormLayout()
        form.addRow("Model", self.model)
        form.addRow("LoRA", lora_line)
        form.addRow("", self.lora_box)
        form.addRow("Strength", strength_line)

        self.generate_button = QPushButton("Generate", objectName="kd-generate")
        self.cancel_button = QPushButton("Cancel", objectName="kd-cancel")
        self.cancel_button.setEnabled(False)
        actions = QHBoxLayout()
        actions.addWidget(self.generate_button, 1)
        actions.addWidget(self.cancel_button)

        self.progress = QProgressBar(objectName="kd-progress")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("Idle")
        self.preview = FittedPreview()
        self.error = QLabel(objectName="kd-error")
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #c0392b")
        self.error.setVisible(False)

        self.history = QListWidget(objectName="kd-history")
        self.history.setViewMode(QListWidget.IconMode)
        self.history.setIconSize(QSize(THUMBNAIL, THUMBNAIL))
        self.history.setResizeMode(QListWidget.Adjust)
        self.history.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.apply_button = QPushButton("Apply", objectName="kd-apply")
        self.apply_button.setToolTip("Make the selected results permanent layers")
        self.discard_button = QPushButton("Discard", objectName="kd-discard")
        history_buttons = QHBoxLayout()
        history_buttons.addWidget(self.apply_button)
        history_buttons.addWidget(self.discard_button)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.prompt)
        layout.addWidget(self.negative_toggle)
        layout.addWidget(self.negative)
        layout.addLayout(form)
        layout.addLayout(seed_line)
        layout.addLayout(actions)
        layout.addWidget(self.progress)
        layout.addWidget(self.error)
        layout.addWidget(self.preview)
        layout.addWidget(self.history, 1)
        layout.addLayout(history_buttons)

    def _wire(self) -> None:
        self.settings_button.clicked.connect(self.open_settings)
        self.negative_toggle.toggled.connect(self._toggle_negative)
        self.strength.valueChanged.connect(self._refresh_label)
        self.lora_add.clicked.connect(self._add_chosen_lora)
        self.seed.textEdited.connect(lambda _text: self.seed_lock.setChecked(True))
        self.generate_button.clicked.connect(self.generate)
        self.cancel_button.clicked.connect(self.cancel)
        self.apply_button.clicked.connect(self.apply_selected)
        self.discard_button.clicked.connect(self.discard_selected)
        self.history.itemSelectionChanged.connect(self._on_history_selection)
        self.history.itemDoubleClicked.connect(lambda _item: self.apply_selected())

        self.client.state_changed.connect(self._on_connection)
        self.client.models_changed.connect(self._on_models)
        self.client.samplers_changed.connect(self._on_samplers)
        self.controller.job_updated.connect(self._on_job)
        self.controller.preview_ready.connect(self._on_preview)
        self.controller.history_changed.connect(self._refresh_history)
        self.controller.result_added.connect(self._on_result)
        self.controller.seed_used.connect(self._on_seed)
        self.controller.message.connect(self.show_message)

        self.selection_timer = QTimer(self)
        self.selection_timer.setInterval(SELECTION_POLL_MS)
        self.selection_timer.timeout.connect(self._refresh_label)
        self.selection_timer.start()

    # small reactions

    def _toggle_negative(self, shown: bool) -> None:
        self.negative.setVisible(shown)
        self.negative_toggle.setArrowType(Qt.DownArrow if shown else Qt.RightArrow)

    def _refresh_label(self) -> None:
        self.strength_value.setText(f"{self.strength.value()}%")
        try:
            self._has_selection = self.canvas.selection_bounds() is not None
        except Exception:  # a closing document must not break the panel
            self._has_selection = False
        self.generate_button.setText(action_label(self.strength.value(), self._has_selection))

    def show_message(self, text: str) -> None:
        self.error.setText(text)
        self.error.setVisible(bool(text))

    def _on_connection(self, state: ConnectionState, text: str) -> None:
        self.connection.setText(text)
        self.connection.setStyleSheet(f"color: {STATE_COLOURS.get(state, '#000')}")
        self.connection.setProperty("state", state.value)

    def _on_models(self, models: ModelList) -> None:
        chosen = self.model.currentData()
        self.model.clear()
        self.model.addItem("Server default", None)
        for checkpoint in models.checkpoints:
            label = (
                f"{checkpoint.name} ({checkpoint.family})" if checkpoint.family else checkpoint.name
            )
            self.model.addItem(label, checkpoint.name)
        index = self.model.findData(chosen)
        self.model.setCurrentIndex(max(0, index))
        self.lora_choice.clear()
        self.lora_choice.addItems(models.loras)
        self.lora_add.setEnabled(bool(models.loras))

    def _on_samplers(self, samplers: list[str]) -> None:
        self._samplers = samplers

    def _add_chosen_lora(self) -> None:
        name = self.lora_choice.currentText()
        if name:
            self.add_lora(name, 1.0)

    def add_lora(self, name: str, weight: float) -> None:
        if any(row.name == name for row in self.lora_rows):
            return
        row = LoraRow(name, weight, self)
        row.remove.clicked.connect(lambda: self._remove_lora(row))
        self.lora_rows.append(row)
        self.lora_box.addWidget(row)

    def _remove_lora(self, row: LoraRow) -> None:
        self.lora_rows.remove(row)
        row.setParent(None)
        row.deleteLater()

    # generating

    def current_input(self) -> GenerateInput:
        locked = self.seed_lock.isChecked() and self.seed.text().strip() != ""
        return GenerateInput(
            prompt=self.prompt.toPlainText().strip(),
            negative_prompt=self.negative.toPlainText().strip(),
            strength_percent=self.strength.value(),
            model=self.model.currentData(),
            loras=[Lora(row.name, round(row.weight.value(), 3)) for row in self.lora_rows],
            batch_size=self.batch.value(),
            seed=min(int(self.seed.text()), MAX_SEED) if locked else None,
        )

    def generate(self) -> None:
        if self.controller.generate(self.current_input()):
            self.progress.setRange(0, 0)  # busy until the server says where we are
            self.progress.setFormat("Sending…")
            self.cancel_button.setEnabled(True)

    def cancel(self) -> None:
        self.controller.cancel()

    def _on_job(self, job: Job | None) -> None:
        active = self.controller.active_job
        shown = active or job
        self.cancel_button.setEnabled(self.controller.busy)
        if shown is None:
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            self.progress.setFormat("Idle")
            return
        if shown.status is JobStatus.RUNNING and shown.total:
            self.progress.setRange(0, shown.total)
            self.progress.setValue(shown.step)
        elif shown.done:
            self.progress.setRange(0, 1)
            self.progress.setValue(1 if shown.status is JobStatus.FINISHED else 0)
        else:
            self.progress.setRange(0, 0)
        self.progress.setFormat(shown.describe())

    def _on_preview(self, jpeg: bytes) -> None:
        pixmap = QPixmap()
        if pixmap.loadFromData(jpeg):
            self.preview.show_image(pixmap)

    def _on_seed(self, seed: int) -> None:
        if not self.seed_lock.isChecked():
            self.seed.setText(str(seed))

    # history

    def _refresh_history(self) -> None:
        selected = set(self.selected_ids())
        self.history.blockSignals(True)
        self.history.clear()
        for item in self.controller.history.items:
            self.history.addItem(self._history_entry(item, item.item_id in selected))
        self.history.blockSignals(False)

    def _history_entry(self, item: HistoryItem, selected: bool) -> QListWidgetItem:
        entry = QListWidgetItem()
        entry.setData(Qt.UserRole, item.item_id)
        entry.setToolTip(
            f"{item.layer_name}\n{item.task.value}{' · applied' if item.applied else ''}"
        )
        entry.setText(f"{item.seed}{' ✓' if item.applied else ''}")
        try:
            thumb = images.decode(item.png).scaled(
                THUMBNAIL, THUMBNAIL, Qt.KeepAspectRatio, Qt.SmoothTransformation
            )
            entry.setIcon(QIcon(QPixmap.fromImage(thumb)))
        except images.ImageError:
            pass
        entry.setSelected(selected)
        return entry

    def _on_result(self, item: HistoryItem) -> None:
        """Show a new result on the canvas at once, as the temporary preview layer."""
        for row in range(self.history.count()):
            entry = self.history.item(row)
            if entry.data(Qt.UserRole) == item.item_id:
                self.history.setCurrentItem(entry)
                break

    def selected_ids(self) -> list[int]:
        return [entry.data(Qt.UserRole) for entry in self.history.selectedItems()]

    def _on_history_selection(self) -> None:
        current = self.history.currentItem()
        if current is not None and current.isSelected():
            self.controller.show_item(current.data(Qt.UserRole))
        elif not self.history.selectedItems():
            self.controller.clear_preview()

    def apply_selected(self) -> None:
        self.controller.apply_items(self.selected_ids())

    def discard_selected(self) -> None:
        self.controller.discard_items(self.selected_ids())

    # settings

    def open_settings(self) -> SettingsDialog:
        """Opens the dialog without blocking (tests and Krita both keep running)."""
        dialog = SettingsDialog(self.settings, self._samplers, self.server, self)
        dialog.setAttribute(Qt.WA_DeleteOnClose)  # else every dialog ever opened lives on
        dialog.accepted.connect(lambda: self.apply_settings(dialog.settings()))
        dialog.open()
        return dialog

    def apply_settings(self, settings: Settings | None) -> None:
        if settings is None:
            return
        self.settings = settings
        save(self.store, settings)
        sync = getattr(self.store, "sync", None)
        if callable(sync):
            sync()
        self.controller.update_settings(settings)
        self.client.configure(settings.server_url, settings.token)

    def shutdown(self) -> None:
        """Krita is closing: stop the event stream and any server we started."""
        self.selection_timer.stop()
        self.client.stop()
        self.server.stop(wait=True)  # no server we started outlives Krita
