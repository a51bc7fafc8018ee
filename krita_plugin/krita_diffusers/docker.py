"""The docker panel: widgets wired to the controller and the shared plugin core,
nothing more.

Every control has an objectName (kd-...) so tests and scripts can find it. The panel
talks to Krita only through the `CanvasAdapter` (and an optional `open_image`
function) it is given. Its content sits in a scroll area: Krita gives a docker only
part of a column it shares with other dockers, and every control must stay reachable
in whatever room that leaves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from .background import Background
from .canvas import CanvasAdapter, DocumentCanvas
from .client import ConnectionState
from .control import (
    ControlChoice,
    ControlRow,
    ReferenceSetting,
    choices_for,
    reference_models_for,
)
from .controller import Controller, GenerateInput
from .core import PluginCore
from .family_settings import (
    FAMILIES_PROTOCOL,
    FamilyRules,
    JobChoices,
    defaults_for,
    job_fields,
    label,
    memory_modes,
    memory_text,
    rules_for,
    sampling_text,
)
from .guidance import WHAT_NEXT, first_image_path, is_local, unreachable_hint
from .history import HistoryItem
from .images import THUMBNAIL, image_png
from .jobs import Job, JobStatus
from .live import POLL_MS
from .live_mode import NOT_FAST, LiveMode, LiveSettings
from .managed_server import ServerState
from .model_catalogue import loras_for, with_trigger_words
from .model_defaults import ModelDefaults, sampling_of, with_sampling
from .models_dialog import ModelsDialog
from .planning import action_label
from .protocol import Lora, ModelList, is_unreachable_message
from .qt import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QIcon,
    QImage,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPixmap,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRegularExpression,
    QRegularExpressionValidator,
    QResizeEvent,
    QScrollArea,
    QSize,
    QSizePolicy,
    QSlider,
    QSpinBox,
    Qt,
    QTimer,
    QToolButton,
    QVBoxLayout,
    QWidget,
    device_pixel_ratio,
)
from .recipes import (
    ANNOTATION,
    DESCRIPTION,
    Recipe,
    SavedHistory,
    SavedResult,
    decode,
    encode,
    with_result,
)
from .resize_boxes import ExpandBox, UpscaleBox
from .settings import Settings
from .settings_dialog import SettingsDialog
from .styles import (
    Sampling,
    Style,
    StyleLibrary,
    live_sampling_for,
    load_library,
    prompts_for,
    sampling_for,
    styles_folder,
)
from .styles_dialog import StylesDialog
from .widgets import named, tool_button

#: The style chosen last, in the plugin's settings group: chosen again next time.
STYLE_KEY = "krita_diffusers/style"
SELECTION_POLL_MS = 700  # Krita's Python API has no "selection changed" signal
MAX_SEED = 2**32 - 1  # the protocol's seed range
PREVIEW_SIZE = 256
STATE_COLOURS = {
    ConnectionState.CONNECTED: "#2e7d32",
    ConnectionState.CONNECTING: "#8d6e00",
    ConnectionState.UNREACHABLE: "#c0392b",
    ConnectionState.REFUSED: "#c0392b",
}

OpenImage = Callable[[Path], None]


class FittedPreview(QLabel):
    """The live preview and the chosen result, fitted to the room the docker gives
    it, aspect kept. Hidden while there is nothing to show.

    A plain QLabel sizes itself to its pixmap, so a narrow or short docker crops the
    picture; this one keeps the (already small) source and rescales on resize.
    """

    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("kd-preview")
        self._source = QPixmap()
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setMinimumSize(64, 64)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setVisible(False)

    def show_image(self, image: QImage) -> None:
        self._source = QPixmap.fromImage(image)
        self.setVisible(not self._source.isNull())
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

    def resizeEvent(self, event: QResizeEvent | None) -> None:
        super().resizeEvent(event)
        self._fit()

    def _fit(self) -> None:
        """Scaled in device pixels and tagged with the screen's ratio, so a 200% or
        Retina display shows the (up to 512 px) view sharp at the same on-screen size."""
        if self._source.isNull():
            return
        width, height = min(self.width(), PREVIEW_SIZE), min(self.height(), PREVIEW_SIZE)
        ratio = device_pixel_ratio(self)
        pixmap = self._source.scaled(
            round(width * ratio),
            round(height * ratio),
            Qt.AspectRatioMode.KeepAspectRatio,
            Qt.TransformationMode.SmoothTransformation,
        )
        pixmap.setDevicePixelRatio(ratio)
        self.setPixmap(pixmap)


class LoraRow(QWidget):
    """One chosen LoRA: its name, a weight, and a button to take it off."""

    def __init__(self, name: str, weight: float, parent: QWidget) -> None:
        super().__init__(parent)
        self.setObjectName("kd-lora-row")
        self.name = name
        self.weight = named(QDoubleSpinBox(), "kd-lora-weight")
        self.weight.setRange(-2.0, 2.0)
        self.weight.setSingleStep(0.05)
        self.weight.setValue(weight)
        self.remove = tool_button("kd-lora-remove", "✕")
        self.remove.setToolTip("Remove this LoRA")
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel(name), 1)
        row.addWidget(self.weight)
        row.addWidget(self.remove)


class LayerCombo(QComboBox):
    """A layer picker that lists the document's layers afresh each time it opens
    (Krita's Python API has no "layers changed" signal), keeping the chosen one."""

    def __init__(self, canvas: CanvasAdapter, name: str) -> None:
        super().__init__()
        self.setObjectName(name)
        self.canvas = canvas
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.refresh()

    def refresh(self, select: str | None = None) -> None:
        """Lists the layers again; `select` (a layer id) becomes the chosen one."""
        chosen = select if select is not None else self.currentData()
        self.blockSignals(True)
        self.clear()
        for layer in self.canvas.list_layers():
            self.addItem(layer.name, layer.layer_id)
        index = self.findData(chosen) if chosen is not None else -1
        self.setCurrentIndex(index if index >= 0 else (0 if self.count() else -1))
        self.blockSignals(False)

    def showPopup(self) -> None:
        self.refresh()
        super().showPopup()


class ControlRowWidget(QWidget):
    """One control: the layer it follows, the model (and mode), a strength, a button
    that makes a control layer from the canvas, and one that removes the row."""

    def __init__(self, number: int, canvas: CanvasAdapter, parent: QWidget) -> None:
        super().__init__(parent)
        self.setObjectName(f"kd-control-row-{number}")
        self.number = number
        self.layer = LayerCombo(canvas, f"kd-control-layer-{number}")
        self.layer.setToolTip("The layer this control follows (hidden layers work too)")
        self.mode = named(QComboBox(), f"kd-control-mode-{number}")
        self.mode.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.mode.setToolTip("The ControlNet, and what the layer shows")
        self.strength = named(QDoubleSpinBox(), f"kd-control-strength-{number}")
        self.strength.setRange(0.0, 2.0)
        self.strength.setSingleStep(0.05)
        self.strength.setValue(1.0)
        self.strength.setToolTip("0: no effect, 1: as trained, up to 2")
        self.preprocess = tool_button(f"kd-control-preprocess-{number}", "From canvas")
        self.preprocess.setToolTip(
            "Make this mode's control image from the picture, as a new layer to edit"
        )
        self.remove = tool_button(f"kd-control-remove-{number}", "✕")
        self.remove.setToolTip("Remove this control")
        self.range_toggle = tool_button(f"kd-control-range-toggle-{number}", "Range")
        self.range_toggle.setCheckable(True)
        self.range_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.range_toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.range_toggle.setToolTip("The part of the steps this control acts on")
        self.start = self._fraction(f"kd-control-start-{number}", 0.0)
        self.end = self._fraction(f"kd-control-end-{number}", 1.0)
        self.range_box = QWidget()
        range_line = QHBoxLayout(self.range_box)
        range_line.setContentsMargins(0, 0, 0, 0)
        range_line.addWidget(QLabel("From"))
        range_line.addWidget(self.start)
        range_line.addWidget(QLabel("to"))
        range_line.addWidget(self.end)
        range_line.addStretch(1)
        self.range_box.setVisible(False)
        self.range_toggle.toggled.connect(self._toggle_range)
        top = QHBoxLayout()
        top.addWidget(self.layer, 1)
        top.addWidget(self.remove)
        bottom = QHBoxLayout()
        bottom.addWidget(self.mode, 1)
        bottom.addWidget(self.strength)
        bottom.addWidget(self.preprocess)
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 4)
        column.addLayout(top)
        column.addLayout(bottom)
        column.addWidget(self.range_toggle)
        column.addWidget(self.range_box)

    @staticmethod
    def _fraction(name: str, value: float) -> QDoubleSpinBox:
        box = named(QDoubleSpinBox(), name)
        box.setRange(0.0, 1.0)
        box.setSingleStep(0.05)
        box.setValue(value)
        return box

    def _toggle_range(self, shown: bool) -> None:
        self.range_box.setVisible(shown)
        self.range_toggle.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)

    def set_choices(self, choices: list[ControlChoice]) -> None:
        """The models that fit the checkpoint; the current choice is kept if it still
        fits."""
        chosen = self.mode.currentData()
        self.mode.clear()
        for choice in choices:
            self.mode.addItem(choice.label, choice)
        index = self.mode.findData(chosen) if chosen is not None else -1
        self.mode.setCurrentIndex(max(0, index) if choices else -1)
        self._refresh_preprocess()

    def _refresh_preprocess(self) -> None:
        choice = self.choice()
        self.preprocess.setEnabled(choice is not None and choice.mode is not None)

    def choice(self) -> ControlChoice | None:
        data = self.mode.currentData()
        return data if isinstance(data, ControlChoice) else None

    def row(self) -> ControlRow:
        layer = self.layer.currentData()
        return ControlRow(
            layer if isinstance(layer, str) else None,
            self.choice(),
            round(self.strength.value(), 3),
            round(self.start.value(), 3),
            round(self.end.value(), 3),
        )


