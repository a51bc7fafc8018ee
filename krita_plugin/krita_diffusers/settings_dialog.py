"""The gear dialog: connection, managed local server, generation defaults.

Built from the table of fields in `settings.py`: one input per field, in its section,
with its label, limits and unit, so adding a setting never touches this file. The
dialog edits a copy; `settings()` returns it only after validation passes, and
problems are listed in the dialog instead of closing it. Restore Defaults resets the
fields (not the saved settings) so the artist can still cancel.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .family_settings import FamilyRules, family_note, hidden_fields, rules_for
from .managed_server import ManagedServer, ServerState
from .qt import (
    QCheckBox,
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
from .settings import (
    BOOLEAN,
    CHOICE,
    DECIMAL,
    FIELDS,
    GENERATION,
    INTEGER,
    LOCAL_SERVER,
    SECRET,
    SECTIONS,
    VAE,
    FieldSpec,
    Settings,
    validate,
)
from .widgets import named

OK = QDialogButtonBox.StandardButton.Ok
CANCEL = QDialogButtonBox.StandardButton.Cancel
RESTORE = QDialogButtonBox.StandardButton.RestoreDefaults


class FieldInput:
    """One setting's input widget, read and written as the setting's Python value."""

    def __init__(
        self, name: str, spec: FieldSpec, samplers: list[str], vaes: list[str] | None = None
    ) -> None:
        self.name = name
        self.spec = spec
        self.widget = self._make(samplers, vaes or [])
        self.widget.setObjectName(f"kd-setting-{name}")

    def _make(self, samplers: list[str], vaes: list[str]) -> QWidget:
        spec = self.spec
        if spec.kind == VAE:
            # Data "" = the checkpoint's own; a name the server no longer lists is
            # added when shown (`set`), so it is never silently dropped.
            choice = QComboBox()
            choice.addItem(spec.special, "")
            for name in vaes:
                choice.addItem(name, name)
            return choice
        if spec.kind == INTEGER:
            box = QSpinBox()
            box.setRange(int(spec.low or 0), int(spec.high or 0))
            box.setSingleStep(int(spec.step))
            box.setSuffix(spec.unit)
            box.setSpecialValueText(spec.special)
            return box
        if spec.kind == DECIMAL:
            number = QDoubleSpinBox()
            number.setRange(spec.low or 0.0, spec.high or 0.0)
            number.setSingleStep(spec.step)
            number.setSuffix(spec.unit)
            return number
        if spec.kind == BOOLEAN:
            return QCheckBox()
        if spec.kind == CHOICE:
            combo = QComboBox()
            combo.setEditable(True)
            combo.addItems(samplers)
            return combo
        line = QLineEdit()
        line.setPlaceholderText(spec.placeholder)
        if spec.kind == SECRET:
            line.setEchoMode(QLineEdit.EchoMode.Password)
        return line

    def set(self, value: Any) -> None:
        widget = self.widget
        if isinstance(widget, QCheckBox):
            widget.setChecked(bool(value))
        elif isinstance(widget, (QSpinBox, QDoubleSpinBox)):
            widget.setValue(value)
        elif isinstance(widget, QComboBox) and self.spec.kind == VAE:
            index = widget.findData(str(value))
            if index < 0:
                widget.addItem(f"{value} (not on the server)", str(value))
                index = widget.count() - 1
            widget.setCurrentIndex(index)
        elif isinstance(widget, QComboBox):
            widget.setCurrentText(str(value))
        elif isinstance(widget, QLineEdit):
            widget.setText(str(value))

    def get(self) -> Any:
        widget = self.widget
        if isinstance(widget, QCheckBox):
            return widget.isChecked()
        if isinstance(widget, QDoubleSpinBox):
            return round(widget.value(), 2)
        if isinstance(widget, QSpinBox):
            return widget.value()
        if isinstance(widget, QComboBox) and self.spec.kind == VAE:
            return str(widget.currentData() or "")
        if isinstance(widget, QComboBox):
            return widget.currentText().strip()
        assert isinstance(widget, QLineEdit)
        return widget.text().strip()


class SettingsDialog(QDialog):
    def __init__(
        self,
        settings: Settings,
        samplers: list[str],
        server: ManagedServer | None = None,
        parent: QWidget | None = None,
        vaes: list[str] | None = None,
        rules: FamilyRules | None = None,
    ) -> None:
        """`vaes`: the server's usable VAE files; `rules`: the chosen checkpoint's
        family, whose settings that do not apply are hidden (and said why)."""
        super().__init__(parent)
        self.setObjectName("kd-settings-dialog")
        self.setWindowTitle("Krita Diffusers settings")
        self._original = settings
        self._server = server
        self._result: Settings | None = None
        self.rules = rules or rules_for(None)
        self.inputs = {name: FieldInput(name, spec, samplers, vaes) for name, spec in FIELDS}
        self.family_note = named(QLabel(), "kd-settings-family")
        self.family_note.setWordWrap(True)
        self.errors = named(QLabel(), "kd-settings-errors")
        self.errors.setWordWrap(True)
        self.errors.setStyleSheet("color: #c0392b")
        self.errors.hide()

        layout = QVBoxLayout(self)
        for section in SECTIONS:
            layout.addWidget(self._section(section))
        layout.addWidget(self.errors)
        # The styles editor has its own dialog (it saves files at once, not on OK);
        # the docker that opened this one connects the button to it.
        self.styles_button = named(QPushButton("Styles…"), "kd-settings-styles")
        self.styles_button.setToolTip("Create, edit, duplicate, delete and import styles")
        layout.addWidget(self.styles_button)
        buttons = QDialogButtonBox()
        # One at a time: OR-ing the scoped buttons is an int to PyQt5's stubs.
        for button in (OK, CANCEL, RESTORE):
            buttons.addButton(button)
        buttons.setObjectName("kd-settings-buttons")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        restore = buttons.button(RESTORE)
        if restore is not None:  # always: the box was made with it
            restore.clicked.connect(self.restore_defaults)
        layout.addWidget(buttons)
        self.show_settings(settings)

    def input(self, name: str) -> QWidget:
        """The input widget of one setting (tests and scripts reach fields by name)."""
        return self.inputs[name].widget

    def _section(self, section: str) -> QGroupBox:
        box = QGroupBox(section)
        form = QFormLayout(box)
        hidden = hidden_fields(self.rules)
        for field_input in self.inputs.values():
            if field_input.spec.section == section:
                form.addRow(field_input.spec.label, field_input.widget)
                if field_input.name in hidden:
                    field_input.widget.setVisible(False)
                    label = form.labelForField(field_input.widget)
                    if label is not None:
                        label.setVisible(False)
        if section == GENERATION:
            note = family_note(self.rules)
            self.family_note.setText(note)
            self.family_note.setVisible(bool(note))
            form.addRow(self.family_note)
        if section == LOCAL_SERVER:
            self._add_server_controls(box, form)
        return box

    def _add_server_controls(self, box: QGroupBox, form: QFormLayout) -> None:
        self.server_state = named(QLabel("The server is stopped."), "kd-server-state")
        self.start_button = named(QPushButton("Start server"), "kd-server-start")
        self.stop_button = named(QPushButton("Stop server"), "kd-server-stop")
        row = QHBoxLayout()
        row.addWidget(self.start_button)
        row.addWidget(self.stop_button)
        row.addWidget(self.server_state, 1)
        form.addRow(row)
        self.log = named(QPlainTextEdit(), "kd-server-log")
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(2000)
        self.log.setMinimumHeight(90)
        form.addRow(self.log)
        server = self._server
        if server is None:
            box.setEnabled(False)
            return
        self.log.setPlainText("\n".join(server.log))
        server.log_added.connect(self.log.appendPlainText)
        server.state_changed.connect(self._on_server_state)
        self.start_button.clicked.connect(self._start_server)
        # not `connect(server.stop)`: Qt would pass the button's `checked` as `wait`
        self.stop_button.clicked.connect(lambda: server.stop())
        self._on_server_state(server.state, "")

    def _start_server(self) -> None:
        assert self._server is not None
        edited = self.edited()
        self._server.start(edited.server_command, edited.server_url, edited.token)

    def _on_server_state(self, state: ServerState, text: str) -> None:
        running = state in (ServerState.STARTING, ServerState.RUNNING)
        self.start_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        if text:
            self.server_state.setText(text)

    def show_settings(self, settings: Settings) -> None:
        for name, field_input in self.inputs.items():
            field_input.set(getattr(settings, name))

    def restore_defaults(self) -> None:
        self.show_settings(Settings())

    def edited(self) -> Settings:
        values = {name: field_input.get() for name, field_input in self.inputs.items()}
        return replace(self._original, **values)

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
