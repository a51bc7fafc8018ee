"""Krita's plugin folder and kritarc, and our files, on each platform."""

from pathlib import Path

from installer.platforms import System, locations, venv_python

HOME = Path("/home/ada")


def test_linux_defaults_follow_xdg_fallbacks() -> None:
    where = locations(System.LINUX, {}, HOME)
    assert where.pykrita == HOME / ".local/share/krita/pykrita"
    assert where.kritarc == HOME / ".config/kritarc"
    assert where.config_file == HOME / ".config/krita-diffusers/server.toml"
    assert where.default_venv == HOME / ".local/share/krita-diffusers/venv"


def test_linux_respects_xdg_variables() -> None:
    env = {"XDG_DATA_HOME": "/data", "XDG_CONFIG_HOME": "/conf"}
    where = locations(System.LINUX, env, HOME)
    assert where.pykrita == Path("/data/krita/pykrita")
    assert where.kritarc == Path("/conf/kritarc")
    assert where.config_file == Path("/conf/krita-diffusers/server.toml")


def test_windows_uses_appdata_and_localappdata() -> None:
    env = {"APPDATA": "C:/Users/ada/AppData/Roaming", "LOCALAPPDATA": "C:/Users/ada/AppData/Local"}
    where = locations(System.WINDOWS, env, HOME)
    assert where.pykrita == Path("C:/Users/ada/AppData/Roaming/krita/pykrita")
    assert where.kritarc == Path("C:/Users/ada/AppData/Local/kritarc")
    assert venv_python(Path("v"), System.WINDOWS) == Path("v/Scripts/python.exe")


def test_macos_uses_library_folders() -> None:
    where = locations(System.MACOS, {}, HOME)
    assert where.pykrita == HOME / "Library/Application Support/krita/pykrita"
    assert where.kritarc == HOME / "Library/Preferences/kritarc"


def test_config_path_matches_the_server(monkeypatch, tmp_path: Path) -> None:
    """The installer writes the settings file exactly where kd_server reads it."""
    from kd_server import config

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("KD_CONFIG", raising=False)
    where = locations(System.LINUX, {"XDG_CONFIG_HOME": str(tmp_path)}, HOME)
    assert where.config_file == config.default_config_path()
    monkeypatch.setenv("KD_CONFIG", str(tmp_path / "x.toml"))
    assert locations(System.LINUX, {"KD_CONFIG": str(tmp_path / "x.toml")}, HOME).config_file == (
        config.default_config_path()
    )
