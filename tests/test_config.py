"""Settings merge in order (defaults < file < environment < flags) and explain mistakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from kd_server.config import ConfigError, load_settings


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("KD_HOST", "KD_PORT", "KD_MODEL_DIRS", "KD_TOKEN", "KD_TOKEN_FILE",
                 "KD_DEVICE", "KD_SPEEDUPS", "KD_CORS_ORIGINS", "KD_MAX_QUEUE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_file_then_environment_then_flags(tmp_path: Path, clean_env) -> None:
    config = tmp_path / "server.toml"
    config.write_text('port = 7000\nmodel_dirs = ["/a", "/b"]\nspeedups = ["channels_last"]\n')
    settings = load_settings({}, config)
    assert settings.port == 7000
    assert settings.model_dirs == [Path("/a"), Path("/b")]
    assert settings.speedups == ["channels_last"]
    clean_env.setenv("KD_PORT", "7001")
    clean_env.setenv("KD_SPEEDUPS", "fuse_qkv,compile")
    clean_env.setenv("KD_MAX_QUEUE", "5")
    settings = load_settings({}, config)
    assert (settings.port, settings.speedups, settings.max_queue) == (
        7001,
        ["fuse_qkv", "compile"],
        5,
    )
    assert load_settings({"port": 7002}, config).port == 7002


def test_token_file_is_read_and_an_empty_one_refused(tmp_path: Path, clean_env) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    assert load_settings({"token_file": str(token)}, tmp_path / "none.toml").token == "s3cret"
    token.write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        load_settings({"token_file": str(token)}, tmp_path / "none.toml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("port = 'eighty'", "port .* must be a whole number"),
        ("colour = 'blue'", "Unknown setting 'colour'"),
        ("speedups = ['warp']", "Unknown speed-up warp"),
        ("port = [", "not valid TOML"),
        ("port = 70000", "port .* must be between 1 and 65535"),
        ("max_queue = 0", "max_queue .* must be at least 1"),
        ("result_ttl_s = -5", "result_ttl_s .* must be at least 1"),
        ("token = ''", "token in .* is empty"),
        ("token = '  '", "token in .* is empty"),
    ],
)
def test_mistakes_are_explained(tmp_path: Path, clean_env, text: str, message: str) -> None:
    config = tmp_path / "server.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings({}, config)


def test_empty_token_flag_is_refused_and_spaces_are_trimmed(tmp_path: Path, clean_env) -> None:
    with pytest.raises(ConfigError, match="token in the command line is empty"):
        load_settings({"token": ""}, tmp_path / "none.toml")
    assert load_settings({"token": " s3cret \n"}, tmp_path / "none.toml").token == "s3cret"
