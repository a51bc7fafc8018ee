"""The launch itself: Krita ended cleanly, nothing was left running, and the figures
and artifacts the project reports (GUI stall, mid-generation screenshot) exist."""

from __future__ import annotations

import pytest
from e2e import harness
from e2e.krita_e2e import SCENARIOS, artifact, passed
from PIL import Image

pytestmark = pytest.mark.krita


def test_krita_ran_every_scenario_and_quit_cleanly(krita_run):
    launch = krita_run.log["launch"]
    assert krita_run.log.get("finished"), f"the runner did not finish: {krita_run.log}"
    assert [s["name"] for s in krita_run.log["scenarios"]] == SCENARIOS
    assert launch["returncode"] == 0, krita_run.launch.output[-3000:]
    assert not launch["timed_out"]
    assert not launch["leftovers"], "processes of the launch were still running"
    assert launch["requests_handled"] == ["start-server"]


def test_gui_stall_is_measured_during_each_generation(krita_run):
    for name in ("txt2img", "inpaint_rect", "inpaint_soft", "batch", "cancel", "undo"):
        heartbeat = krita_run.scenario(name)["data"].get("heartbeat")
        assert heartbeat and heartbeat["ticks"] > 0, f"no heartbeat for {name}"
        assert heartbeat["longest_stall_ms"] >= 0
    assert artifact(krita_run, "stall.json")


def test_mid_generation_screenshot_shows_progress_and_preview(krita_run):
    data = passed(krita_run, "inpaint_rect")
    shots = data.get("mid_generation")
    assert shots, "no moment with both a running progress bar and a fresh preview was seen"
    assert shots["progress"].startswith("Step ")
    with Image.open(artifact(krita_run, shots["screen"])) as screen:
        assert screen.size == (1600, 1000)
    with Image.open(artifact(krita_run, shots["docker"])) as panel:
        assert panel.size[0] > 100 and panel.size[1] > 100


def test_plugin_was_installed_by_the_project_installer(krita_run):
    expected = "installer" if (harness.ROOT / "installer" / "__main__.py").is_file() else "copy"
    assert krita_run.log["launch"]["plugin_installed_by"] == expected
