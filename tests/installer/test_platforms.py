"""Krita's plugin folder and kritarc, and our files, on each platform."""

from dataclasses import replace
from pathlib import Path

import pytest

from installer.command_link import bin_dir
from installer.platforms import System, locations, server_command, venv_python, venv_script
from installer.server_env import SERVER_SCRIPT
from krita_diffusers.guidance import first_image_path
from krita_diffusers.settings import Settings, split_command, validate

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


# Every path the installer and the plugin compute, for each platform and environment,
# computed here on Linux from the platform's name: the same functions run on Windows
# and macOS (installer.platforms, krita_diffusers.guidance, krita_diffusers.settings).
WIN_HOME = Path("C:/Users/Ada Lovelace")
WIN_ENV = {
    "APPDATA": "C:/Users/Ada Lovelace/AppData/Roaming",
    "LOCALAPPDATA": "C:/Users/Ada Lovelace/AppData/Local",
}
MAC_HOME = Path("/Users/ada")
WIN_SCRIPT = r"C:\Users\Ada Lovelace\kd\Scripts\krita-diffusers-server.exe"
PLATFORM_CASES = [
    pytest.param(
        System.LINUX, "linux", {}, HOME,
        {
            "pykrita": HOME / ".local/share/krita/pykrita",
            "kritarc": HOME / ".config/kritarc",
            "data_dir": HOME / ".local/share/krita-diffusers",
            "config_file": HOME / ".config/krita-diffusers/server.toml",
            "python": HOME / ".local/share/krita-diffusers/venv/bin/python",
            "script": HOME / ".local/share/krita-diffusers/venv/bin/krita-diffusers-server",
            "bin_dir": HOME / ".local/bin",
        },
        id="linux",
    ),
    pytest.param(
        System.LINUX, "linux",
        {"XDG_DATA_HOME": "/d", "XDG_CONFIG_HOME": "/c", "KD_CONFIG": "/k.toml"}, HOME,
        {
            "pykrita": Path("/d/krita/pykrita"),
            "kritarc": Path("/c/kritarc"),
            "data_dir": Path("/d/krita-diffusers"),
            "config_file": Path("/k.toml"),
            "python": Path("/d/krita-diffusers/venv/bin/python"),
            "script": Path("/d/krita-diffusers/venv/bin/krita-diffusers-server"),
            "bin_dir": HOME / ".local/bin",
        },
        id="linux-xdg",
    ),
    pytest.param(
        System.WINDOWS, "win32", WIN_ENV, WIN_HOME,
        {
            "pykrita": WIN_HOME / "AppData/Roaming/krita/pykrita",
            "kritarc": WIN_HOME / "AppData/Local/kritarc",
            "data_dir": WIN_HOME / "AppData/Local/krita-diffusers",
            "config_file": WIN_HOME / ".config/krita-diffusers/server.toml",
            "python": WIN_HOME / "AppData/Local/krita-diffusers/venv/Scripts/python.exe",
            "script": WIN_HOME
            / "AppData/Local/krita-diffusers/venv/Scripts/krita-diffusers-server.exe",
            "bin_dir": None,
        },
        id="windows",
    ),
    pytest.param(
        System.WINDOWS, "win32", {}, WIN_HOME,  # no APPDATA/LOCALAPPDATA: their defaults
        {
            "pykrita": WIN_HOME / "AppData/Roaming/krita/pykrita",
            "kritarc": WIN_HOME / "AppData/Local/kritarc",
            "data_dir": WIN_HOME / "AppData/Local/krita-diffusers",
            "config_file": WIN_HOME / ".config/krita-diffusers/server.toml",
            "python": WIN_HOME / "AppData/Local/krita-diffusers/venv/Scripts/python.exe",
            "script": WIN_HOME
            / "AppData/Local/krita-diffusers/venv/Scripts/krita-diffusers-server.exe",
            "bin_dir": None,
        },
        id="windows-defaults",
    ),
    pytest.param(
        System.MACOS, "darwin", {}, MAC_HOME,
        {
            "pykrita": MAC_HOME / "Library/Application Support/krita/pykrita",
            "kritarc": MAC_HOME / "Library/Preferences/kritarc",
            "data_dir": MAC_HOME / "Library/Application Support/krita-diffusers",
            "config_file": MAC_HOME / ".config/krita-diffusers/server.toml",
            "python": MAC_HOME / "Library/Application Support/krita-diffusers/venv/bin/python",
            "script": MAC_HOME
            / "Library/Application Support/krita-diffusers/venv/bin/krita-diffusers-server",
            "bin_dir": MAC_HOME / ".local/bin",
        },
        id="macos",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("system", "platform", "env", "home", "expected"), PLATFORM_CASES)
def test_every_path_per_platform(system, platform, env, home, expected) -> None:
    where = locations(system, env, home)
    found = {
        "pykrita": where.pykrita,
        "kritarc": where.kritarc,
        "data_dir": where.data_dir,
        "config_file": where.config_file,
        "python": venv_python(where.default_venv, system),
        "script": venv_script(where.default_venv, SERVER_SCRIPT, system),
        "bin_dir": bin_dir(where),
    }
    assert found == expected
    # the plugin finds the installer's first image in the same data folder
    assert first_image_path(platform, env, home) == where.data_dir / "first-image.png"


@pytest.mark.parametrize(("system", "platform", "env", "home", "expected"), PLATFORM_CASES)
def test_the_start_command_the_plugin_gets_splits_back_into_the_script(
    system, platform, env, home, expected
) -> None:
    """What the installer writes to kritarc (`server_command`) is what the plugin's
    Start server runs there: split by the plugin's rule for that platform, it is the
    venv's script (one word, even with a space in the home folder) and `serve`."""
    command = server_command(expected["script"])
    assert split_command(command, platform) == [expected["script"].as_posix(), "serve"]
    assert validate(replace(Settings(), server_command=command)) == []


@pytest.mark.parametrize(
    ("platform", "command", "words"),
    [
        # typed by hand on Windows: backslashes are path separators, quotes group
        ("win32", rf'"{WIN_SCRIPT}" serve --port 7861', [WIN_SCRIPT, "serve", "--port", "7861"]),
        ("win32", r"C:\kd\kds.exe serve", [r"C:\kd\kds.exe", "serve"]),
        # elsewhere a backslash escapes, as in a shell
        ("linux", r"/opt/my\ kd/bin/kds serve", ["/opt/my kd/bin/kds", "serve"]),
        ("darwin", "'/Users/ada/Library/Application Support/kds' serve",
         ["/Users/ada/Library/Application Support/kds", "serve"]),
    ],
)  # fmt: skip
def test_commands_typed_in_the_settings_split_per_platform(platform, command, words) -> None:
    assert split_command(command, platform) == words


def test_an_unmatched_quote_is_refused_on_every_platform() -> None:
    for platform in ("linux", "win32", "darwin"):
        with pytest.raises(ValueError):
            split_command('"C:/kd/krita-diffusers-server.exe serve', platform)
