"""The gear dialog: connection, managed local server, generation defaults.

The dialog edits a copy; `settings()` returns it only after validation passes, and
problems are listed in the dialog instead of closing it. Restore Defaults resets the
fields (not the saved settings) so the artist can still cancel.
"""

from __future__ import annotations

from dataclasses import replace

from PyQt5.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .managed_server import ManagedServer, ServerState
from .settings import LIMITS, Settings, validate


def _spin(name: str, suffix: str = "", special: str = "") -> QSpinBox:
    box = QSpinBox()
    box.setObjectName(f"kd-setting-{name}")
    box.setRange(int(LIMITS[name].low), int(LIMITS[name].high))
    if suffix:
        box.setSuffix(suffix)
    if special:
        box.setSpecialValueText(special)
    return box


class SettingsDialog(QDialog):
    def __init__(
        self,
        settings: Settings,
        samplers: list[str],
        server: ManagedServer | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("kd-settings-dialog")
        self.setWindowTitle("Krita Diffusers settings")
        self._original = settings
        self._server = server
        self._result: Settings | None = None

        self.url = QLineEdit(objectName="kd-setting-server_url")
        self.token = QLineEdit(objectName="kd-setting-token")
        self.token.setEchoMode(QLineEdit.Password)
        self.token.setPlaceholderText("only when the server asks for one")
        self.command = QLineEdit(objectName="kd-setting-server_command")
        self.sampler = QComboBox(objectName="kd-setting-sampler")
        self.sampler.setEditable(True)
        self.sampler.addItems(samplers)
        self.steps = _spin("steps")
        self.cfg = QDoubleSpinBox(objectName="kd-setting-cfg_scale")
        self.cfg.setRange(LIMITS["cfg_scale"].low, LIMITS["cfg_scale"].high)
        self.cfg.setSingleStep(0.5)
        self.resolution = _spin("working_resolution", " px", "From the model")
        self.resolution.setSingleStep(64)
        self.margin = _spin("context_margin", " px")
        self.grow = _spin("mask_grow", " px")
        self.feather = _spin("mask_feather", " px")
        self.preview = _spin("preview_every", " steps", "No previews")
        self.history = _spin("history_size", " results")
        self.errors = QLabel(objectName="kd-settings-errors")
        self.errors.setWordWrap(True)
        self.errors.setStyleSheet("color: #c0392b")
        self.errors.hide()

        layout = QVBoxLayout(self)
        layout.addWidget(self._connection_box())
        layout.addWidget(self._server_box())
        layout.addWidget(self._generation_box())
        layout.addWidget(self.errors)
        buttons = QDialogButtonBox(
            QDialogButtonBox.Ok | QDialogButtonBox.Cancel | QDialogButtonBox.RestoreDefaults
        )
        buttons.setObjectName("kd-settings-buttons")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        buttons.button(QDialogButtonBox.RestoreDefaults).clicked.connect(self.restore_defaults)
        layout.addWidget(buttons)
        self.show_settings(settings)

    def _connection_box(self) -> QGroupBox:
        box = QGroupBox("Server")
        form = QFormLayout(box)
        form.addRow("Server URL", self.url)
        form.addRow("Token", self.token)
        return box

    def _server_box(self) -> QGroupBox:
        box = QGroupBox("Local server started by Krita")
        form = QFormLayout(box)
        form.addRow("Command", self.command)
        self.server_state = QLabel("The server is stopped.", objectName="kd-server-state")
        self.start_button = QPushButton("Start server", objectName="kd-server-start")
        self.stop_button = QPushButton("Stop server", objectName="kd-server-stop")
        row = QHBoxLayout()
        row.addWidget(self.start_button)
        row.addWidget(self.stop_button)
        row.addWidget(self.server_state, 1)
        form.addRow(row)
        self.log = QPlainTextEdit(objectName="kd-server-log")
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(2000)
        self.log.setMinimumHeight(90)
        form.addRow(self.log)
        if self._server is None:
            box.setEnabled(False)
            return box
        self.log.setPlainText("\n".join(self._server.log))
        self._server.log_added.connect(self.log.appendPlainText)
        self._server.state_changed.connect(self._on_server_state)
        self.start_button.clicked.connect(self._start_server)
        self.stop_button.clicked.connect(lambda: self._server.stop())
        self._on_server_state(self._server.state, "")
        return box

    def _generation_box(self) -> QGroupBox:
        box = QGroupBox("Generation defaults")
        form = QFormLayout(box)
        form.addRow("Sampler", self.sampler)
        form.addRow("Steps", self.steps)
        form.addRow("CFG scale", self.cfg)
        form.addRow("Working resolution", self.resolution)
        form.addRow("Context margin", self.margin)
        form.addRow("Mask grow", self.grow)
        form.addRow("Mask feather", self.feather)
        form.addRow("Preview every", self.preview)
        form.addRow("History size", self.history)
        return box

    def _start_server(self) -> None:
        assert self._server is not None
        self._server.start(self.command.text(), self.url.text().strip(), self.token.text().strip())

    def _on_server_state(self, state: ServerState, text: str) -> None:
        running = state in (ServerState.STARTING, ServerState.RUNNING)
        self.start_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        if text:
            self.server_state.setText(text)

    def show_settings(self, settings: Settings) -> None:
        self.url.setText(settings.server_url)
        self.token.setText(settings.token)
        self.command.setText(settings.server_command)
        self.sampler.setCurrentText(settings.sampler)
        self.steps.setValue(settings.steps)
        self.cfg.setValue(settings.cfg_scale)
        self.resolution.setValue(settings.working_resolution)
        self.margin.setValue(settings.context_margin)
        self.grow.setValue(settings.mask_grow)
        self.feather.setValue(settings.mask_feather)
        self.preview.setValue(settings.preview_every)
        self.history.setValue(settings.history_size)

    def restore_defaults(self) -> None:
        self.show_settings(Settings())

    def edited(self) -> Settings:
        return replace(
            self._original,
            server_url=self.url.text().strip(),
            token=self.token.text().strip(),
            server_command=self.command.text().strip(),
            sampler=self.sampler.currentText().strip(),
            steps=self.steps.value(),
            cfg_scale=round(self.cfg.value(), 2),
            working_resolution=self.resolution.value(),
            context_margin=self.margin.value(),
            mask_grow=self.grow.value(),
            mask_feather=self.feather.value(),
            preview_every=self.preview.value(),
            history_size=self.history.value(),
        )

    def accept(self) -> None:
        settings = self.edited()
        problems = validate(settings)
        if problems:
            self.errors.setText("\n".join(problem.message for problem in problems))
            self.errors.show()
            return
        self._result = settings
        super().accept()

    def settings(self) -> Settings | None:
        """The accepted settings, or None when the dialog was cancelled."""
        return self._result
