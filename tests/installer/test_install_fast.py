"""The install command without the server venv (seconds): plugin, kritarc, settings,
model folders, re-runs, user edits, uninstall. The full install is test_full_install.py.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from installer import install, uninstall
from installer.errors import InstallError
from installer.install import InstallOptions
from installer.platforms import Locations
from installer.report import Report

from .conftest import ROOT, sandbox_env


def _options(repo: Path, **changes: object) -> InstallOptions:
    return InstallOptions(skip_server=True, assume_yes=True, repo=repo, **changes)  # type: ignore[arg-type]


def _install(where: Locations, repo: Path, **changes: object) -> Report:
    return install.run(_options(repo, **changes), where, Report(quiet=True))


def test_installs_plugin_enables_it_and_writes_settings(seeded: Locations, fake_repo: Path) -> None:
    report = _install(seeded, fake_repo)
    assert (seeded.pykrita / "krita_diffusers.desktop").is_file()
    assert (seeded.pykrita / "krita_diffusers" / "__init__.py").is_file()
    assert (seeded.pykrita / "krita_diffusers" / "vendor" / "requests").is_dir()
    assert "[python]\nenable_krita_diffusers=true\n" in seeded.kritarc.read_text()
    settings = tomllib.loads(seeded.config_file.read_text())
    assert settings["port"] == 7860 and settings["host"] == "127.0.0.1"
    assert settings["model_dirs"] == [str(seeded.default_models_dir)]
    assert (seeded.default_models_dir / "checkpoints").is_dir()
    assert seeded.manifest.is_file() and report.changed()


def test_plugin_settings_go_where_the_docker_reads_them(seeded: Locations, fake_repo: Path) -> None:
    """kritarc, group [krita_diffusers] (Krita.readSetting), not a QSettings file."""
    from installer import kritarc

    _install(seeded, fake_repo, port=7861, token="s3cret")
    assert kritarc.read_value(seeded.kritarc, "krita_diffusers", "server_url") == (
        "http://127.0.0.1:7861"
    )
    assert kritarc.read_value(seeded.kritarc, "krita_diffusers", "token") == "s3cret"
    assert not (seeded.kritarc.parent / "krita.org").exists()


def test_without_a_server_the_start_command_names_the_chosen_port(
    seeded: Locations, fake_repo: Path
) -> None:
    """--skip-server on another port: the docker's Start server and its hint must use
    the port its server_url names, not the plugin's default 7860."""
    from installer import kritarc

    _install(seeded, fake_repo, port=7861)
    command = kritarc.read_value(seeded.kritarc, "krita_diffusers", "server_command") or ""
    assert "--port 7861" in command and "7860" not in command


def test_plugin_is_pointed_at_the_server_but_user_choices_win(
    seeded: Locations, fake_repo: Path
) -> None:
    from installer import kritarc

    rc = seeded.kritarc
    rc.parent.mkdir(parents=True)
    rc.write_text("[krita_diffusers]\nserver_url=http://127.0.0.1:7860\nsteps=30\n")
    _install(seeded, fake_repo, port=7861)
    assert kritarc.read_value(rc, "krita_diffusers", "server_url") == (
        "http://127.0.0.1:7861"  # the plugin's default was replaced
    )
    kritarc.set_value(rc, "krita_diffusers", "server_url", "http://gpu-box:7860")
    report = _install(seeded, fake_repo, port=7861)
    assert kritarc.read_value(rc, "krita_diffusers", "server_url") == ("http://gpu-box:7860")
    assert any("(your setting)" in step.what for step in report.steps)
    uninstall.run(seeded, Report(quiet=True))
    text = rc.read_text()
    assert "steps=30" in text and "server_url=http://gpu-box:7860" in text


