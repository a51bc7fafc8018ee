"""Styles: templates wrap the prompt as A1111 does, styles round trip through JSON
files, bad files are listed with a reason, A1111's styles.csv imports, and per-model
defaults are remembered. Plain logic, no Qt."""

from __future__ import annotations

import json
from pathlib import Path

from krita_diffusers.model_defaults import KEY, ModelDefaults
from krita_diffusers.protocol import Lora
from krita_diffusers.settings import MemoryStore
from krita_diffusers.styles import (
    SHIPPED_FOLDER,
    LiveSampling,
    Sampling,
    Style,
    apply_template,
    delete_style,
    detect_a1111,
    duplicate,
    file_name,
    from_dict,
    import_a1111,
    load_library,
    parse_a1111_csv,
    prompts_for,
    sampling_for,
    save_style,
    styles_folder,
    to_dict,
)

FALLBACK = Sampling("Euler a", 20, 7.0)


def test_template_wraps_the_prompt_like_a1111():
    assert apply_template("{prompt}, detailed oil painting", "a fox") == (
        "a fox, detailed oil painting"
    )
    assert apply_template("masterpiece", "a fox") == "a fox, masterpiece"
    assert apply_template("", "a fox") == "a fox"
    assert apply_template("photo of {prompt}", "") == "photo of"


def test_style_sets_the_job_prompts_and_sampling():
    style = Style("Oil", prompt="{prompt}, oil", negative_prompt="blurry", steps=30)
    assert prompts_for(style, "a fox", "text") == ("a fox, oil", "text, blurry")
    assert prompts_for(style, "  ", "") == ("", "blurry")  # the docker still asks
    assert prompts_for(None, " a fox ", "") == ("a fox", "")
    assert sampling_for(style, FALLBACK) == Sampling("Euler a", 30, 7.0)
    assert sampling_for(None, FALLBACK) == FALLBACK
    assert sampling_for(Style("Fast", sampler="auto"), FALLBACK).auto


def test_style_round_trips_through_its_file(tmp_path: Path):
    style = Style(
        "Ink, v2",
        checkpoint="sd15/dreamshaper.safetensors",
        sampler="DPM++ 2M Karras",
        steps=28,
        cfg_scale=6.5,
        loras=(Lora("ink.safetensors", 0.8),),
        prompt="{prompt}, ink drawing",
        negative_prompt="photo",
        live=LiveSampling(False, "LCM", 6, 1.5),
    )
    path = save_style(tmp_path, style)
    assert path.name == "Ink, v2.json"
    assert from_dict(json.loads(path.read_text())) == style
    library = load_library(tmp_path, tmp_path / "none")
    assert library.styles == [style] and not library.problems


def test_shipped_styles_load_and_the_artists_replace_them(tmp_path: Path):
    shipped = load_library(tmp_path / "missing")
    assert not shipped.problems
    names = shipped.names
    assert any("SD 1.5" in n for n in names) and any("SDXL" in n for n in names)
    assert shipped.find("Fast (Lightning, LCM, Turbo)").sampler == "auto"
    assert all(style.shipped for style in shipped.styles)
    mine = Style("SDXL Everyday", cfg_scale=4.0)
    save_style(tmp_path, mine)
    library = load_library(tmp_path)
    assert library.find("SDXL Everyday") == mine
    assert not library.find("SDXL Everyday").shipped
    assert len(library.styles) == len(shipped.styles)


def test_bad_files_are_listed_with_a_reason(tmp_path: Path):
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "steps.json").write_text(json.dumps({"name": "x", "steps": "many"}))
    (tmp_path / "cfg.json").write_text(json.dumps({"name": "y", "cfg_scale": 99}))
    (tmp_path / "ok.json").write_text(json.dumps({"name": "Only a template", "prompt": "a"}))
    (tmp_path / "notes.txt").write_text("not a style")
    library = load_library(tmp_path, tmp_path / "none")
    assert library.names == ["Only a template"]
    reasons = {p.path.name: p.reason for p in library.problems}
    assert set(reasons) == {"broken.json", "list.json", "steps.json", "cfg.json"}
    assert "not valid JSON" in reasons["broken.json"]
    assert "steps must be a number" in reasons["steps.json"]
    assert "between" in reasons["cfg.json"]


