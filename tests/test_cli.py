"""The console script as an artist runs it: one image with no server, and the listing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from kd_server.pngmeta import read_parameters

SCRIPT = [sys.executable, "-m", "kd_server.cli"]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KD_CONFIG": str(cwd / "none.toml")}
    env.pop("KD_MODEL_DIRS", None)
    return subprocess.run(
        [*SCRIPT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_generate_writes_a_png_from_the_embedded_model(tmp_path):
    out = tmp_path / "first.png"
    done = run("generate", "a lighthouse at dusk", "-o", str(out), "--steps", "3", "--seed", "4",
               cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}" in done.stdout
    with Image.open(out) as image:
        assert image.size == (256, 256)
    parameters = read_parameters(out.read_bytes())
    assert parameters is not None and parameters.startswith("a lighthouse at dusk\n")
    assert "Seed: 4" in parameters and "Model: tiny-sd15-embedded" in parameters


def test_generate_with_an_unknown_model_says_so_without_a_traceback(tmp_path):
    done = run("generate", "x", "--model", "nope", "-o", str(tmp_path / "x.png"), cwd=tmp_path)
    assert done.returncode == 1
    assert "error:" in done.stderr and "nope" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "x.png").exists()


def test_guidance_on_a_family_without_it_is_refused_in_words(tmp_path):
    """--guidance is Flux's; the embedded SD 1.5 model refuses it before anything runs."""
    out = tmp_path / "g.png"
    done = run("generate", "x", "--guidance", "2", "-o", str(out), cwd=tmp_path)
    assert done.returncode == 1
    assert "error:" in done.stderr and "guidance" in done.stderr
    assert "Traceback" not in done.stderr and not out.exists()


def test_models_lists_usable_and_refused_files(tmp_path):
    loras = tmp_path / "models" / "loras"
    checkpoints = tmp_path / "models" / "checkpoints"
    loras.mkdir(parents=True)
    checkpoints.mkdir(parents=True)
    (checkpoints / "old.ckpt").write_bytes(b"\x80\x04not really a pickle")
    (checkpoints / "broken.safetensors").write_bytes(b"\x05\x00")
    done = run("models", "--model-dir", str(tmp_path / "models"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any("tiny-sd15-embedded" in line and "usable" in line for line in lines)
    assert any("old.ckpt" in line and "refused" in line for line in lines)
    assert any("broken" in line and "unusable" in line for line in lines)


def test_bad_settings_file_is_explained(tmp_path):
    bad = tmp_path / "none.toml"
    bad.write_text("port = [not toml")
    done = run("models", cwd=tmp_path)
    assert done.returncode == 2
    assert "not valid TOML" in done.stderr and "Traceback" not in done.stderr


def test_prompt_syntax_embeddings_vae_and_clip_skip_from_the_console(tmp_path):
    from modelkit.embeddings import write_sd15_embedding
    from modelkit.loras import write_test_lora
    from modelkit.vaes import embedded_vae, write_vae

    webui = tmp_path / "webui"
    write_sd15_embedding(webui / "embeddings" / "grain.safetensors", 32)
    write_vae(webui / "models" / "VAE" / "warm.safetensors", embedded_vae(seed=7))
    write_test_lora(webui / "models" / "Lora", "ink", seed=3)
    listed = run("models", "--model-dir", str(webui), cwd=tmp_path).stdout.splitlines()
    assert any(line.startswith("embedding") and "grain" in line for line in listed)
    assert any(line.startswith("vae") and "warm" in line for line in listed)
    out = tmp_path / "cup.png"
    done = run("generate", "a (cup:1.2), grain <lora:ink:0.5>", "-o", str(out),
               "--steps", "2", "--width", "64", "--height", "64", "--vae", "warm",
               "--clip-skip", "2", "--model-dir", str(webui), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    parameters = read_parameters(out.read_bytes()) or ""
    assert parameters.startswith("a (cup:1.2), grain <lora:ink:0.5>\n")
    for recorded in ("Clip skip: 2", "VAE: warm", 'Lora weights: "ink: 0.5"'):
        assert recorded in parameters