def test_the_plugin_defaults_are_the_plugins_own(seeded: Locations, fake_repo: Path) -> None:
    """A value equal to the plugin's default counts as unset, whatever that default is:
    the installer reads it from the plugin's settings module, not from a copy."""
    from installer import kritarc

    settings = fake_repo / "krita_plugin" / "krita_diffusers" / "settings.py"
    text = settings.read_text()
    assert text.count('"http://127.0.0.1:7860"') == 1  # the string literal of the default
    settings.write_text(text.replace('"http://127.0.0.1:7860"', '"http://127.0.0.1:7000"'))
    seeded.kritarc.parent.mkdir(parents=True)
    seeded.kritarc.write_text("[krita_diffusers]\nserver_url=http://127.0.0.1:7000\n")
    _install(seeded, fake_repo, port=7861)
    assert kritarc.read_value(seeded.kritarc, "krita_diffusers", "server_url") == (
        "http://127.0.0.1:7861"
    )


def test_values_the_plugin_would_refuse_are_refused_before_anything_is_written(
    seeded: Locations, fake_repo: Path
) -> None:
    with pytest.raises(InstallError, match="token cannot contain spaces"):
        _install(seeded, fake_repo, token="two words")
    with pytest.raises(InstallError, match="--port 70000 is not a port"):
        _install(seeded, fake_repo, port=70000)
    assert not seeded.kritarc.exists() and not seeded.manifest.exists()


def test_settings_from_an_older_install_in_krita_conf_are_taken_back(
    seeded: Locations, fake_repo: Path
) -> None:
    """Older installs wrote the plugin's settings to krita.org/krita.conf, which the
    docker never read. A re-run removes the keys it put there (and writes kritarc)."""
    from installer import kritarc, manifest

    old = seeded.kritarc.parent / "krita.org" / "krita.conf"
    old.parent.mkdir(parents=True)
    old.write_text("[Other]\nx=1\n\n[krita_diffusers]\nserver_url=http://127.0.0.1:7861\n")
    record = manifest.Manifest()
    record.kritarc_keys.append(
        manifest.KritarcKey(
            str(old), "krita_diffusers", "server_url", "http://127.0.0.1:7861", None
        )
    )
    manifest.save(seeded.manifest, record)
    _install(seeded, fake_repo, port=7861)
    assert old.read_text() == "[Other]\nx=1\n"
    assert kritarc.read_value(seeded.kritarc, "krita_diffusers", "server_url") == (
        "http://127.0.0.1:7861"
    )


def test_kritarc_values_are_written_the_way_kconfig_reads_them() -> None:
    """KConfig (which reads kritarc) keeps quotes and commas as they are, reads `\\` as
    a backslash and trims spaces at both ends unless written `\\s`."""
    from installer.kritarc import kconfig_string, kconfig_value

    assert kconfig_string("/opt/kd/bin/krita-diffusers-server serve") == (
        "/opt/kd/bin/krita-diffusers-server serve"
    )
    assert kconfig_string('C:\\a,b "x"') == 'C:\\\\a,b "x"'
    assert kconfig_string(" a\tb\n ") == "\\sa\\tb\\n\\s"
    for text in ("'/home/a b/venv/bin/krita-diffusers-server' serve", " x ", "a\\b\x01"):
        assert kconfig_value(kconfig_string(text)) == text


def test_settings_are_what_the_server_reads(seeded: Locations, fake_repo: Path) -> None:
    from kd_server import config

    _install(seeded, fake_repo, port=7999)
    settings = config.load_settings(config_path=seeded.config_file)
    assert settings.port == 7999 and settings.model_dirs == [seeded.default_models_dir]


def test_second_run_changes_nothing(seeded: Locations, fake_repo: Path) -> None:
    _install(seeded, fake_repo)
    before = {p: p.read_bytes() for p in seeded.home.rglob("*") if p.is_file()}
    again = _install(seeded, fake_repo)
    assert again.changed() == []
    after = {p: p.read_bytes() for p in seeded.home.rglob("*") if p.is_file()}
    assert after == before


