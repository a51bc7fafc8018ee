"""The model library: layouts, names, family detection and refusals, on real files.

The checkpoints here are tiny (a handful of small tensors) but carry the key names of
the original layouts, which is all detection reads.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from kd_server.families import Family
from kd_server.generation import EngineError, EngineErrorCode
from kd_server.library import (
    EMBEDDED_NAME,
    EntryKind,
    EntryStatus,
    ModelEntry,
    ModelFormat,
    ModelLibrary,
    read_safetensors_header,
)

UNET_IN = "model.diffusion_model.input_blocks.0.0.weight"
VAE = "first_stage_model.encoder.conv_in.weight"


def _t(*shape: int) -> torch.Tensor:
    return torch.zeros(shape)


def sd15_tensors(channels: int = 4) -> dict[str, torch.Tensor]:
    return {
        UNET_IN: _t(8, channels, 3, 3),
        "model.diffusion_model.out.2.weight": _t(4, 8, 3, 3),
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": _t(16, 8),
        VAE: _t(8, 3, 3, 3),
    }


def sdxl_tensors(channels: int = 4) -> dict[str, torch.Tensor]:
    return {
        UNET_IN: _t(8, channels, 3, 3),
        "model.diffusion_model.label_emb.0.0.weight": _t(8, 16),
        "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight": _t(
            16, 8
        ),
        "conditioner.embedders.1.model.token_embedding.weight": _t(16, 12),
        "conditioner.embedders.1.model.text_projection": _t(12, 12),
        VAE: _t(8, 3, 3, 3),
    }


def sd2_tensors() -> dict[str, torch.Tensor]:
    return {
        UNET_IN: _t(8, 4, 3, 3),
        "cond_stage_model.model.token_embedding.weight": _t(16, 8),
        "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight": _t(24, 8),
        VAE: _t(8, 3, 3, 3),
    }


def flux_tensors() -> dict[str, torch.Tensor]:
    return {
        "double_blocks.0.img_attn.proj.weight": _t(8, 8),
        "single_blocks.0.linear1.weight": _t(8, 8),
        "img_in.weight": _t(8, 4),
    }


def sd3_tensors() -> dict[str, torch.Tensor]:
    return {
        "model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": _t(24, 8),
        "model.diffusion_model.pos_embed": _t(1, 16, 8),
    }


def kohya_lora(xl: bool = False) -> dict[str, torch.Tensor]:
    te = "lora_te1_" if xl else "lora_te_"
    tensors = {
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": _t(2, 8),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": _t(8, 2),
        "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(2.0),
        f"{te}text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": _t(2, 8),
        f"{te}text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": _t(8, 2),
    }
    if xl:
        tensors["lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"] = _t(2, 8)
    return tensors


def peft_lora() -> dict[str, torch.Tensor]:
    return {
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight": _t(2, 8),
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight": _t(8, 2),
    }


def write(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def write_diffusers(folder: Path, pipeline: str, in_channels: int, **unet: object) -> Path:
    """A diffusers folder as `save_pretrained` leaves it (configs + safetensors weights)."""
    components = ["unet", "vae", "text_encoder"] + (["text_encoder_2"] if "XL" in pipeline else [])
    index = {"_class_name": pipeline, "_diffusers_version": "0.42.1"}
    index.update({c: ["diffusers", "X"] for c in components})
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps(index), encoding="utf-8")
    for component in components:
        (folder / component).mkdir()
        write(folder / component / "model.safetensors", {"w": _t(2)})
    config = {"in_channels": in_channels, "cross_attention_dim": 32, **unet}
    (folder / "unet" / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def by_name(entries: list[ModelEntry]) -> dict[str, ModelEntry]:
    return {e.name: e for e in entries}


# --- layouts and names ---------------------------------------------------------------


def test_our_layout_names_and_families(tmp_path: Path) -> None:
    write(tmp_path / "checkpoints" / "base.safetensors", sd15_tensors())
    write(tmp_path / "checkpoints" / "sdxl" / "juggernaut.safetensors", sdxl_tensors())
    write(tmp_path / "checkpoints" / "sd15-inpaint.safetensors", sd15_tensors(channels=9))
    write(tmp_path / "checkpoints" / "sdxl" / "inpaint.safetensors", sdxl_tensors(channels=9))
    write(tmp_path / "loras" / "style" / "ink.safetensors", kohya_lora())
    library = ModelLibrary([tmp_path])

    checkpoints = by_name(library.checkpoints())
    assert set(checkpoints) == {
        "base",
        "sdxl/juggernaut",
        "sd15-inpaint",
        "sdxl/inpaint",
        EMBEDDED_NAME,
    }
    assert checkpoints["base"].family is Family.SD15
    assert checkpoints["sdxl/juggernaut"].family is Family.SDXL
    assert checkpoints["sd15-inpaint"].family is Family.SD15_INPAINT
    assert checkpoints["sdxl/inpaint"].family is Family.SDXL_INPAINT
    assert all(e.usable and e.reason is None for e in checkpoints.values())
    juggernaut = library.get_checkpoint("sdxl/juggernaut")
    assert juggernaut.path == tmp_path / "checkpoints" / "sdxl" / "juggernaut.safetensors"
    assert juggernaut.format is ModelFormat.SAFETENSORS
    assert juggernaut.kind is EntryKind.CHECKPOINT
    lora = library.get_lora("style/ink")
    assert lora.kind is EntryKind.LORA and lora.family is Family.SD15


def test_a1111_and_comfyui_roots_and_models_folders(tmp_path: Path) -> None:
    a1111 = tmp_path / "stable-diffusion-webui"
    write(a1111 / "models" / "Stable-diffusion" / "dreamshaper.safetensors", sd15_tensors())
    write(a1111 / "models" / "Lora" / "detail.safetensors", kohya_lora())
    comfy = tmp_path / "ComfyUI"
    write(comfy / "models" / "checkpoints" / "xl" / "base.safetensors", sdxl_tensors())
    write(comfy / "models" / "loras" / "xl-style.safetensors", kohya_lora(xl=True))
    write_diffusers(comfy / "models" / "diffusers" / "sd15-folder", "StableDiffusionPipeline", 4)
    other = tmp_path / "other-webui" / "models"  # an A1111 models/ folder given directly
    write(other / "Stable-diffusion" / "anything.safetensors", sd15_tensors())

    library = ModelLibrary([a1111, comfy, other], include_embedded=False)
    names = [e.name for e in library.checkpoints()]
    assert names == ["anything", "dreamshaper", "sd15-folder", "xl/base"]  # sorted by name
    assert [e.name for e in library.loras()] == ["detail", "xl-style"]
    assert library.get_lora("xl-style").family is Family.SDXL
    # Used in place: the paths are the artist's own files.
    assert library.get_checkpoint("dreamshaper").path == (
        a1111 / "models" / "Stable-diffusion" / "dreamshaper.safetensors"
    )
    assert library.problems == []


def test_diffusers_folders(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    write_diffusers(root / "sd15", "StableDiffusionPipeline", 4)
    write_diffusers(root / "nested" / "sd15-inpaint", "StableDiffusionInpaintPipeline", 9)
    write_diffusers(root / "xl", "StableDiffusionXLPipeline", 4)
    write_diffusers(root / "xl-inpaint", "StableDiffusionXLInpaintPipeline", 9)
    write_diffusers(root / "sd21", "StableDiffusionPipeline", 4, cross_attention_dim=1024)
    write_diffusers(root / "flux", "FluxPipeline", 64)
    pickled = write_diffusers(root / "old", "StableDiffusionPipeline", 4)
    (pickled / "unet" / "model.safetensors").rename(
        pickled / "unet" / "diffusion_pytorch_model.bin"
    )
    library = ModelLibrary([tmp_path], include_embedded=False)
    entries = by_name(library.checkpoints())

    assert entries["sd15"].family is Family.SD15 and entries["sd15"].usable
    assert entries["sd15"].format is ModelFormat.DIFFUSERS
    assert entries["sd15"].path == root / "sd15"
    assert entries["nested/sd15-inpaint"].family is Family.SD15_INPAINT
    assert entries["xl"].family is Family.SDXL
    assert entries["xl-inpaint"].family is Family.SDXL_INPAINT
    assert entries["sd21"].status is EntryStatus.UNUSABLE and "SD 2" in entries["sd21"].reason
    # Flux / SD 3.5 diffusers folders: tests/test_split_layout.py. Without a transformer:
    assert entries["flux"].status is EntryStatus.UNUSABLE and "Flux" in entries["flux"].reason
    assert "no transformer" in entries["flux"].reason
    assert entries["old"].status is EntryStatus.REFUSED
    assert "pickle" in entries["old"].reason
    # Weight files inside a diffusers folder are not listed as models of their own.
    assert not any(name.startswith("sd15/") for name in entries)


def test_plain_folder_lists_each_file_as_what_it_is(tmp_path: Path) -> None:
    write(tmp_path / "model.safetensors", sdxl_tensors())
    write(tmp_path / "my-lora.safetensors", peft_lora())
    (tmp_path / "model.png").write_bytes(b"preview image, not a model")
    (tmp_path / "model.yaml").write_text("config: not a model", encoding="utf-8")
    library = ModelLibrary([tmp_path], include_embedded=False)
    assert [e.name for e in library.checkpoints()] == ["model"]
    assert [e.name for e in library.loras()] == ["my-lora"]
    assert library.get_lora("my-lora").family is None  # peft UNet-only keys: no family hint


def test_configured_folder_that_is_a_diffusers_model(tmp_path: Path) -> None:
    folder = write_diffusers(tmp_path / "sdxl-base", "StableDiffusionXLPipeline", 4)
    library = ModelLibrary([folder], include_embedded=False)
    assert library.get_checkpoint("sdxl-base").family is Family.SDXL


def test_collisions_between_roots_are_disambiguated_deterministically(tmp_path: Path) -> None:
    first = tmp_path / "webui"
    second = tmp_path / "ComfyUI"
    write(first / "models" / "Stable-diffusion" / "v1-5.safetensors", sd15_tensors())
    write(second / "models" / "checkpoints" / "v1-5.safetensors", sdxl_tensors())
    library = ModelLibrary([first, second], include_embedded=False)
    entries = by_name(library.checkpoints())
    assert entries["v1-5"].family is Family.SD15  # the first configured folder keeps the name
    assert entries["v1-5 (ComfyUI)"].family is Family.SDXL
    swapped = ModelLibrary([second, first], include_embedded=False)
    assert swapped.get_checkpoint("v1-5").family is Family.SDXL
    assert swapped.get_checkpoint("v1-5 (webui)").family is Family.SD15
    # Rescanning gives the same names.
    library.refresh()
    assert set(by_name(library.checkpoints())) == set(entries)


def test_file_and_diffusers_folder_with_the_same_name(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    write_diffusers(root / "model", "StableDiffusionXLPipeline", 4)
    write(root / "model.safetensors", sd15_tensors())
    library = ModelLibrary([tmp_path], include_embedded=False)
    entries = by_name(library.checkpoints())
    assert entries["model"].format is ModelFormat.DIFFUSERS  # folders come before files
    assert entries[f"model ({tmp_path.name})"].format is ModelFormat.SAFETENSORS


def test_a_file_cannot_take_the_embedded_models_name(tmp_path: Path) -> None:
    write(tmp_path / "checkpoints" / f"{EMBEDDED_NAME}.safetensors", sdxl_tensors())
    library = ModelLibrary([tmp_path])
    embedded = library.get_checkpoint(EMBEDDED_NAME)
    assert embedded.format is ModelFormat.EMBEDDED and embedded.path is None
    assert library.get_checkpoint(f"{EMBEDDED_NAME} ({tmp_path.name})").family is Family.SDXL


def test_same_folder_listed_twice_is_scanned_once(tmp_path: Path) -> None:
    write(tmp_path / "checkpoints" / "one.safetensors", sd15_tensors())
    library = ModelLibrary([tmp_path, tmp_path / ".." / tmp_path.name], include_embedded=False)
    assert [e.name for e in library.checkpoints()] == ["one"]


# --- defaults and lookups ----------------------------------------------------------------


def test_embedded_model_is_listed_and_is_the_default_when_nothing_else(tmp_path: Path) -> None:
    library = ModelLibrary([tmp_path])
    (embedded,) = library.checkpoints()
    assert embedded == ModelEntry(
        EMBEDDED_NAME,
        EntryKind.CHECKPOINT,
        None,
        ModelFormat.EMBEDDED,
        Family.SD15,
        EntryStatus.USABLE,
        None,
    )
    assert library.default_checkpoint() == embedded
    assert ModelLibrary([tmp_path], include_embedded=False).checkpoints() == []


def test_default_is_first_usable_real_checkpoint_or_the_preferred(tmp_path: Path) -> None:
    write(tmp_path / "checkpoints" / "a-broken.safetensors", {"x": _t(2)})
    write(tmp_path / "checkpoints" / "b-model.safetensors", sdxl_tensors())
    write(tmp_path / "checkpoints" / "c-model.safetensors", sd15_tensors())
    library = ModelLibrary([tmp_path])
    assert library.default_checkpoint().name == "b-model"
    assert library.default_checkpoint("c-model").name == "c-model"
    assert library.default_checkpoint(EMBEDDED_NAME).format is ModelFormat.EMBEDDED
    with pytest.raises(EngineError) as missing:
        library.default_checkpoint("nope")
    assert missing.value.code is EngineErrorCode.MODEL_NOT_FOUND


def test_default_prefers_general_models_and_follows_the_setting(tmp_path: Path) -> None:
    write(tmp_path / "checkpoints" / "a-inpaint.safetensors", sd15_tensors(channels=9))
    write(tmp_path / "checkpoints" / "z-general.safetensors", sdxl_tensors())
    assert ModelLibrary([tmp_path]).default_checkpoint().name == "z-general"
    chosen = ModelLibrary([tmp_path], default_model="a-inpaint")
    assert chosen.default_checkpoint().name == "a-inpaint"
    with pytest.raises(EngineError) as missing:
        ModelLibrary([tmp_path], default_model="gone").default_checkpoint()
    assert missing.value.code is EngineErrorCode.MODEL_NOT_FOUND


def test_no_usable_checkpoint_without_embedded_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "checkpoints" / "broken.safetensors", {"x": _t(2)})
    library = ModelLibrary([tmp_path], include_embedded=False)
    with pytest.raises(EngineError) as error:
        library.default_checkpoint()
    assert error.value.code is EngineErrorCode.MODEL_NOT_FOUND


def test_unknown_names_list_what_is_available(tmp_path: Path) -> None:
    write(tmp_path / "checkpoints" / "dreamshaper.safetensors", sd15_tensors())
    write(tmp_path / "loras" / "ink.safetensors", kohya_lora())
    library = ModelLibrary([tmp_path])
    with pytest.raises(EngineError) as error:
        library.get_checkpoint("dreamshaper.safetensors")
    assert error.value.code is EngineErrorCode.MODEL_NOT_FOUND
    assert "Did you mean 'dreamshaper'?" in error.value.message
    assert EMBEDDED_NAME in error.value.message
    with pytest.raises(EngineError) as lora_error:
        library.get_lora("dreamshaper")
    assert lora_error.value.code is EngineErrorCode.LORA_NOT_FOUND
    assert "'ink'" in lora_error.value.message


def test_unusable_entries_raise_with_their_reason(tmp_path: Path) -> None:
    write(tmp_path / "checkpoints" / "flux-dev.safetensors", flux_tensors())
    write(tmp_path / "loras" / "sd2-model.safetensors", sd2_tensors())
    library = ModelLibrary([tmp_path])
    with pytest.raises(EngineError) as error:
        library.get_checkpoint("flux-dev")
    assert error.value.code is EngineErrorCode.MODEL_UNUSABLE
    assert "Flux" in error.value.message
    with pytest.raises(EngineError) as lora_error:
        library.get_lora("sd2-model")
    assert lora_error.value.code is EngineErrorCode.LORA_UNUSABLE


@pytest.mark.parametrize(
    "name",
    [
        "../outside",
        "../../outside",
        "sub/../../outside",
        "%2e%2e/outside",
        "..%2Foutside",
        "..\\outside",
        "sub\\..\\..\\outside",
        "/outside",
        "OUTSIDE_ABSOLUTE",
        "",
        ".",
        "sub",
    ],
)
def test_names_cannot_reach_outside_the_folders(tmp_path: Path, name: str) -> None:
    models = tmp_path / "models"
    write(models / "checkpoints" / "sub" / "inside.safetensors", sd15_tensors())
    write(models / "loras" / "sub" / "inside.safetensors", kohya_lora())
    outside = write(tmp_path / "outside.safetensors", sd15_tensors())
    write(tmp_path / "loras" / "outside.safetensors", kohya_lora())
    if name == "OUTSIDE_ABSOLUTE":
        name = str(outside)
    library = ModelLibrary([models])
    assert library.get_checkpoint("sub/inside").usable
    with pytest.raises(EngineError) as error:
        library.get_checkpoint(name)
    assert error.value.code is EngineErrorCode.MODEL_NOT_FOUND
    with pytest.raises(EngineError) as lora_error:
        library.get_lora(name)
    assert lora_error.value.code is EngineErrorCode.LORA_NOT_FOUND


def test_symlinks_leaving_the_root_are_listed_unusable(tmp_path: Path) -> None:
    models = tmp_path / "models"
    elsewhere = tmp_path / "elsewhere"
    target = write(elsewhere / "secret.safetensors", sd15_tensors())
    write(elsewhere / "folder" / "more.safetensors", sd15_tensors())
    write_diffusers(elsewhere / "diffusers-model", "StableDiffusionPipeline", 4)
    write(models / "checkpoints" / "real.safetensors", sd15_tensors())
    root = models / "checkpoints"
    (root / "linked.safetensors").symlink_to(target)
    (root / "linked-folder").symlink_to(elsewhere / "folder", target_is_directory=True)
    (root / "linked-diffusers").symlink_to(elsewhere / "diffusers-model", target_is_directory=True)
    (root / "inner.safetensors").symlink_to(root / "real.safetensors")
    (root / "loop").symlink_to(root, target_is_directory=True)

    library = ModelLibrary([models], include_embedded=False)
    entries = by_name(library.checkpoints())
    assert set(entries) == {"real", "linked", "linked-diffusers", "inner"}
    assert entries["linked"].status is EntryStatus.UNUSABLE
    assert "outside its model folder" in entries["linked"].reason
    assert entries["linked-diffusers"].status is EntryStatus.UNUSABLE
    assert entries["inner"].usable  # a link that stays inside is fine
    assert any("linked-folder" in p.message for p in library.problems)
    with pytest.raises(EngineError):
        library.get_checkpoint("linked-folder/more")


# --- what is not a usable checkpoint -----------------------------------------------------


def test_unsupported_architectures_are_unusable_with_reasons(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    write(root / "sd21.safetensors", sd2_tensors())
    write(root / "flux.safetensors", flux_tensors())
    write(root / "sd3.safetensors", sd3_tensors())
    write(root / "unknown.safetensors", {"some.weight": _t(4, 4)})
    write(
        root / "vae.safetensors", {"encoder.conv_in.weight": _t(2), "decoder.conv_in.weight": _t(2)}
    )
    refiner = {UNET_IN: _t(8, 4, 3, 3), "conditioner.embedders.0.model.ln_final.weight": _t(8)}
    write(root / "refiner.safetensors", refiner | {VAE: _t(8, 3, 3, 3)})
    write(root / "pix2pix.safetensors", sd15_tensors(channels=8))
    write(root / "unet-only.safetensors", {UNET_IN: _t(8, 4, 3, 3)})
    no_vae = {k: v for k, v in sd15_tensors().items() if k != VAE}
    write(root / "no-vae.safetensors", no_vae)
    library = ModelLibrary([tmp_path], include_embedded=False)
    entries = by_name(library.checkpoints())
    expected = {
        "sd21": "SD 2.x",
        "flux": "incomplete Flux",
        "sd3": "incomplete SD 3",
        "unknown": "Unknown architecture",
        "vae": "VAE",
        "refiner": "refiner",
        "pix2pix": "8 input channels",
        "unet-only": "only a UNet",
        "no-vae": "no VAE",
    }
    for name, words in expected.items():
        assert entries[name].status is EntryStatus.UNUSABLE, name
        assert entries[name].family is None, name
        assert words in entries[name].reason, (name, entries[name].reason)


def test_prefixed_checkpoint_is_detected_but_explained(tmp_path: Path) -> None:
    prefixed = {f"state_dict.{k}": v for k, v in sdxl_tensors().items()}
    write(tmp_path / "checkpoints" / "prefixed.safetensors", prefixed)
    entry = by_name(ModelLibrary([tmp_path]).checkpoints())["prefixed"]
    assert entry.family is Family.SDXL
    assert entry.status is EntryStatus.UNUSABLE
    assert "'state_dict.'" in entry.reason


def test_pruned_fp16_checkpoint_is_usable(tmp_path: Path) -> None:
    pruned = {k: v.half() for k, v in sd15_tensors().items()}
    write(tmp_path / "checkpoints" / "pruned-fp16.safetensors", pruned)
    assert ModelLibrary([tmp_path]).get_checkpoint("pruned-fp16").family is Family.SD15


def test_broken_files_are_unusable_and_never_break_the_scan(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    good = write(root / "good.safetensors", sd15_tensors())
    (root / "empty.safetensors").write_bytes(b"")
    (root / "tiny.safetensors").write_bytes(b"abc")
    (root / "text.safetensors").write_text("<html>Rate limit exceeded</html>", encoding="utf-8")
    data = good.read_bytes()
    (root / "truncated.safetensors").write_bytes(data[: len(data) - 16])
    (length,) = struct.unpack("<Q", data[:8])
    (root / "cut-header.safetensors").write_bytes(data[: 8 + length // 2])
    garbage_header = b"{not json" + b" " * 40
    (root / "garbage.safetensors").write_bytes(
        struct.pack("<Q", len(garbage_header)) + garbage_header
    )
    list_header = b"[1, 2, 3]"
    (root / "list.safetensors").write_bytes(struct.pack("<Q", len(list_header)) + list_header)
    huge = struct.pack("<Q", 2**63) + b"{}"
    (root / "huge-length.safetensors").write_bytes(huge)
    write(root / "nothing.safetensors", {})
    (root / "folder.safetensors").mkdir()

    library = ModelLibrary([tmp_path], include_embedded=False)
    entries = by_name(library.checkpoints())
    assert entries["good"].usable
    expected = {
        "empty": "empty",
        "tiny": "only 3 bytes",
        "text": "Not a safetensors file",
        "truncated": "truncated",
        "cut-header": "Not a safetensors file",
        "garbage": "not valid JSON",
        "list": "not a JSON object",
        "huge-length": "Not a safetensors file",
        "nothing": "no tensors",
    }
    for name, words in expected.items():
        assert entries[name].status is EntryStatus.UNUSABLE, name
        assert words in entries[name].reason, (name, entries[name].reason)
    assert "folder" not in entries  # a folder named *.safetensors is just a folder


def test_header_reader_reads_shapes_without_weights(tmp_path: Path) -> None:
    path = write(tmp_path / "m.safetensors", sd15_tensors(channels=9))
    shapes = read_safetensors_header(path)
    assert shapes[UNET_IN] == (8, 9, 3, 3)


MARKER = "KD_TEST_MARKER"


class _Boom:
    """Unpickling this creates a marker file: proof that a file was unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (os.makedirs, (self.marker, 0o755))


