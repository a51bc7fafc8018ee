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


def test_t5_tokenizer_from_file_environment_and_flags(tmp_path: Path, clean_env) -> None:
    """The T5 tokenizer folder of Flux / SD 3.5: each way of setting it, and a folder
    without a tokenizer refused with what it must hold and how to get one."""
    from kd_server.cli import build_parser

    clean_env.delenv("KD_T5_TOKENIZER", raising=False)
    found, env, flag, empty = (tmp_path / name for name in ("file", "env", "flag", "empty"))
    for folder, name in ((found, "tokenizer.json"), (env, "spiece.model"), (flag, "spiece.model")):
        folder.mkdir()
        (folder / name).write_bytes(b"{}")
    empty.mkdir()
    config = tmp_path / "server.toml"
    assert load_settings({}, tmp_path / "none.toml").t5_tokenizer is None
    config.write_text(f"t5_tokenizer = {str(found)!r}\n")
    assert load_settings({}, config).t5_tokenizer == found
    clean_env.setenv("KD_T5_TOKENIZER", str(env))
    assert load_settings({}, config).t5_tokenizer == env
    assert load_settings({"t5_tokenizer": str(flag)}, config).t5_tokenizer == flag
    for argv in (["serve"], ["generate", "a fox"]):
        args = build_parser().parse_args([*argv, "--t5-tokenizer", str(flag)])
        assert args.t5_tokenizer == str(flag)
    wanted = (
        "t5_tokenizer in {} must be a folder holding T5's tokenizer.json or spiece.model, "
        "and {} holds neither. Get one with `python3 -m installer download t5-tokenizer"
    )
    with pytest.raises(ConfigError) as refused:
        load_settings({"t5_tokenizer": str(empty)}, config)
    assert str(refused.value).startswith(wanted.format("the command line", empty))
    clean_env.setenv("KD_T5_TOKENIZER", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="t5_tokenizer in the environment must be a folder"):
        load_settings({}, config)
    clean_env.delenv("KD_T5_TOKENIZER")
    config.write_text(f"t5_tokenizer = {str(found / 'tokenizer.json')!r}\n")  # the file itself
    with pytest.raises(ConfigError, match=f"t5_tokenizer in {config} must be a folder"):
        load_settings({}, config)


def test_t5_tokenizer_reaches_every_engine(tmp_path: Path) -> None:
    """Single device, worker processes and Ray replicas (their ReplicaConfig) all build
    their engine with the folder; the Engine passes it to `load_model` (shown by
    tests/engine/test_flux_sd3_loading.py)."""
    import pickle

    from kd_server.api.app import _engines
    from kd_server.config import Settings
    from kd_server.executors.stream import ReplicaConfig
    from kd_server.library import ModelLibrary

    folder = tmp_path / "tokenizer-t5"
    settings = Settings(device="cpu", state_dir=None, t5_tokenizer=folder)
    engine, executor = _engines(settings, ModelLibrary([]))
    assert executor is None and engine.t5_tokenizer == folder  # type: ignore[attr-defined]
    config = pickle.loads(pickle.dumps(ReplicaConfig.from_settings(settings, "cpu")))
    assert config.t5_tokenizer == str(folder)
    replica, _ = config.build()
    assert replica.t5_tokenizer == folder
    assert ReplicaConfig.from_settings(Settings(), "cpu").build()[0].t5_tokenizer is None


def test_a_wrong_t5_tokenizer_flag_stops_the_console_in_words(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "KD_CONFIG": str(tmp_path / "none.toml")}
    env.pop("KD_T5_TOKENIZER", None)
    done = subprocess.run(
        [sys.executable, "-m", "kd_server.cli", "generate", "x", "--t5-tokenizer", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "spiece.model" in done.stderr and "download t5-tokenizer" in done.stderr
    assert "Traceback" not in done.stderr