class ReferenceBox(QWidget):
    """The reference picture (IP-Adapter): its model, a layer or an image file, and a
    weight. Shown while *Reference* is on."""

    def __init__(self, canvas: CanvasAdapter, parent: QWidget) -> None:
        super().__init__(parent)
        self.setObjectName("kd-reference")
        self.path: str | None = None
        self.model = named(QComboBox(), "kd-reference-model")
        self.model.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.layer = LayerCombo(canvas, "kd-reference-layer")
        self.layer.setToolTip("The layer whose look the result borrows (hidden ones work)")
        self.file_button = tool_button("kd-reference-file", "File…")
        self.file_button.setToolTip("Use an image file instead of a layer")
        self.path_label = _wrapped_label("kd-reference-path")
        self.path_label.setVisible(False)
        self.weight = named(QDoubleSpinBox(), "kd-reference-weight")
        self.weight.setRange(0.0, 2.0)
        self.weight.setSingleStep(0.05)
        self.weight.setValue(0.6)
        source = QHBoxLayout()
        source.addWidget(self.layer, 1)
        source.addWidget(self.file_button)
        line = QHBoxLayout()
        line.addWidget(self.model, 1)
        line.addWidget(self.weight)
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.addLayout(line)
        column.addLayout(source)
        column.addWidget(self.path_label)
        self.layer.activated.connect(lambda _index: self.use_file(None))

    def use_file(self, path: str | None) -> None:
        """An image file replaces the layer as the picture; None goes back to it."""
        self.path = path
        self.path_label.setText(f"File: {path}" if path else "")
        self.path_label.setVisible(bool(path))

    def set_models(self, names: list[str]) -> None:
        chosen = self.model.currentText()
        self.model.clear()
        self.model.addItems(names)
        index = self.model.findText(chosen)
        self.model.setCurrentIndex(max(0, index) if names else -1)

    def setting(self) -> ReferenceSetting:
        layer = self.layer.currentData()
        return ReferenceSetting(
            self.model.currentText() or None,
            layer if isinstance(layer, str) else None,
            self.path,
            round(self.weight.value(), 3),
        )


def _wrapped_label(name: str, colour: str = "") -> QLabel:
    label = named(QLabel(), name)
    label.setWordWrap(True)
    label.setTextInteractionFlags(
        Qt.TextInteractionFlag.TextSelectableByMouse
    )  # a command can be copied
    label.setSizePolicy(
        QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred
    )  # wrap, never widen
    if colour:
        label.setStyleSheet(f"color: {colour}")
    return label