def test_rerun_repairs_a_damaged_plugin(seeded: Locations, fake_repo: Path) -> None:
    _install(seeded, fake_repo)
    (seeded.pykrita / "krita_diffusers" / "panel.py").unlink()
    report = _install(seeded, fake_repo)
    assert (seeded.pykrita / "krita_diffusers" / "panel.py").is_file()
    assert [s.what for s in report.changed()] == [f"Krita plugin in {seeded.pykrita}"]


def test_user_edits_to_settings_are_kept(seeded: Locations, fake_repo: Path) -> None:
    _install(seeded, fake_repo)
    seeded.config_file.write_text('port = 9000\ndevice = "cpu"\n\n[extra]\nx = 1\n')
    report = _install(seeded, fake_repo, port=7860)
    text = seeded.config_file.read_text()
    data = tomllib.loads(text)
    assert data["port"] == 9000 and data["device"] == "cpu" and data["extra"] == {"x": 1}
    assert data["host"] == "127.0.0.1" and "model_dirs" in data  # only missing keys added
    assert any("kept your edits" in s.what for s in report.steps)
    assert _install(seeded, fake_repo).changed() == []


def test_existing_a1111_and_comfyui_folders_are_used_in_place(
    seeded: Locations, fake_repo: Path
) -> None:
    a1111 = seeded.home / "stable-diffusion-webui"
    (a1111 / "models" / "Stable-diffusion").mkdir(parents=True)
    comfy = seeded.home / "ComfyUI"
    (comfy / "models" / "checkpoints").mkdir(parents=True)
    (seeded.home / "ComfyUI-empty").mkdir()
    _install(seeded, fake_repo)
    dirs = tomllib.loads(seeded.config_file.read_text())["model_dirs"]
    assert dirs == [str(seeded.default_models_dir), str(a1111), str(comfy)]
    ignored = dataclasses.replace(seeded, config_file=seeded.home / "other.toml")
    _install(ignored, fake_repo, existing_models="ignore")
    assert tomllib.loads(ignored.config_file.read_text())["model_dirs"] == [
        str(seeded.default_models_dir)
    ]


def test_non_loopback_host_gets_a_token(seeded: Locations, fake_repo: Path) -> None:
    _install(seeded, fake_repo, host="0.0.0.0")
    data = tomllib.loads(seeded.config_file.read_text())
    assert len(data["token"]) >= 24
    assert seeded.config_file.stat().st_mode & 0o077 == 0


def test_unwritable_plugin_folder_is_a_clear_error(where: Locations, fake_repo: Path) -> None:
    where.krita_resources.parent.mkdir(parents=True)
    where.krita_resources.write_text("a file where Krita's folder should be")
    with pytest.raises(InstallError, match=r"Krita.s Python plugin folder .* is not writable"):
        _install(where, fake_repo)


def test_uninstall_removes_only_what_install_added(seeded: Locations, fake_repo: Path) -> None:
    seeded.kritarc.parent.mkdir(parents=True, exist_ok=True)
    seeded.kritarc.write_text("[General]\nfoo=1\n")
    other_plugin = seeded.pykrita / "someone_else.desktop"
    other_plugin.parent.mkdir(parents=True)
    other_plugin.write_text("x")
    _install(seeded, fake_repo)
    model = seeded.default_models_dir / "checkpoints" / "mine.safetensors"
    model.write_bytes(b"weights")
    uninstall.run(seeded, Report(quiet=True))
    assert model.read_bytes() == b"weights"
    assert other_plugin.is_file()
    assert not (seeded.pykrita / "krita_diffusers").exists()
    assert not (seeded.pykrita / "krita_diffusers.desktop").exists()
    assert seeded.kritarc.read_text() == "[General]\nfoo=1\n"  # exactly as before
    assert not seeded.config_file.exists() and not seeded.manifest.exists()