def _write_pickle(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"state_dict": _Boom(str(marker))}))


def test_pickle_files_are_refused_and_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled-marker"
    names = ["old.ckpt", "model.pt", "weights.pth", "pytorch_model.bin"]
    for name in names:
        _write_pickle(tmp_path / "checkpoints" / name, marker)
    _write_pickle(tmp_path / "checkpoints" / "disguised.safetensors", marker)
    _write_pickle(tmp_path / "loras" / "style.pt", marker)
    torch.save({"w": torch.zeros(2)}, tmp_path / "checkpoints" / "zipped.safetensors")
    # Sanity: unpickling one of these really would create the marker.
    probe = tmp_path / "probe-marker"
    _write_pickle(tmp_path / "probe.ckpt", probe)
    pickle.loads((tmp_path / "probe.ckpt").read_bytes())
    assert probe.exists()

    library = ModelLibrary([tmp_path], include_embedded=False)
    library.refresh()
    entries = by_name(library.checkpoints())
    assert not marker.exists()
    for name in [*names, "disguised", "zipped"]:
        entry = entries[name]
        assert entry.status is EntryStatus.REFUSED, name
        assert "can run code" in entry.reason
        assert "safetensors" in entry.reason and "weights_only=True" in entry.reason
    assert entries["old.ckpt"].format is ModelFormat.PICKLE
    lora = by_name(library.loras())["style.pt"]
    assert lora.status is EntryStatus.REFUSED
    with pytest.raises(EngineError) as error:
        library.get_checkpoint("old.ckpt")
    assert error.value.code is EngineErrorCode.MODEL_UNUSABLE
    assert "can run code" in error.value.message