class DiffusersPanel(QWidget):
    def __init__(
        self,
        canvas: DocumentCanvas,
        core: PluginCore,
        open_image: OpenImage | None = None,
        parent: QWidget | None = None,
        styles: Path | None = None,
    ) -> None:
        """`styles`: the artist's styles folder (tests give their own)."""
        super().__init__(parent)
        self.setObjectName("kd-panel")
        self.canvas = canvas
        self.core = core
        self.client = core.client
        self.server = core.server
        self.open_image = open_image
        self.controller = Controller(self.client, canvas, core.settings)
        self.live = LiveMode(
            self.client, canvas, Background(slots=1).run, core.settings.context_margin
        )
        self.lora_rows: list[LoraRow] = []
        self.control_rows: list[ControlRowWidget] = []
        self._control_count = 0  # numbers rows; never reused, so names stay unique
        self.models = ModelList([], [])
        self._icons: dict[int, QIcon] = {}  # history icons by item id, made once
        self._has_selection = False
        self._connection_text = ""
        self._health: object = self.client.health  # the server's last /v1/health
        self._model_before: str | None = None  # the model chosen before the current one
        #: the sampling SD models had when a Flux / SD 3.5 model was chosen
        self._classic_sampling: Sampling | None = None
        self.styles_folder = styles or styles_folder()
        self.style_library = StyleLibrary()
        self.model_defaults = ModelDefaults(core.store)
        self.saved = SavedHistory()  # the active document's, as read from its file
        self._saved_document = ""
        self._build()
        self._wire()
        self._refresh_label()
        self.reload_styles(self.core.store.value(STYLE_KEY) or None)
        self.load_saved_history()
        core.attach()
        self._on_connection(self.client.state, self.client.state_text)

    @property
    def settings(self) -> Settings:
        return self.core.settings

    # building

    def _build(self) -> None:
        self.connection = _wrapped_label("kd-connection")
        self.connection.setText("Connecting…")
        self.settings_button = tool_button("kd-settings", "⚙")
        self.settings_button.setToolTip("Settings: server, local server, generation defaults")
        self.start_server_button = named(QPushButton("Start server"), "kd-start-server")
        self.start_server_button.setToolTip(
            "Start the local server with the command in the settings"
        )
        self.start_server_button.setVisible(False)
        top = QHBoxLayout()
        top.addWidget(self.connection, 1)
        top.addWidget(self.settings_button, 0, Qt.AlignmentFlag.AlignTop)

        self.welcome = named(QFrame(), "kd-welcome")
        self.welcome.setFrameShape(QFrame.Shape.StyledPanel)
        self.welcome_text = _wrapped_label("kd-welcome-text")
        self.welcome_text.setText(WHAT_NEXT)
        self.open_first_image = named(QPushButton("Open the first image"), "kd-open-first-image")
        self.welcome_close = tool_button("kd-welcome-close", "✕")
        self.welcome_close.setToolTip("Hide this")
        welcome_buttons = QHBoxLayout()
        welcome_buttons.addWidget(self.open_first_image)
        welcome_buttons.addStretch(1)
        welcome_buttons.addWidget(self.welcome_close)
        welcome_layout = QVBoxLayout(self.welcome)
        welcome_layout.setContentsMargins(6, 6, 6, 6)
        welcome_layout.addWidget(self.welcome_text)
        welcome_layout.addLayout(welcome_buttons)
        self.welcome.setVisible(False)

        self.prompt = named(QPlainTextEdit(), "kd-prompt")
        self.prompt.setPlaceholderText("Prompt: what should appear")
        self.prompt.setMaximumHeight(64)
        self.negative_toggle = tool_button("kd-negative-toggle", "Negative prompt")
        self.negative_toggle.setCheckable(True)
        self.negative_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.negative_toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.negative = named(QPlainTextEdit(), "kd-negative-prompt")
        self.negative.setPlaceholderText("What should not appear")
        self.negative.setMaximumHeight(52)
        self.negative.setVisible(False)

        self.style_choice = named(QComboBox(), "kd-style")
        self.style_choice.setToolTip(
            "A style sets the model, sampling, LoRAs and wraps your prompt"
        )
        self.style_choice.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.style_edit = tool_button("kd-style-edit", "Edit…")
        self.style_edit.setToolTip("Create, edit, duplicate, delete and import styles")
        style_line = QHBoxLayout()
        style_line.addWidget(self.style_choice, 1)
        style_line.addWidget(self.style_edit)
        self.sampling = _wrapped_label("kd-sampling")
        self.sampling.setToolTip(
            "The sampling of the next job: the style's, else the model's remembered one "
            "(set in the gear dialog; each model remembers its own)"
        )
        self.memory = _wrapped_label("kd-memory")
        self.memory.setToolTip(
            "How the server fits this model in the graphics card's memory, and why "
            "(a style can ask for another mode)"
        )
        self.memory.setVisible(False)
        self.model = named(QComboBox(), "kd-model")
        self.model.addItem("Server default", None)
        self.model.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.models_button = tool_button("kd-models", "Models…")
        self.models_button.setToolTip(
            "Every model on the server, per family, and why a file is not listed"
        )
        model_line = QHBoxLayout()
        model_line.addWidget(self.model, 1)
        model_line.addWidget(self.models_button)
        self.lora_choice = named(QComboBox(), "kd-lora-choice")
        self.lora_choice.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.lora_add = tool_button("kd-lora-add", "Add")
        self.lora_box = QVBoxLayout()
        self.lora_box.setContentsMargins(0, 0, 0, 0)
        lora_line = QHBoxLayout()
        lora_line.addWidget(self.lora_choice, 1)
        lora_line.addWidget(self.lora_add)

        self.strength = named(QSlider(Qt.Orientation.Horizontal), "kd-strength")
        self.strength.setRange(1, 100)
        self.strength.setValue(100)
        self.strength_value = named(QLabel("100%"), "kd-strength-value")
        strength_line = QHBoxLayout()
        strength_line.addWidget(self.strength, 1)
        strength_line.addWidget(self.strength_value)

        self.batch = named(QSpinBox(), "kd-batch")
        self.batch.setRange(1, 8)
        self.seed = named(QLineEdit(), "kd-seed")
        self.seed.setValidator(
            QRegularExpressionValidator(QRegularExpression(r"\d{0,10}"), self.seed)
        )
        self.seed.setPlaceholderText("random")
        self.seed_lock = tool_button("kd-seed-lock", "Lock")
        self.seed_lock.setCheckable(True)
        self.seed_lock.setToolTip("Locked: reuse this seed. Unlocked: a new random seed each time.")
        seed_line = QHBoxLayout()
        seed_line.addWidget(QLabel("Batch"))
        seed_line.addWidget(self.batch)
        seed_line.addWidget(QLabel("Seed"))
        seed_line.addWidget(self.seed, 1)
        seed_line.addWidget(self.seed_lock)

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Style", style_line)
        form.addRow("Model", model_line)
        form.addRow("Sampling", self.sampling)
        form.addRow("", self.memory)
        form.addRow("LoRA", lora_line)
        form.addRow("", self.lora_box)
        form.addRow("Strength", strength_line)

        self.control_add = tool_button("kd-control-add", "Add control")
        self.control_add.setToolTip(
            "Make the picture follow a layer: depth, edges, line art, a pose…"
        )
        self.control_box = QVBoxLayout()
        self.control_box.setContentsMargins(0, 0, 0, 0)
        control_line = QHBoxLayout()
        control_line.addWidget(QLabel("Control"))
        control_line.addStretch(1)
        control_line.addWidget(self.control_add)

        self.reference_toggle = tool_button("kd-reference-toggle", "Reference")
        self.reference_toggle.setCheckable(True)
        self.reference_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.reference_toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.reference_toggle.setToolTip("Borrow the look of a picture (IP-Adapter)")
        self.reference = ReferenceBox(self.canvas, self)
        self.reference.setVisible(False)

        self.generate_button = named(QPushButton("Generate"), "kd-generate")
        self.cancel_button = named(QPushButton("Cancel"), "kd-cancel")
        self.cancel_button.setEnabled(False)
        actions = QHBoxLayout()
        actions.addWidget(self.generate_button, 1)
        actions.addWidget(self.cancel_button)
        self.live_toggle = named(QCheckBox("Live"), "kd-live")
        self.live_toggle.setToolTip(
            "Follow your painting: after each pause the region is redrawn at the chosen "
            "strength (shown here, not on the canvas, until you apply it)"
        )
        self.live_apply = named(QPushButton("Apply live"), "kd-live-apply")
        self.live_apply.setToolTip("Copy the current live result into a new layer")
        self.live_apply.setEnabled(False)
        live_line = QHBoxLayout()
        live_line.addWidget(self.live_toggle)
        live_line.addWidget(self.live_apply, 1)
        self.live_note = _wrapped_label("kd-live-note", "#8d6e00")
        self.live_note.setVisible(False)

        self.upscale_toggle = self._section_toggle("kd-upscale-toggle", "Upscale")
        self.upscale_toggle.setToolTip("Enlarge the whole picture, refined with the prompt")
        self.upscale_box = UpscaleBox(self)
        self.upscale_box.setVisible(False)
        self.expand_toggle = self._section_toggle("kd-expand-toggle", "Expand")
        self.expand_toggle.setToolTip("Grow the canvas and paint the new area (outpaint)")
        self.expand_box = ExpandBox(self)
        self.expand_box.setVisible(False)
        sections = QHBoxLayout()
        sections.addWidget(self.upscale_toggle)
        sections.addWidget(self.expand_toggle)
        sections.addStretch(1)

        self.progress = named(QProgressBar(), "kd-progress")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("Idle")
        self.preview = FittedPreview()
        self.error = _wrapped_label("kd-error", "#c0392b")
        self.error.setVisible(False)
        self.notice = _wrapped_label("kd-notice", "#8d6e00")
        self.notice.setVisible(False)
        self.retry_button = named(QPushButton("Retry"), "kd-retry")
        self.retry_button.setToolTip("Download the results that could not be downloaded")
        self.retry_button.setVisible(False)

        self.history = named(QListWidget(), "kd-history")
        self.history.setViewMode(QListWidget.ViewMode.IconMode)
        self.history.setIconSize(QSize(THUMBNAIL, THUMBNAIL))
        self.history.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.history.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.history.setMinimumHeight(THUMBNAIL + 36)
        self.apply_button = named(QPushButton("Apply"), "kd-apply")
        self.apply_button.setToolTip("Make the selected results permanent layers")
        self.discard_button = named(QPushButton("Discard"), "kd-discard")
        self.saved_label = _wrapped_label("kd-history-saved-label")
        self.saved_label.setText("Saved with this document")
        self.saved_list = named(QListWidget(), "kd-history-saved")
        self.saved_list.setToolTip(
            "Results of earlier sessions, kept in the document's file: select one and "
            "Reuse its recipe or its seed"
        )
        self.saved_list.setViewMode(QListWidget.ViewMode.IconMode)
        self.saved_list.setIconSize(QSize(THUMBNAIL, THUMBNAIL))
        self.saved_list.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.saved_list.setMinimumHeight(THUMBNAIL + 36)
        self.saved_label.setVisible(False)
        self.saved_list.setVisible(False)
        self.reuse_button = named(QPushButton("Reuse"), "kd-history-reuse")
        self.reuse_button.setToolTip(
            "Put the selected result's prompt, style, model, LoRAs, sampling, strength "
            "and seed back into the docker"
        )
        self.reuse_seed_button = named(QPushButton("Reuse seed"), "kd-history-reuse-seed")
        self.reuse_seed_button.setToolTip("Lock the selected result's seed, nothing else")
        history_buttons = QHBoxLayout()
        history_buttons.addWidget(self.apply_button)
        history_buttons.addWidget(self.discard_button)
        reuse_buttons = QHBoxLayout()  # a row of its own: the docker stays narrow
        reuse_buttons.addWidget(self.reuse_button)
        reuse_buttons.addWidget(self.reuse_seed_button)

        content = named(QWidget(), "kd-content")
        layout = QVBoxLayout(content)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addWidget(self.start_server_button)
        layout.addWidget(self.welcome)
        layout.addWidget(self.prompt)
        layout.addWidget(self.negative_toggle)
        layout.addWidget(self.negative)
        layout.addLayout(form)
        layout.addLayout(seed_line)
        layout.addLayout(control_line)
        layout.addLayout(self.control_box)
        layout.addWidget(self.reference_toggle)
        layout.addWidget(self.reference)
        layout.addLayout(actions)
        layout.addLayout(live_line)
        layout.addWidget(self.live_note)
        layout.addLayout(sections)
        layout.addWidget(self.upscale_box)
        layout.addWidget(self.expand_box)
        layout.addWidget(self.progress)
        layout.addWidget(self.error)
        layout.addWidget(self.notice)
        layout.addWidget(self.retry_button)
        layout.addWidget(self.preview)
        layout.addWidget(self.history, 1)
        layout.addLayout(history_buttons)
        layout.addLayout(reuse_buttons)
        layout.addWidget(self.saved_label)
        layout.addWidget(self.saved_list)

        self.scroll_area = named(QScrollArea(), "kd-scroll")
        self.scroll_area.setWidgetResizable(True)
        self.scroll_area.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll_area.setWidget(content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.scroll_area)

    @staticmethod
    def _section_toggle(name: str, text: str) -> QToolButton:
        """A checkable arrow button that shows or hides a section."""
        button = tool_button(name, text)
        button.setCheckable(True)
        button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        button.setArrowType(Qt.ArrowType.RightArrow)
        return button

    def _wire(self) -> None:
        self.settings_button.clicked.connect(self._on_settings_button)
        self.upscale_toggle.toggled.connect(
            lambda shown: self._toggle_section(self.upscale_toggle, self.upscale_box, shown)
        )
        self.expand_toggle.toggled.connect(
            lambda shown: self._toggle_section(self.expand_toggle, self.expand_box, shown)
        )
        self.upscale_box.button.clicked.connect(self.upscale)
        self.expand_box.button.clicked.connect(self.expand)
        self.start_server_button.clicked.connect(self.start_server)
        self.open_first_image.clicked.connect(self._open_first_image)
        self.welcome_close.clicked.connect(lambda: self.welcome.setVisible(False))
        self.negative_toggle.toggled.connect(self._toggle_negative)
        self.strength.valueChanged.connect(self._refresh_label)
        self.lora_add.clicked.connect(self._add_chosen_lora)
        self.control_add.clicked.connect(self._on_control_add)
        self.reference_toggle.toggled.connect(self._toggle_reference)
        self.reference.file_button.clicked.connect(self._choose_reference_file)
        self.model.currentIndexChanged.connect(lambda _index: self._refresh_control_choices())
        self.model.currentIndexChanged.connect(lambda _index: self._on_model_chosen())
        self.style_choice.currentIndexChanged.connect(lambda _index: self._on_style())
        self.style_edit.clicked.connect(self._on_style_edit)
        self.models_button.clicked.connect(self._on_models_button)
        self.model.currentIndexChanged.connect(lambda _index: self._refresh_lora_choice())
        self.seed.textEdited.connect(lambda _text: self.seed_lock.setChecked(True))
        self.generate_button.clicked.connect(self.generate)
        self.cancel_button.clicked.connect(self.cancel)
        self.retry_button.clicked.connect(self.controller.retry_downloads)
        self.apply_button.clicked.connect(self.apply_selected)
        self.discard_button.clicked.connect(self.discard_selected)
        self.reuse_button.clicked.connect(self.reuse_selected)
        self.reuse_seed_button.clicked.connect(self.reuse_selected_seed)
        self.saved_list.itemSelectionChanged.connect(self._on_saved_selection)
        self.history.itemSelectionChanged.connect(self._on_history_selection)
        self.history.itemDoubleClicked.connect(lambda _item: self.apply_selected())

        self.client.state_changed.connect(self._on_connection)
        self.client.models_changed.connect(self._on_models)
        self.client.health_changed.connect(self._on_health)
        self.model.currentIndexChanged.connect(lambda _index: self._apply_family())
        self.server.state_changed.connect(self._on_server_state)
        self.core.settings_changed.connect(self._on_settings)
        self.controller.job_updated.connect(self._on_job)
        self.controller.preview_ready.connect(self.preview.show_image)
        self.controller.history_changed.connect(self._refresh_history)
        self.controller.history_changed.connect(self._refresh_saved)
        self.controller.result_added.connect(self._on_result)
        self.controller.result_added.connect(lambda _item: self._ask_health())
        self.controller.seed_used.connect(self._on_seed)
        self.controller.message.connect(self.show_message)
        self.controller.notice.connect(self.show_notice)
        self.controller.retry_available.connect(self.retry_button.setVisible)

        self.live_toggle.toggled.connect(self.set_live)
        self.live_apply.clicked.connect(self.apply_live)
        self.live.frame_ready.connect(self._on_live_frame)
        self.live.message.connect(self.show_message)
        self.prompt.textChanged.connect(self._live_settings_changed)
        self.negative.textChanged.connect(self._live_settings_changed)
        self.strength.valueChanged.connect(lambda _value: self._live_settings_changed())
        self.model.currentIndexChanged.connect(lambda _index: self._live_settings_changed())
        self.live_timer = QTimer(self)
        self.live_timer.setInterval(POLL_MS)
        self.live_timer.timeout.connect(self.live.poll)

        self.selection_timer = QTimer(self)
        self.selection_timer.setInterval(SELECTION_POLL_MS)
        self.selection_timer.timeout.connect(self._refresh_label)
        self.selection_timer.start()

    # small reactions

    @staticmethod
    def _toggle_section(toggle: QToolButton, box: QWidget, shown: bool) -> None:
        box.setVisible(shown)
        toggle.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)

    def _toggle_negative(self, shown: bool) -> None:
        self.negative.setVisible(shown)
        self.negative_toggle.setArrowType(
            Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow
        )

    def _refresh_label(self) -> None:
        self.strength_value.setText(f"{self.strength.value()}%")
        try:
            self._has_selection = self.canvas.selection_bounds() is not None
        except Exception:  # a closing document must not break the panel
            self._has_selection = False
        self.generate_button.setText(action_label(self.strength.value(), self._has_selection))

    def document_changed(self) -> None:
        """Krita said the active document changed (another view, a document closed):
        refresh now what otherwise waits for the next poll, the action's label and the
        layer pickers. Krita versions without such a signal rely on the polling alone."""
        self._refresh_label()
        for row in self.control_rows:
            row.layer.refresh()
        self.reference.layer.refresh()
        self.load_saved_history()

    def show_message(self, text: str) -> None:
        """The error line. "Cannot reach the server" is said once, by the connection
        line above it, which stays until the server answers; a click on Generate
        meanwhile only says on the progress bar that nothing was sent."""
        if is_unreachable_message(text) and self.client.state is ConnectionState.UNREACHABLE:
            self.progress.setFormat("Not sent: no server")
            text = ""
        self.error.setText(text)
        self.error.setVisible(bool(text))

    def show_notice(self, text: str) -> None:
        """The server's warning about a job that carries on (a result it could not
        save, say): shown beside the work, never in the way; the next Generate
        clears it."""
        self.notice.setText(text)
        self.notice.setVisible(bool(text))

    def _on_connection(self, state: ConnectionState, text: str) -> None:
        settings = self.settings
        if state is ConnectionState.UNREACHABLE and is_unreachable_message(text):
            text = unreachable_hint(settings.server_url, settings.server_command)
        self._connection_text = text
        self.connection.setText(text)
        self.connection.setStyleSheet(f"color: {STATE_COLOURS.get(state, '#000')}")
        self.connection.setProperty("state", state.value)
        self._refresh_start_button()
        if state is ConnectionState.CONNECTED:
            if is_unreachable_message(self.error.text()):
                self.show_message("")
            self._welcome_once()

    def _refresh_start_button(self) -> None:
        """Offered while no server answers at a local URL and none is starting."""
        offered = (
            self.client.state is ConnectionState.UNREACHABLE
            and is_local(self.settings.server_url)
            and self.server.state is not ServerState.STARTING
            and not self.server.running
        )
        self.start_server_button.setVisible(offered)

    def start_server(self) -> None:
        self.core.start_server()
        self._refresh_start_button()

    def _on_server_state(self, state: ServerState, text: str) -> None:
        if state is ServerState.FAILED:
            self.show_message(text)
        elif state is ServerState.STARTING:
            self.connection.setText("Starting the server… (its log: ⚙)")
        self._refresh_start_button()

    def _welcome_once(self) -> None:
        """The first connection ever: say what to do next, and offer the first image
        the installer made."""
        if self.core.welcomed:
            return
        self.core.mark_welcomed()
        image = first_image_path()
        self.open_first_image.setVisible(self.open_image is not None and image.is_file())
        self.welcome.setVisible(True)

    def _open_first_image(self) -> None:
        if self.open_image is not None:
            self.open_image(first_image_path())
        self.welcome.setVisible(False)

    def _on_settings(self, settings: Settings) -> None:
        if self.current_style() is None:  # the chosen model remembers its sampling
            self.model_defaults.remember(self.model.currentData(), sampling_of(settings))
        self._refresh_sampling()
        self.controller.update_settings(settings)
        self.live.context_margin = settings.context_margin
        self._on_connection(self.client.state, self._connection_text)

    def _on_models(self, models: ModelList) -> None:
        chosen = self.model.currentData()
        self.model.clear()
        self.model.addItem("Server default", None)
        for checkpoint in models.checkpoints:
            shown = label(checkpoint.family)
            self.model.addItem(
                f"{checkpoint.name} ({shown})" if shown else checkpoint.name, checkpoint.name
            )
        index = self.model.findData(chosen)
        self.model.setCurrentIndex(max(0, index))
        style = self.current_style()
        if chosen is None and style is not None and style.checkpoint:
            # the style was chosen before the server listed its models
            self.model.setCurrentIndex(max(0, self.model.findData(style.checkpoint)))
        self.models = models
        self._on_model_chosen()  # its family is known now
        self._apply_family()
        self._refresh_lora_choice()
        self.upscale_box.set_models(models)
        self._refresh_control_choices()
        self._live_settings_changed()  # a model may have become fast (or not)

    # styles and per-model sampling

    def reload_styles(self, select: str | None = None) -> None:
        """Read the styles again (shipped and the artist's), keeping the choice."""
        chosen = select if select is not None else self.style_choice.currentData()
        self.style_library = load_library(self.styles_folder)
        self.style_choice.blockSignals(True)
        self.style_choice.clear()
        self.style_choice.addItem("No style", None)
        for name in self.style_library.names:
            self.style_choice.addItem(name, name)
        self.style_choice.setCurrentIndex(max(0, self.style_choice.findData(chosen)))
        self.style_choice.blockSignals(False)
        self._on_style()

    def current_style(self) -> Style | None:
        return self.style_library.find(self.style_choice.currentData())

    def _on_style(self) -> None:
        """A style chosen: its checkpoint and LoRAs are put in the docker (where the
        artist can still change them); its sampling and templates apply to jobs."""
        style = self.current_style()
        self.core.store.set_value(STYLE_KEY, style.name if style else "")
        if style is not None and style.checkpoint:
            index = self.model.findData(style.checkpoint)
            if index < 0 and self.models.checkpoints:  # (none yet: _on_models applies it)
                self.show_notice(
                    f"The style's model {style.checkpoint} is not on this server: "
                    "the chosen model is used."
                )
            elif index >= 0:
                self.model.setCurrentIndex(index)
        if style is not None and style.loras:
            for row in list(self.lora_rows):
                self._remove_lora(row)
            for lora in style.loras:
                self.add_lora(lora.name, lora.weight)
        self._refresh_sampling()
        self._live_settings_changed()

    def _on_model_chosen(self) -> None:
        """Without a style, a model brings back the sampling it last had; a Flux or
        SD 3.5 model never tuned starts from its family's (family_settings.DEFAULTS),
        and an SD model never tuned, chosen after one of those, gets back the sampling
        the SD models had (not Flux.1 schnell's 4 steps)."""
        previous, now = self._model_before, self.model.currentData()
        self._model_before = now
        left = defaults_for(self.models.family_of(previous))
        if previous != now and left is None:
            self._classic_sampling = sampling_of(self.settings)
        remembered = self.model_defaults.get(now)
        start = defaults_for(self.models.family_of(now))
        if remembered is None and start is not None:
            current = sampling_of(self.settings)
            remembered = replace(
                current,
                sampler=start.sampler,
                steps=start.steps,
                cfg_scale=current.cfg_scale if start.cfg_scale is None else start.cfg_scale,
                guidance=current.guidance if start.guidance is None else start.guidance,
            )
        elif remembered is None and left is not None:
            remembered = self._classic_sampling
        unchanged = remembered is None or remembered == sampling_of(self.settings)
        if self.current_style() is None and remembered is not None and not unchanged:
            self.core.apply_settings(with_sampling(self.settings, remembered))
        self._refresh_sampling()

    def _refresh_sampling(self) -> None:
        chosen = sampling_for(self.current_style(), sampling_of(self.settings))
        rules = self.family_rules()
        self.sampling.setText(
            "From the fast model (server)"
            if chosen.auto
            else sampling_text(
                rules,
                chosen.sampler,
                chosen.steps,
                chosen.cfg_scale,
                chosen.guidance,
                chosen.clip_skip,
                chosen.vae,
            )
        )

    # the chosen model's family and memory mode

    def family_rules(self) -> FamilyRules:
        """What applies to the chosen checkpoint's family (family_settings)."""
        return rules_for(self.models.family_of(self.model.currentData()))

    def _apply_family(self) -> None:
        """Settings that do not apply to the family are hidden or explained: Flux has
        no negative prompt (the toggle is off, with the reason as its tooltip)."""
        rules = self.family_rules()
        self.negative_toggle.setEnabled(rules.cfg)
        self.negative_toggle.setToolTip(rules.why_no_cfg or "What should not appear")
        if not rules.cfg:
            self.negative_toggle.setChecked(False)
        self._refresh_sampling()
        self._refresh_memory()

    def _on_health(self, health: object) -> None:
        self._health = health
        self._refresh_memory()

    def _ask_health(self) -> None:
        """After a result: the server may have loaded a model (and chosen its memory
        mode), so its health is read again (protocol 6 servers say the modes)."""
        if self.client.protocol < FAMILIES_PROTOCOL:
            return
        self.client.probe_health(
            self.client.url, self.client.token, self._on_health, lambda _message: None
        )

    def _refresh_memory(self) -> None:
        """The memory mode the server runs the chosen model in, and why."""
        modes = memory_modes(self._health)
        model = self.model.currentData()
        if model is None:  # the server's default: its name from the list
            default = self.models.find(None)
            model = default.name if default else None
        text = memory_text(modes.get(model or ""))
        self.memory.setText(text)
        self.memory.setVisible(bool(text))

    def _on_style_edit(self) -> None:
        self.open_styles()

    def open_styles(self) -> StylesDialog:
        """The styles editor, starting from what the docker has now."""
        current = self.current_input()
        dialog = StylesDialog(
            self.styles_folder,
            self.current_style(),
            [c.name for c in self.models.checkpoints],
            self.core.samplers,
            Style(
                "New style",
                checkpoint=current.model,
                loras=tuple(current.loras),
                sampler=self.settings.sampler,
                steps=self.settings.steps,
                cfg_scale=self.settings.cfg_scale,
            ),
            self,
            vaes=[vae.name for vae in self.models.vaes if vae.usable],
        )
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.changed.connect(lambda name: self.reload_styles(name or None))
        dialog.open()
        return dialog

    def _refresh_lora_choice(self) -> None:
        """The LoRA picker offers what fits the chosen checkpoint's family."""
        names = loras_for(self.models, self.model.currentData())
        self.lora_choice.clear()
        self.lora_choice.addItems(names)
        self.lora_add.setEnabled(bool(names))

    def _on_models_button(self) -> None:
        self.open_models()

    def open_models(self) -> ModelsDialog:
        """The models view; double clicks there add a LoRA, or write an embedding or a
        LoRA's trigger words into the prompt."""
        dialog = ModelsDialog(self.models, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.picked.connect(self._use_model)
        self.client.models_changed.connect(dialog.show_models)
        dialog.open()
        return dialog

    def _use_model(self, kind: str, name: str) -> None:
        if kind == "lora":
            self.add_lora(name, 1.0)
        elif kind == "embedding":
            text = self.prompt.toPlainText().rstrip()
            self.prompt.setPlainText(f"{text}, {name}" if text else name)
        elif kind == "trigger-words":
            words = self.models.lora_trigger_words.get(name, ())
            prompt = self.prompt.toPlainText()
            updated = with_trigger_words(prompt, words)
            if updated != prompt:
                self.prompt.setPlainText(updated)

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
        self._live_settings_changed()

    def _remove_lora(self, row: LoraRow) -> None:
        self.lora_rows.remove(row)
        row.setParent(None)
        row.deleteLater()
        self._live_settings_changed()

    # control layers

    def add_control(self) -> ControlRowWidget:
        """A new control row, following the active layer list's first layer."""
        self._control_count += 1
        row = ControlRowWidget(self._control_count, self.canvas, self)
        row.set_choices(choices_for(self.models, self.model.currentData()))
        row.mode.currentIndexChanged.connect(lambda _index: row._refresh_preprocess())
        row.remove.clicked.connect(lambda: self._remove_control(row))
        row.preprocess.clicked.connect(lambda: self.control_from_canvas(row))
        self.control_rows.append(row)
        self.control_box.addWidget(row)
        return row

    def _on_control_add(self) -> None:
        self.add_control()

    def _remove_control(self, row: ControlRowWidget) -> None:
        self.control_rows.remove(row)
        row.setParent(None)
        row.deleteLater()

    def _refresh_control_choices(self) -> None:
        """The model pickers offer what fits the chosen checkpoint's family."""
        checkpoint = self.model.currentData()
        choices = choices_for(self.models, checkpoint)
        for row in self.control_rows:
            row.set_choices(choices)
        self.reference.set_models(reference_models_for(self.models, checkpoint))

    def _toggle_reference(self, shown: bool) -> None:
        self.reference.setVisible(shown)
        self.reference_toggle.setArrowType(
            Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow
        )
        if shown:
            self.reference.layer.refresh()

    def _choose_reference_file(self) -> None:
        path, _filter = QFileDialog.getOpenFileName(
            self, "Reference picture", "", "Images (*.png *.jpg *.jpeg *.webp *.bmp)"
        )
        if path:
            self.reference.use_file(path)

    def control_from_canvas(self, row: ControlRowWidget) -> None:
        """ "From canvas": the row's mode made from the picture, as a new layer above,
        then chosen in the row."""
        choice = row.choice()
        if choice is None or choice.mode is None:
            self.show_message("Choose a control model with a mode first.")
            return
        self.controller.preprocess_from_canvas(
            choice.mode, self.strength.value(), lambda layer_id: self._use_layer(row, layer_id)
        )

    def _use_layer(self, row: ControlRowWidget, layer_id: str) -> None:
        """Choose the new control layer in its row, unless the row was removed."""
        if row in self.control_rows:
            row.layer.refresh(layer_id)

    # generating

    def current_input(self) -> GenerateInput:
        locked = self.seed_lock.isChecked() and self.seed.text().strip() != ""
        style = self.current_style()
        typed, typed_negative = self.prompt.toPlainText(), self.negative.toPlainText()
        prompt, negative = prompts_for(style, typed, typed_negative)
        sampling = sampling_for(style, sampling_of(self.settings))
        loras = [Lora(row.name, round(row.weight.value(), 3)) for row in self.lora_rows]
        controls = [row.row() for row in self.control_rows]
        reference = self.reference.setting() if self.reference_toggle.isChecked() else None
        seed = min(int(self.seed.text()), MAX_SEED) if locked else None
        rules = self.family_rules()
        recipe = Recipe(
            prompt=typed.strip(),
            negative_prompt=typed_negative.strip(),
            style=style.name if style else None,
            model=self.model.currentData(),
            sampler=sampling.sampler,
            steps=sampling.steps,
            cfg_scale=sampling.cfg_scale,
            auto_sampling=sampling.auto,
            seed=seed,
            strength_percent=self.strength.value(),
            loras=tuple(loras),
            controls=tuple(row.choice.model for row in controls if row.choice is not None),
            reference=reference.model if reference else None,
            sent_prompt=prompt,
            guidance=sampling.guidance if rules.guidance else None,
            clip_skip=sampling.clip_skip if rules.clip_skip else 1,
            vae=sampling.vae if rules.vae else None,
            memory_mode=style.memory_mode if style else None,
        )
        return GenerateInput(
            prompt=prompt,
            negative_prompt=negative,
            sampling=sampling,
            recipe=recipe,
            strength_percent=self.strength.value(),
            model=self.model.currentData(),
            loras=loras,
            batch_size=self.batch.value(),
            seed=seed,
            controls=controls,
            reference=reference,
            memory_mode=style.memory_mode if style else None,
        )

    # live mode

    def live_settings(self) -> LiveSettings:
        """The docker's choices for live frames: a fast model's sampling is left to
        the server; a slow one runs with the job's sampling (style, model, settings),
        unless the style has its own live sampling."""
        chosen = self.current_input()
        fast = LiveMode.fast_enough(self.models, chosen.model, chosen.loras)
        job = chosen.sampling or sampling_of(self.settings)
        sampling = live_sampling_for(self.current_style(), job, fast)
        used = sampling or job
        fields = job_fields(
            self.family_rules(),
            self.client.protocol,
            JobChoices(
                chosen.negative_prompt,
                used.cfg_scale,
                used.guidance,
                used.clip_skip,
                used.vae,
                chosen.memory_mode,
            ),
        )
        cfg = fields.pop("cfg_scale")
        negative = fields.pop("negative_prompt")
        return LiveSettings(
            chosen.prompt,
            negative,
            chosen.strength_percent,
            chosen.model,
            chosen.loras,
            chosen.seed,
            None if sampling is None else (sampling.sampler, sampling.steps, cfg),
            {name: value for name, value in fields.items() if value is not None},
        )

    def set_live(self, on: bool) -> None:
        """Live on: poll the region a few times a second. Off: stop; nothing was
        written to the document, so it stays exactly as it was."""
        if on and not self.live.active:
            if not self.live.start(self.live_settings()):
                self.live_toggle.setChecked(False)
                return
            self.live_timer.start()
        elif not on and self.live.active:
            self.live_timer.stop()
            self.live.stop()
        self.live_toggle.setChecked(self.live.active)
        self.live_apply.setEnabled(False)
        self._refresh_live_note()

    def _live_settings_changed(self) -> None:
        if self.live.active:
            self.live.update(self.live_settings())
            self._refresh_live_note()

    def _refresh_live_note(self) -> None:
        """Say plainly when neither the checkpoint nor a LoRA has fast settings."""
        chosen = self.current_input()
        slow = self.live.active and not LiveMode.fast_enough(
            self.models, chosen.model, chosen.loras
        )
        self.live_note.setText(NOT_FAST if slow else "")
        self.live_note.setVisible(slow)

    def apply_live(self) -> None:
        self.live.apply()

    def _on_live_frame(self, image: QImage) -> None:
        self.preview.show_image(image)
        self.live_apply.setEnabled(self.live.result is not None)

    def generate(self) -> None:
        self.welcome.setVisible(False)
        self.show_notice("")
        if self.controller.generate(self.current_input()):
            self._started()

    def _started(self) -> None:
        """A job is on its way: the progress bar and Cancel say so."""
        self.progress.setRange(0, 0)  # busy until the server says where we are
        self.progress.setFormat("Sending…")
        self.cancel_button.setEnabled(True)

    def upscale(self) -> None:
        """Upscale the whole picture with the section's choices (the action too)."""
        self.show_notice("")
        if self.controller.upscale(self.current_input(), self.upscale_box.choice()):
            self._started()

    def expand(self) -> None:
        """Grow the canvas on the chosen sides and fill the new area (the action too)."""
        self.show_notice("")
        if self.controller.expand(self.current_input(), self.expand_box.chosen()):
            self._started()

    def cancel(self) -> None:
        self.controller.cancel()

    def _on_job(self, job: Job | None) -> None:
        active = self.controller.active_job
        shown = active or job
        self.cancel_button.setEnabled(self.controller.busy)
        if shown is None:
            if not self.progress.format().startswith("Not sent"):
                self.progress.setFormat("Idle")
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            return
        if shown.status is JobStatus.RUNNING and shown.total:
            self.progress.setRange(0, shown.total)
            self.progress.setValue(shown.step)
        elif shown.status is JobStatus.FINISHED and shown.missing and not shown.download_error:
            self.progress.setRange(0, 0)  # downloading
        elif shown.done:
            self.progress.setRange(0, 1)
            finished = shown.status is JobStatus.FINISHED and not shown.missing
            self.progress.setValue(1 if finished else 0)
        else:
            self.progress.setRange(0, 0)
        self.progress.setFormat(shown.describe())

    def _on_seed(self, seed: int) -> None:
        if not self.seed_lock.isChecked():
            self.seed.setText(str(seed))

    # history

    def _refresh_history(self) -> None:
        selected = set(self.selected_ids())
        items = self.controller.history.items
        alive = {item.item_id for item in items}
        for gone in set(self._icons) - alive:
            del self._icons[gone]
        self.history.blockSignals(True)
        self.history.clear()
        for item in items:
            entry = self._history_entry(item)
            self.history.addItem(entry)
            # Only an entry in the list can be selected (before, the selection was
            # lost at every refresh, e.g. when settings were applied).
            entry.setSelected(item.item_id in selected)
        self.history.blockSignals(False)

    def _icon(self, item_id: int) -> QIcon | None:
        """The item's icon, made once from the thumbnail the controller decoded in the
        background (a pixmap must be made on the GUI thread, so it is made here)."""
        if item_id not in self._icons:
            views = self.controller.views.get(item_id)
            if views is None:
                return None
            self._icons[item_id] = QIcon(QPixmap.fromImage(views.thumbnail))
        return self._icons[item_id]

    def _history_entry(self, item: HistoryItem) -> QListWidgetItem:
        entry = QListWidgetItem()
        entry.setData(Qt.ItemDataRole.UserRole, item.item_id)
        entry.setToolTip(
            f"{item.layer_name}\n{item.task.value}{' · applied' if item.applied else ''}"
        )
        entry.setText(f"{item.seed}{' ✓' if item.applied else ''}")
        icon = self._icon(item.item_id)
        if icon is not None:
            entry.setIcon(icon)
        return entry

    # the history kept with the document

    def load_saved_history(self) -> None:
        """Read the active document's saved history (when the document changed)."""
        document = self.canvas.document_id()
        if document == self._saved_document:
            return
        self._saved_document = document
        read = getattr(self.canvas, "read_note", None)
        self.saved = decode(read(ANNOTATION)) if callable(read) and document else SavedHistory()
        self._refresh_saved()

    def _keep_with_document(self, item: HistoryItem) -> None:
        """Write the result's recipe and thumbnail into its document, if it is the
        active one (Krita's API writes only there); saved when the artist saves."""
        write = getattr(self.canvas, "write_note", None)
        views = self.controller.views.get(item.item_id)
        if item.recipe is None or not callable(write) or views is None:
            return
        if item.document_id != self.canvas.document_id():
            return
        entry = SavedResult(
            item.recipe, item.layer_name, image_png(views.thumbnail), item.job_id, item.index
        )
        self.saved = with_result(self.saved, entry)
        write(ANNOTATION, DESCRIPTION, encode(self.saved))
        self._refresh_saved()

    def _saved_shown(self) -> list[SavedResult]:
        """Saved results not in this session's history (those are shown above)."""
        live = {(item.job_id, item.index) for item in self.controller.history.items}
        return [e for e in self.saved.entries if (e.job_id, e.index) not in live]

    def _refresh_saved(self) -> None:
        self.saved_list.blockSignals(True)
        self.saved_list.clear()
        for number, entry in enumerate(self._saved_shown()):
            line = QListWidgetItem(str(entry.recipe.seed if entry.recipe.seed is not None else ""))
            line.setData(Qt.ItemDataRole.UserRole, number)
            line.setToolTip(f"{entry.name}\n{entry.recipe.task}")
            picture = QImage.fromData(entry.thumbnail)
            if not picture.isNull():
                line.setIcon(QIcon(QPixmap.fromImage(picture)))
            self.saved_list.addItem(line)
        self.saved_list.blockSignals(False)
        shown = self.saved_list.count() > 0
        self.saved_label.setVisible(shown)
        self.saved_list.setVisible(shown)

    def _on_saved_selection(self) -> None:
        """One list's selection at a time: Reuse acts on what is selected."""
        if self.saved_list.selectedItems():
            self.history.clearSelection()

    def _on_result(self, item: HistoryItem) -> None:
        """A new result is selected at once, alone, so the docker shows it (and Apply
        applies it)."""
        self._keep_with_document(item)
        self.history.clearSelection()
        for row in range(self.history.count()):
            entry = self.history.item(row)
            if entry is not None and entry.data(Qt.ItemDataRole.UserRole) == item.item_id:
                self.history.setCurrentItem(entry)
                break

    def selected_ids(self) -> list[int]:
        return [entry.data(Qt.ItemDataRole.UserRole) for entry in self.history.selectedItems()]

    def _on_history_selection(self) -> None:
        if self.history.selectedItems():
            self.saved_list.clearSelection()
        current = self.history.currentItem()
        if current is None or not current.isSelected():
            return
        views = self.controller.views.get(current.data(Qt.ItemDataRole.UserRole))
        if views is not None:
            self.preview.show_image(views.view)

    def selected_recipe(self) -> Recipe | None:
        """The recipe of the selected result (the first, when several are), from this
        session's history or the one saved with the document."""
        saved = self.saved_list.selectedItems()
        if saved:
            shown = self._saved_shown()
            number = saved[0].data(Qt.ItemDataRole.UserRole)
            return shown[number].recipe if 0 <= number < len(shown) else None
        ids = self.selected_ids()
        item = self.controller.history.get(ids[0]) if ids else None
        return item.recipe if item is not None else None

    def reuse_selected(self) -> None:
        recipe = self.selected_recipe()
        if recipe is not None:
            self.reuse(recipe)

    def reuse_selected_seed(self) -> None:
        recipe = self.selected_recipe()
        if recipe is not None and recipe.seed is not None:
            self._lock_seed(recipe.seed)

    def _lock_seed(self, seed: int) -> None:
        self.seed.setText(str(seed))
        self.seed_lock.setChecked(True)

    def reuse(self, recipe: Recipe) -> None:
        """Put a result's whole recipe back: style first (it sets a model and LoRAs),
        then the recipe's own model, LoRAs, sampling, strength and seed over it.
        What this server or this plugin no longer has is said in the notice line."""
        missing = []
        style_index = self.style_choice.findData(recipe.style) if recipe.style else 0
        if style_index < 0:
            missing.append(f"style {recipe.style}")
        self.style_choice.setCurrentIndex(max(0, style_index))
        model_index = 0 if recipe.model is None else self.model.findData(recipe.model)
        if model_index < 0:
            missing.append(f"model {recipe.model}")
        self.model.setCurrentIndex(max(0, model_index))
        for row in list(self.lora_rows):
            self._remove_lora(row)
        for lora in recipe.loras:
            self.add_lora(lora.name, lora.weight)
        if self.current_style() is None and recipe.sampler and not recipe.auto_sampling:
            wanted = Sampling(
                recipe.sampler,
                recipe.steps,
                recipe.cfg_scale,
                guidance=recipe.guidance if recipe.guidance is not None else self.settings.guidance,
                clip_skip=recipe.clip_skip,
                vae=recipe.vae,
            )
            if wanted != sampling_of(self.settings):
                self.core.apply_settings(with_sampling(self.settings, wanted))
        self.prompt.setPlainText(recipe.prompt)
        self.negative.setPlainText(recipe.negative_prompt)
        if recipe.negative_prompt:
            self.negative_toggle.setChecked(True)
        self.strength.setValue(recipe.strength_percent)
        if recipe.seed is not None:
            self._lock_seed(recipe.seed)
        self._refresh_sampling()
        if missing:
            self.show_notice("Not on this server any more: " + ", ".join(missing) + ".")

    def apply_selected(self) -> None:
        self.controller.apply_items(self.selected_ids())

    def discard_selected(self) -> None:
        self.controller.discard_items(self.selected_ids())

    # settings

    def _on_settings_button(self) -> None:
        self.open_settings()

    def open_settings(self) -> SettingsDialog:
        """Opens the dialog without blocking (tests and Krita both keep running)."""
        dialog = SettingsDialog(
            self.settings,
            self.core.samplers,
            self.server,
            self,
            vaes=[vae.name for vae in self.models.vaes if vae.usable],
            rules=self.family_rules(),
        )
        dialog.setAttribute(
            Qt.WidgetAttribute.WA_DeleteOnClose
        )  # else every dialog ever opened lives on
        dialog.accepted.connect(lambda: self.core.apply_settings(dialog.settings()))
        dialog.styles_button.clicked.connect(self._on_style_edit)
        dialog.open()
        return dialog

    def apply_settings(self, settings: Settings | None) -> None:
        """Keep new settings (for every docker of this Krita)."""
        self.core.apply_settings(settings)

    def shutdown(self) -> None:
        """This docker is going away: stop polling the canvas. The shared client and
        server belong to the core, which Krita's exit shuts down."""
        self.selection_timer.stop()
        self.live_timer.stop()
