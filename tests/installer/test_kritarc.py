"""Enabling the plugin in kritarc changes one line and nothing else."""

from pathlib import Path

from installer import kritarc

SAMPLE = (
    "[General]\r\nLastPreset=Basic_tip_default\r\nwindowState=@ByteArray(\\0\\0\\xff)\r\n\r\n"
    "[python]\r\nenable_scripter=true\r\nenable_Other_Plugin=false\r\n\r\n"
    "[MainWindow]\r\nState=AAAA%3D\r\n"
)


def test_creates_file_with_python_section(tmp_path: Path) -> None:
    rc = tmp_path / "conf" / "kritarc"
    change = kritarc.enable(rc, "krita_diffusers")
    assert change == kritarc.Change(previous=None, changed=True)
    assert rc.read_text() == "[python]\nenable_krita_diffusers=true\n"


def test_adds_key_inside_existing_section_keeping_everything_else(tmp_path: Path) -> None:
    rc = tmp_path / "kritarc"
    rc.write_bytes(SAMPLE.encode())
    kritarc.enable(rc, "krita_diffusers")
    text = rc.read_bytes().decode()
    assert text == SAMPLE.replace(
        "enable_Other_Plugin=false\r\n",
        "enable_Other_Plugin=false\r\nenable_krita_diffusers=true\r\n",
    )
    assert kritarc.read_value(rc, "python", "enable_krita_diffusers") == "true"


def test_flips_false_and_restores_exactly(tmp_path: Path) -> None:
    rc = tmp_path / "kritarc"
    original = SAMPLE.replace("enable_Other_Plugin", "enable_krita_diffusers")
    rc.write_bytes(original.encode())
    change = kritarc.enable(rc, "krita_diffusers")
    assert change.previous == "false" and change.changed
    assert kritarc.enable(rc, "krita_diffusers").changed is False  # idempotent
    kritarc.set_value(rc, "python", "enable_krita_diffusers", change.previous)
    assert rc.read_bytes().decode() == original


def test_removing_an_added_key_gives_back_the_original_bytes(tmp_path: Path) -> None:
    rc = tmp_path / "kritarc"
    rc.write_bytes(SAMPLE.encode())
    kritarc.enable(rc, "krita_diffusers")
    kritarc.set_value(rc, "python", "enable_krita_diffusers", None)
    assert rc.read_bytes().decode() == SAMPLE


def test_appends_section_when_missing(tmp_path: Path) -> None:
    rc = tmp_path / "kritarc"
    rc.write_text("[General]\nfoo=1")
    kritarc.enable(rc, "krita_diffusers")
    assert rc.read_text() == "[General]\nfoo=1\n\n[python]\nenable_krita_diffusers=true\n"