def test_converted_copy_beside_a_pickle_keeps_both_names(tmp_path: Path) -> None:
    _write_pickle(tmp_path / "checkpoints" / "old.ckpt", tmp_path / "marker")
    write(tmp_path / "checkpoints" / "old.safetensors", sd15_tensors())
    library = ModelLibrary([tmp_path], include_embedded=False)
    assert library.get_checkpoint("old").usable
    assert by_name(library.checkpoints())["old.ckpt"].status is EntryStatus.REFUSED


# --- LoRAs ---------------------------------------------------------------------------------


def test_lora_key_layouts(tmp_path: Path) -> None:
    root = tmp_path / "loras"
    write(root / "kohya.safetensors", kohya_lora())
    write(root / "kohya-xl.safetensors", kohya_lora(xl=True))
    write(root / "peft.safetensors", peft_lora())
    old_diffusers = {
        "unet.down_blocks.0.attentions.0.proj_in.lora.down.weight": _t(2, 8),
        "unet.down_blocks.0.attentions.0.proj_in.lora.up.weight": _t(8, 2),
    }
    write(root / "old-diffusers.safetensors", old_diffusers)
    te_peft = {"text_encoder_2.text_model.encoder.layers.0.q_proj.lora_A.weight": _t(2, 8)}
    write(root / "te-peft.safetensors", te_peft)
    flux_lora = {"lora_unet_double_blocks_0_img_attn_proj.lora_down.weight": _t(2, 8)}
    write(root / "flux-lora.safetensors", flux_lora)
    # Flux and SD 3 LoRAs in their other key layouts: tests/test_split_layout.py
    library = ModelLibrary([tmp_path])
    entries = by_name(library.loras())
    assert entries["kohya"].family is Family.SD15
    assert entries["kohya-xl"].family is Family.SDXL
    assert entries["te-peft"].family is Family.SDXL
    for name in ["kohya", "kohya-xl", "peft", "old-diffusers", "te-peft"]:
        assert entries[name].usable, name
        assert entries[name].kind is EntryKind.LORA
    assert entries["flux-lora"].usable and entries["flux-lora"].family is Family.FLUX_DEV


