"""A local server the plugin starts and stops for the artist.

QProcess keeps it off the GUI thread's back: output arrives through signals, and
readiness is a `/v1/health` answer polled through the client's worker threads. The
server is stopped when Krita quits, so no orphan process keeps the GPU busy.
"""

from __future__ import annotations

import enum
from collections import deque

from .client import ServerClient
from .qt import QObject, QProcess, QTimer, pyqtSignal
from .settings import split_command

POLL_MS = 500
KILL_AFTER_MS = 5000  # a server that ignores the polite request is killed then
READY_TIMEOUT_MS = 300_000  # first start may build the tiny model or load a big checkpoint
LOG_LINES = 2000


class ServerState(str, enum.Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    FAILED = "failed"


class ManagedServer(QObject):
    state_changed = pyqtSignal(object, str)  # ServerState, a sentence for the dialog
    log_added = pyqtSignal(str)

    def __init__(self, client: ServerClient, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.client = client
        self.state = ServerState.STOPPED
        self.log: deque[str] = deque(maxlen=LOG_LINES)
        self._process: QProcess | None = None
        self._url = ""
        self._token = ""
        self._waited_ms = 0
        self._probing = False
        self._stopping = False
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)

    @property
    def running(self) -> bool:
        return (
            self._process is not None and self._process.state() != QProcess.ProcessState.NotRunning
        )

    def start(self, command: str, url: str, token: str = "") -> bool:
        """Start `command`; ready once `url` answers /v1/health. False with a reason
        in the log and state when the command cannot even be started."""
        if self.running:
            return True
        try:
            words = split_command(command)
        except ValueError:
            words = []
        if not words:
            self._set_state(ServerState.FAILED, "Give a server command in the settings first.")
            return False
        process = QProcess(self)
        process.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        process.readyReadStandardOutput.connect(self._read_output)
        process.errorOccurred.connect(self._on_error)
        process.finished.connect(self._on_finished)
        self._process = process
        self._url, self._token = url, token
        self._waited_ms = 0
        self._stopping = False
        self._append(f"$ {command}")
        self._set_state(ServerState.STARTING, "Starting the server…")
        process.start(words[0], words[1:])
        self._timer.start()
        return True

    def stop(self, wait: bool = False) -> None:
        """Ask the server to exit (it cancels its jobs and tells its clients), and kill
        it if it is still there 5 seconds later.

        The dialog's button does not wait, so Krita never freezes; Krita's own exit
        waits (`wait=True`), so no server we started outlives Krita.
        """
        self._timer.stop()
        process = self._process
        if process is None or process.state() == QProcess.ProcessState.NotRunning:
            return
        self._stopping = True
        process.terminate()
        if wait:
            if not process.waitForFinished(5000):
                process.kill()
                process.waitForFinished(2000)
            return
        # A bound slot of the process: Qt drops the timer if the process is deleted
        # first, and kill() on a process that already exited does nothing.
        QTimer.singleShot(KILL_AFTER_MS, process.kill)

    def _append(self, text: str) -> None:
        for line in text.splitlines():
            self.log.append(line)
            self.log_added.emit(line)

    def _read_output(self) -> None:
        if self._process is not None:
            data = bytes(self._process.readAllStandardOutput())
            self._append(data.decode("utf-8", errors="replace"))

    def _on_error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self._timer.stop()
            self._set_state(
                ServerState.FAILED,
                "The server command could not be started: check that the program exists "
                "(the installer prints its full path).",
            )

    def _on_finished(self, exit_code: int, _status: QProcess.ExitStatus) -> None:
        self._timer.stop()
        self._append(f"[server exited with status {exit_code}]")
        if self.state is ServerState.STARTING and exit_code != 0 and not self._stopping:
            self._set_state(ServerState.FAILED, "The server stopped while starting; see its log.")
        else:
            self._set_state(ServerState.STOPPED, "The server is stopped.")

    def _poll(self) -> None:
        self._waited_ms += POLL_MS
        if self._waited_ms > READY_TIMEOUT_MS and self.state is ServerState.STARTING:
            self._timer.stop()
            self._set_state(
                ServerState.FAILED, "The server did not answer in 5 minutes; see its log."
            )
            return
        if not self._probing and self.state is ServerState.STARTING:
            self._probing = True
            self.client.probe_health(self._url, self._token, self._on_healthy, self._on_not_yet)

    def _on_healthy(self, _health: object) -> None:
        self._probing = False
        if self.state is ServerState.STARTING:
            self._timer.stop()
            self._set_state(ServerState.RUNNING, "The server is running.")
            self.client.reconnect_now()

    def _on_not_yet(self, _message: str) -> None:
        self._probing = False

    def _set_state(self, state: ServerState, text: str) -> None:
        self.state = state
        self.state_changed.emit(state, text)