def test_uninstall_keeps_edited_settings(seeded: Locations, fake_repo: Path) -> None:
    _install(seeded, fake_repo)
    seeded.config_file.write_text("port = 1234\n")
    uninstall.run(seeded, Report(quiet=True))
    assert seeded.config_file.read_text() == "port = 1234\n"


def test_cli_install_skip_server_then_uninstall(home: Path, vendor_cache: Path) -> None:
    """The real command line in a throw-away HOME, with the real plugin."""
    env = sandbox_env(home)
    data = home / ".local" / "share" / "krita-diffusers"
    (data / "cache").mkdir(parents=True)
    subprocess.run(["cp", "-r", *map(str, vendor_cache.iterdir()), str(data / "cache")], check=True)
    cmd = [sys.executable, "-m", "installer", "--skip-server", "--yes"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "enable_krita_diffusers=true" in done.stdout
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert "nothing changed" in again.stdout
    gone = subprocess.run(
        [sys.executable, "-m", "installer", "uninstall"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert gone.returncode == 0 and "Uninstalled." in gone.stdout


def test_an_unexpected_file_error_is_explained_not_traced(
    tmp_path: Path, vendor_cache: Path, capsys
) -> None:
    from installer.cli import main

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code = main(["build-zip", "-o", str(blocker / "k.zip"), "--data-dir", str(vendor_cache.parent)])
    err = capsys.readouterr().err
    assert code == 1
    assert "Error:" in err and "What to do" in err and "Traceback" not in err


def _steps(report: Report, text: str) -> set[str]:
    return {step.action.value for step in report.steps if text in step.what}


def test_a_new_kritarc_is_reported_created_an_existing_one_updated(
    seeded: Locations, fake_repo: Path
) -> None:
    fresh = _install(seeded, fake_repo)
    assert _steps(fresh, str(seeded.kritarc)) == {"created"}
    other = dataclasses.replace(seeded, kritarc=seeded.home / "other" / "kritarc")
    other.kritarc.parent.mkdir()
    other.kritarc.write_text("[General]\nfoo=1\n")
    existing = _install(other, fake_repo)
    assert _steps(existing, str(other.kritarc)) == {"updated"}


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _outside_home(where: Locations, vendor_cache: Path, tmp_path: Path) -> Locations:
    """`where` with the installer's own folder (and its vendor cache) outside HOME, so
    HOME starts empty."""
    data = tmp_path / "data"
    shutil.copytree(vendor_cache, data / "cache")
    return dataclasses.replace(where, data_dir=data)


def test_uninstall_leaves_an_empty_home_empty(
    where: Locations, vendor_cache: Path, fake_repo: Path, tmp_path: Path
) -> None:
    """Files and folders the install created (kritarc, pykrita/, the settings folder,
    the models folder while it holds no model) go; the home is as it was."""
    place = _outside_home(where, vendor_cache, tmp_path)
    assert _tree(place.home) == []
    _install(place, fake_repo)
    assert (place.home / ".config" / "kritarc").is_file() and place.pykrita.is_dir()
    uninstall.run(place, Report(quiet=True))
    assert _tree(place.home) == []
    assert not place.data_dir.exists()


def test_uninstall_keeps_what_existed_before_even_when_empty(
    where: Locations, vendor_cache: Path, fake_repo: Path, tmp_path: Path
) -> None:
    place = _outside_home(where, vendor_cache, tmp_path)
    place.kritarc.parent.mkdir(parents=True)
    place.kritarc.write_text("")
    place.pykrita.mkdir(parents=True)
    before = _tree(place.home)
    _install(place, fake_repo)
    model = place.default_models_dir / "loras" / "mine.safetensors"
    model.write_bytes(b"weights")
    uninstall.run(place, Report(quiet=True))
    assert _tree(place.home) == before
    assert place.kritarc.read_text() == ""
    assert model.read_bytes() == b"weights"
    assert not (place.default_models_dir / "checkpoints").exists()  # empty, ours