def test_checkpoints_and_loras_in_the_wrong_folder(tmp_path: Path) -> None:
    write(tmp_path / "loras" / "a-checkpoint.safetensors", sdxl_tensors())
    write(tmp_path / "loras" / "not-a-lora.safetensors", {"some.weight": _t(2)})
    write(tmp_path / "checkpoints" / "a-lora.safetensors", kohya_lora())
    library = ModelLibrary([tmp_path])
    loras = by_name(library.loras())
    checkpoints = by_name(library.checkpoints())
    assert loras["a-checkpoint"].status is EntryStatus.UNUSABLE
    assert "checkpoint in a LoRA folder" in loras["a-checkpoint"].reason
    assert "Not a LoRA" in loras["not-a-lora"].reason
    assert checkpoints["a-lora"].status is EntryStatus.UNUSABLE
    assert "LoRA in a checkpoint folder" in checkpoints["a-lora"].reason
    with pytest.raises(EngineError) as error:
        library.get_lora("a-checkpoint")
    assert error.value.code is EngineErrorCode.LORA_UNUSABLE


# --- scanning ----------------------------------------------------------------------------


def test_missing_folder_is_reported_not_raised(tmp_path: Path) -> None:
    write(tmp_path / "real" / "checkpoints" / "m.safetensors", sd15_tensors())
    library = ModelLibrary([tmp_path / "missing", tmp_path / "real"])
    assert library.get_checkpoint("m").usable
    (problem,) = library.problems
    assert "does not exist" in problem.message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders whatever their permissions")