def test_duplicate_and_delete(tmp_path: Path):
    shipped = Style("SD 1.5 Everyday", shipped=True)
    copy = duplicate(shipped, ["SD 1.5 Everyday", "SD 1.5 Everyday copy"])
    assert copy.name == "SD 1.5 Everyday copy (2)" and not copy.shipped
    save_style(tmp_path, copy)
    assert delete_style(tmp_path, copy.name)
    assert not delete_style(tmp_path, copy.name)
    assert list(tmp_path.iterdir()) == []


def test_file_names_work_on_every_platform():
    assert file_name('a/b:c*?"<>|') == "a_b_c_.json"
    assert file_name("  ..  ") == "style.json"


def test_styles_folder_sits_in_the_plugins_data_folder(tmp_path: Path):
    home = tmp_path
    assert styles_folder("linux", {}, home) == home / ".local/share/krita-diffusers/styles"
    assert styles_folder("win32", {"LOCALAPPDATA": "C:/L"}, home) == Path(
        "C:/L/krita-diffusers/styles"
    )
    assert styles_folder("darwin", {}, home) == (
        home / "Library/Application Support/krita-diffusers/styles"
    )


A1111_CSV = (
    "name,prompt,negative_prompt\n"
    "None,,\n"
    '"Oil painting","{prompt}, oil painting, (brush strokes:1.2)","photo, blurry"\n'
    "Just quality,masterpiece,\n"
)


def test_a1111_styles_csv_imports(tmp_path: Path):
    styles = parse_a1111_csv("\ufeff" + A1111_CSV)
    assert [s.name for s in styles] == ["Oil painting", "Just quality"]
    assert styles[0].prompt == "{prompt}, oil painting, (brush strokes:1.2)"
    assert prompts_for(styles[1], "a fox", "") == ("a fox, masterpiece", "")
    webui = tmp_path / "stable-diffusion-webui"
    webui.mkdir()
    (webui / "styles.csv").write_text(A1111_CSV)
    assert detect_a1111(tmp_path) == webui
    mine = tmp_path / "mine"
    saved = import_a1111(webui / "styles.csv", mine, ["Oil painting"])
    assert [s.name for s in saved] == ["Oil painting (2)", "Just quality"]
    assert load_library(mine, tmp_path / "none").names == ["Just quality", "Oil painting (2)"]


def test_every_shipped_file_is_valid_json_with_the_format():
    for path in SHIPPED_FOLDER.glob("*.json"):
        data = json.loads(path.read_text())
        assert data["format"] == 1
        assert to_dict(from_dict(data)) == data


def test_model_defaults_are_remembered_per_model():
    store = MemoryStore()
    defaults = ModelDefaults(store)
    assert defaults.get("a.safetensors") is None
    defaults.remember("a.safetensors", Sampling("Euler", 25, 4.5))
    defaults.remember(None, Sampling("DDIM", 30, 8.0))
    defaults.remember("b", Sampling("x", 4, 1.0, auto=True))  # styles' business
    again = ModelDefaults(store)
    assert again.get("a.safetensors") == Sampling("Euler", 25, 4.5)
    assert again.get(None) == Sampling("DDIM", 30, 8.0)
    assert again.get("b") is None


def test_unreadable_model_defaults_are_forgotten():
    store = MemoryStore()
    store.set_value(KEY, "{oops")
    assert ModelDefaults(store).entries == {}
    store.set_value(KEY, json.dumps({"a": {"sampler": "Euler", "steps": 0, "cfg_scale": 7}}))
    assert ModelDefaults(store).get("a") is None


def test_live_sampling_follows_the_style():
    from krita_diffusers.styles import live_sampling_for

    job = Sampling("Euler", 20, 7.0)
    assert live_sampling_for(None, job, fast=True) is None  # the server's fast settings
    assert live_sampling_for(None, job, fast=False) == job
    own = Style("Live", live=LiveSampling(False, "LCM", 6, None))
    assert live_sampling_for(own, job, fast=True) == Sampling("LCM", 6, 7.0)
    fast_style = Style("Fast", sampler="auto")
    assert live_sampling_for(fast_style, Sampling("Euler", 20, 7.0, auto=True), False) == job


def test_lora_text_of_the_editor_round_trips():
    from krita_diffusers.styles import format_loras, parse_loras

    loras = (Lora("styles/ink:v2.safetensors", 0.8), Lora("detail", 1.0))
    assert parse_loras(format_loras(loras)) == loras
    assert parse_loras("plain, odd:x, ") == (Lora("plain", 1.0), Lora("odd:x", 1.0))
