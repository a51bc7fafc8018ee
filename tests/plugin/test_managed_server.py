"""The docker's Start server button (offered while no server answers) and the
settings dialog start the real server as a child process; the dialog shows its log;
the docker connects once /v1/health answers; stopping it ends the process."""

from __future__ import annotations

import shlex

from krita_diffusers.client import ConnectionState
from krita_diffusers.docker import DiffusersPanel
from krita_diffusers.managed_server import ServerState
from krita_diffusers.qt import QLabel, QPlainTextEdit, QPushButton
from support.servers import ROOT, SERVER_PYTHON, free_port

WAIT_MS = 180_000


def test_start_from_the_docker_and_stop_from_the_dialog(
    qtbot, canvas, tmp_path, monkeypatch, make_core
):
    config = tmp_path / "server.toml"
    config.write_text("", encoding="utf-8")
    monkeypatch.setenv("KD_CONFIG", str(config))
    monkeypatch.delenv("KD_TOKEN", raising=False)
    monkeypatch.chdir(ROOT)
    port = free_port()
    command = f"{shlex.quote(SERVER_PYTHON)} -m kd_server.cli serve --host 127.0.0.1 --port {port}"
    core = make_core(server_url=f"http://127.0.0.1:{port}", server_command=command)
    panel = DiffusersPanel(canvas, core)
    qtbot.addWidget(panel)
    try:
        panel.show()
        qtbot.waitUntil(lambda: panel.client.state is ConnectionState.UNREACHABLE, timeout=WAIT_MS)
        start = panel.findChild(QPushButton, "kd-start-server")
        assert start.isVisible() and command in panel.connection.text()
        start.click()
        assert not start.isVisible()  # no second start while this one starts
        dialog = panel.open_settings()
        qtbot.waitUntil(lambda: panel.server.state is ServerState.RUNNING, timeout=WAIT_MS)
        assert dialog.findChild(QLabel, "kd-server-state").text() == "The server is running."
        assert dialog.findChild(QPlainTextEdit, "kd-server-log").toPlainText().startswith("$ ")
        qtbot.waitUntil(lambda: panel.client.state is ConnectionState.CONNECTED, timeout=WAIT_MS)
        dialog.findChild(QPushButton, "kd-server-stop").click()
        assert panel.server.running  # the button returned at once: Krita never freezes
        qtbot.waitUntil(lambda: panel.server.state is ServerState.STOPPED, timeout=WAIT_MS)
        assert "stopped while starting" not in dialog.findChild(QLabel, "kd-server-state").text()
        assert not panel.server.running
        qtbot.waitUntil(lambda: panel.client.state is ConnectionState.UNREACHABLE, timeout=WAIT_MS)
        dialog.reject()
    finally:
        panel.shutdown()


def test_a_command_that_does_not_exist_says_so(qtbot, canvas, make_core):
    core = make_core(server_command="/nonexistent/krita-diffusers-server serve")
    panel = DiffusersPanel(canvas, core)
    qtbot.addWidget(panel)
    try:
        dialog = panel.open_settings()
        dialog.findChild(QPushButton, "kd-server-start").click()
        qtbot.waitUntil(lambda: panel.server.state is ServerState.FAILED, timeout=WAIT_MS)
        assert "could not be started" in dialog.findChild(QLabel, "kd-server-state").text()
        assert "could not be started" in panel.error.text()  # the docker says it too
        assert dialog.findChild(QPushButton, "kd-server-start").isEnabled()
        dialog.reject()
    finally:
        panel.shutdown()