def test_unreadable_folder_is_reported(tmp_path: Path) -> None:
    locked = tmp_path / "checkpoints" / "locked"
    write(locked / "m.safetensors", sd15_tensors())
    write(tmp_path / "checkpoints" / "ok.safetensors", sd15_tensors())
    locked.chmod(0)
    try:
        library = ModelLibrary([tmp_path])
    finally:
        locked.chmod(0o755)
    assert library.get_checkpoint("ok").usable
    assert any("locked" in p.message for p in library.problems)


def test_refresh_sees_new_changed_and_removed_files(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    model = write(root / "model.safetensors", sd15_tensors())
    library = ModelLibrary([tmp_path], include_embedded=False)
    assert library.get_checkpoint("model").family is Family.SD15
    write(root / "new.safetensors", sdxl_tensors())
    write(model, sdxl_tensors(channels=9))  # replaced in place: size/mtime change
    library.refresh()
    assert library.get_checkpoint("new").family is Family.SDXL
    assert library.get_checkpoint("model").family is Family.SDXL_INPAINT
    model.unlink()
    library.refresh()
    with pytest.raises(EngineError):
        library.get_checkpoint("model")


def test_hidden_files_and_folders_are_skipped(tmp_path: Path) -> None:
    write(tmp_path / "checkpoints" / ".cache" / "x.safetensors", sd15_tensors())
    write(tmp_path / "checkpoints" / "._model.safetensors", sd15_tensors())
    assert ModelLibrary([tmp_path], include_embedded=False).checkpoints() == []
