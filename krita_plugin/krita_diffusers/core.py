"""What every Krita Diffusers docker of one Krita shares: the settings, the client of
the server (one client id, one event stream) and the local server Krita may start.

Krita makes one docker per window; before this object each docker built its own
client and its own managed server, so two windows opened two event streams and could
start two servers on one port. `krita_adapter` makes one `PluginCore` per Krita
process and every docker attaches to it; tests make their own.
"""

from __future__ import annotations

from .client import ServerClient
from .guidance import WELCOMED_KEY, welcomed
from .managed_server import ManagedServer
from .qt import QApplication, QObject, pyqtSignal
from .settings import Settings, SettingsStore, load, save


class PluginCore(QObject):
    settings_changed = pyqtSignal(object)  # Settings, after the dialog was accepted

    def __init__(
        self,
        store: SettingsStore,
        client: ServerClient | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.store = store
        self.settings: Settings = load(store)
        # No Qt parent: the client's event-stream thread holds a reference to it, so it
        # lives until that thread has ended. As a child of the core, Qt could delete it
        # with the core while the thread is emitting a signal (a crash, seen in tests).
        self.client = client or ServerClient()
        self.server = ManagedServer(self.client, self)
        self.samplers: list[str] = []
        self._started = False
        self.client.samplers_changed.connect(self._on_samplers)
        self.client.configure(self.settings.server_url, self.settings.token)
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)

    def attach(self) -> None:
        """A docker appeared: start talking to the server (once, for all dockers)."""
        if not self._started:
            self._started = True
            self.client.start()

    def _on_samplers(self, samplers: list[str]) -> None:
        self.samplers = samplers

    def apply_settings(self, settings: Settings | None) -> None:
        """Keep accepted settings, point the client at the (new) server, tell every
        docker."""
        if settings is None:
            return
        self.settings = settings
        save(self.store, settings)
        self._sync()
        self.client.configure(settings.server_url, settings.token)
        self.settings_changed.emit(settings)

    def _sync(self) -> None:
        sync = getattr(self.store, "sync", None)
        if callable(sync):
            sync()

    @property
    def welcomed(self) -> bool:
        """The "what next" welcome was shown once already (it is shown once)."""
        return welcomed(self.store.value(WELCOMED_KEY))

    def mark_welcomed(self) -> None:
        self.store.set_value(WELCOMED_KEY, "true")
        self._sync()

    def start_server(self) -> bool:
        """Start the local server with the settings' command (the docker's button)."""
        settings = self.settings
        return self.server.start(settings.server_command, settings.server_url, settings.token)

    def shutdown(self) -> None:
        """Krita is closing: stop the event stream and any server we started."""
        self.client.stop()
        self.server.stop(wait=True)  # no server we started outlives Krita
