"""Control models found where artists keep them, told apart by their safetensors header
(issue 16): A1111's and its ControlNet extension's folders, ComfyUI's, ours; family and
kind; what is refused or unusable and why; tiny stand-ins round-trip exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kd_server.control import loading
from kd_server.control.files import ControlRole, EmbedSource, detect_control
from kd_server.devices import choose_device
from kd_server.families import Family
from kd_server.library import EntryKind, EntryStatus, ModelLibrary
from modelkit import control_models
from support.control import (
    DEPTH,
    ENCODER,
    ESTIMATOR,
    IP_ADAPTER,
    LINES,
    SDXL_CONTROLNET_HEADER,
    Layout,
    write_control_models,
    write_tensors,
)

A1111 = Layout(
    controlnet="models/ControlNet",
    ipadapter="extensions/sd-webui-controlnet/models",
    clip_vision="models/clip_vision",
    depth="models/depth",
)
OURS = Layout(
    controlnet="controlnet", ipadapter="ipadapter", clip_vision="clip_vision", depth="depth"
)


def entries(library: ModelLibrary, kind: EntryKind) -> dict[str, object]:
    return {e.name: e for e in library.entries(kind)}


@pytest.mark.parametrize("layout", [Layout(), A1111, OURS], ids=["comfyui", "a1111", "ours"])
def test_every_kind_is_found_in_each_layout(tmp_path, layout):
    library = ModelLibrary([write_control_models(tmp_path, layout=layout)])
    controls = entries(library, EntryKind.CONTROL)
    assert set(controls) == {DEPTH, LINES, IP_ADAPTER}
    for name, layout_kind in ((DEPTH, "ldm"), (LINES, "diffusers")):
        entry = controls[name]
        assert entry.usable and entry.family is Family.SD15
        assert entry.facts.role is ControlRole.CONTROLNET and entry.facts.layout == layout_kind
    adapter = controls[IP_ADAPTER]
    assert adapter.usable and adapter.family is Family.SD15
    assert adapter.facts.role is ControlRole.IP_ADAPTER
    assert [e.name for e in library.entries(EntryKind.IMAGE_ENCODER)] == [ENCODER]
    assert [e.name for e in library.entries(EntryKind.DEPTH_ESTIMATOR)] == [ESTIMATOR]
    assert [e.name for e in library.checkpoints()] == ["tiny-sd15-embedded"]


def test_an_ip_adapter_without_its_encoder_says_what_to_install(tmp_path):
    unet = control_models.embedded_unet()
    control_models.write_ip_adapter(tmp_path / "ipadapter", "lonely", unet, seed=1)
    entry = ModelLibrary([tmp_path]).entries(EntryKind.CONTROL)[0]
    assert entry.status is EntryStatus.UNUSABLE
    assert "needs its image encoder" in entry.reason
    assert "python3 -m installer download ip-adapter-image-encoder" in entry.reason


def test_pickles_misplaced_files_and_controls_in_checkpoint_folders(tmp_path):
    controlnet = tmp_path / "models" / "ControlNet"
    controlnet.mkdir(parents=True)
    (controlnet / "control_v11f1p_sd15_depth.pth").write_bytes(b"\x80\x02}q\x00.")
    write_tensors(
        controlnet / "a-checkpoint.safetensors",
        {
            "model.diffusion_model.input_blocks.0.0.weight": (8, 4, 3, 3),
            "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (8, 8),
            "first_stage_model.decoder.conv_in.weight": (8, 4, 3, 3),
        },
    )
    # the installer puts downloads it does not know into checkpoints/: found all the same
    write_tensors(tmp_path / "models/Stable-diffusion/xl-canny.safetensors", SDXL_CONTROLNET_HEADER)
    library = ModelLibrary([tmp_path])
    controls = entries(library, EntryKind.CONTROL)
    pickle = controls["control_v11f1p_sd15_depth.pth"]
    assert pickle.status is EntryStatus.REFUSED and "never opens them" in pickle.reason
    assert controls["xl-canny"].usable and controls["xl-canny"].family is Family.SDXL
    misplaced = entries(library, EntryKind.CHECKPOINT)["a-checkpoint"]
    assert "checkpoint in a control-model folder" in misplaced.reason


SD15_IP_WIDTHS = {
    "image_proj.proj.weight": (4 * 768, 1024),
    "image_proj.norm.weight": (768,),
    "ip_adapter.1.to_k_ip.weight": (320, 768),
    "ip_adapter.1.to_v_ip.weight": (320, 768),
}


@pytest.mark.parametrize(
    ("shapes", "role", "family", "reason"),
    [
        (SDXL_CONTROLNET_HEADER, ControlRole.CONTROLNET, Family.SDXL, None),
        (
            {
                "control_model.input_hint_block.0.weight": (16, 3, 3, 3),
                "control_model.zero_convs.0.0.weight": (8, 8, 1, 1),
            },
            ControlRole.CONTROLNET,
            Family.SD15,
            None,
        ),
        (
            {
                **SDXL_CONTROLNET_HEADER,
                "task_embedding": (8, 320),
                "control_add_embedding.linear_1.weight": (8, 8),
            },
            ControlRole.UNION,
            Family.SDXL,
            None,
        ),
        (SD15_IP_WIDTHS, ControlRole.IP_ADAPTER, Family.SD15, None),
        (
            {
                "image_proj.latents": (1, 16, 2048),
                "image_proj.proj_in.weight": (1280, 1280),
                "ip_adapter.1.to_k_ip.weight": (640, 2048),
            },
            ControlRole.IP_ADAPTER,
            Family.SDXL,
            None,
        ),
        (
            {
                "input_hint_block.0.weight": (16, 3, 3, 3),
                "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024),
            },
            ControlRole.CONTROLNET,
            None,
            "made for SD 2.x",
        ),
        (
            {**SD15_IP_WIDTHS, "ip_adapter.1.to_k_lora.down.weight": (128, 320)},
            ControlRole.IP_ADAPTER,
            None,
            "FaceID",
        ),
        (
            {"lora_controlnet": (1,), "input_hint_block.0.weight": (16, 3, 3, 3)},
            ControlRole.CONTROLNET,
            None,
            "Control-LoRA",
        ),
        (
            {"adapter.body.0.resnets.0.block1.weight": (8, 8, 3, 3)},
            ControlRole.CONTROLNET,
            None,
            "T2I-Adapter",
        ),
        (
            {"visual.transformer.resblocks.0.ln_1.weight": (8,)},
            ControlRole.IMAGE_ENCODER,
            None,
            "OpenCLIP",
        ),
        (
            {
                "pretrained.blocks.0.norm1.weight": (8,),
                "depth_head.scratch.output_conv1.weight": (8, 8, 3, 3),
            },
            ControlRole.DEPTH_ESTIMATOR,
            None,
            "transformers version",
        ),
    ],
    ids=[
        "sdxl",
        "sd15-prefixed",
        "union",
        "ip-sd15",
        "ip-plus-sdxl",
        "sd2",
        "faceid",
        "control-lora",
        "t2i",
        "openclip",
        "depth-original",
    ],
)
def test_header_detection_of_real_layouts(shapes, role, family, reason):
    found = detect_control(shapes)
    assert found is not None and found.role is role
    if reason is None:
        assert found.usable and found.family is family
    else:
        assert not found.usable and reason in found.reason


def test_ip_adapter_reads_what_its_kind_needs():
    plain = detect_control(SD15_IP_WIDTHS)
    assert plain.facts.embed_source is EmbedSource.IMAGE_EMBEDS and plain.facts.embed_width == 1024
    vit_h = detect_control(
        {
            "vision_model.embeddings.patch_embedding.weight": (1280, 3, 14, 14),
            "visual_projection.weight": (1024, 1280),
            **{f"vision_model.encoder.layers.{i}.mlp.fc1.weight": (4, 4) for i in range(32)},
        }
    )
    assert vit_h.facts.config == "clip-vision-vit-h" and vit_h.facts.embed_width == 1024


def test_checkpoints_and_loras_are_not_mistaken_for_controls():
    checkpoint = {"model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3)}
    lora = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 320)}
    assert detect_control(checkpoint) is None and detect_control(lora) is None


def test_tiny_controlnet_in_the_original_layout_loads_tensor_for_tensor(tmp_path):
    """The A1111-layout writer and diffusers' converter agree on every tensor."""
    unet = control_models.embedded_unet()
    built = control_models.build_controlnet(unet, seed=21)
    control_models.write_controlnet(tmp_path / "controlnet", "round-trip", unet, seed=21)
    entry = ModelLibrary([tmp_path]).entries(EntryKind.CONTROL)[0]
    loaded = loading.load_controlnet(entry, choose_device("cpu"))
    expected = built.state_dict()
    got = loaded.state_dict()
    assert set(got) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor.half().float()), name


def test_a_file_that_does_not_fit_its_config_is_refused_naming_it(tmp_path):
    unet = control_models.embedded_unet()
    path = control_models.write_controlnet(tmp_path / "controlnet", "cut", unet, seed=2)
    shapes = dict(control_models.controlnet_to_ldm(control_models.build_controlnet(unet, 2)))
    shapes.pop("zero_convs.0.0.weight")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in shapes.items()}, str(path))
    entry = ModelLibrary([tmp_path]).entries(EntryKind.CONTROL)[0]
    with pytest.raises(Exception) as caught:
        loading.load_controlnet(entry, choose_device("cpu"))
    assert "'cut' could not be loaded" in str(caught.value)


def test_shipped_configs_build_the_full_size_architectures():
    """Each shipped config makes the module real files hold (on the meta device)."""
    from diffusers import ControlNetModel, ControlNetUnionModel
    from transformers import CLIPVisionConfig, DepthAnythingConfig

    from kd_server.families import resources_dir

    configs = resources_dir() / "model-configs"
    with torch.device("meta"):
        sd15 = ControlNetModel.from_config(
            ControlNetModel.load_config(str(configs / "controlnet-sd15"))
        )
        sdxl = ControlNetModel.from_config(
            ControlNetModel.load_config(str(configs / "controlnet-sdxl"))
        )
        union = ControlNetUnionModel.from_config(
            ControlNetUnionModel.load_config(str(configs / "controlnet-union-sdxl"))
        )
    assert sd15.state_dict()["controlnet_cond_embedding.conv_in.weight"].shape == (16, 3, 3, 3)
    assert sdxl.state_dict()["add_embedding.linear_1.weight"].shape == (1280, 2816)
    assert union.state_dict()["task_embedding"].shape == (6, 320)
    vit_h = CLIPVisionConfig.from_json_file(str(configs / "clip-vision-vit-h/config.json"))
    assert (vit_h.hidden_size, vit_h.projection_dim, vit_h.num_hidden_layers) == (1280, 1024, 32)
    small = DepthAnythingConfig.from_json_file(str(configs / "depth-anything-v2-small/config.json"))
    assert small.backbone_config.hidden_size == 384 and small.neck_hidden_sizes == [
        48,
        96,
        192,
        384,
    ]


def test_the_embedded_context_width_is_the_embedded_models():
    from kd_server.control.files import EMBEDDED_CONTEXT_WIDTH
    from kd_server.tiny_model import TEXT_HIDDEN

    assert EMBEDDED_CONTEXT_WIDTH == TEXT_HIDDEN


def test_library_lookup_by_kind(tmp_path: Path):
    library = ModelLibrary([write_control_models(tmp_path)])
    assert library.get(EntryKind.CONTROL, DEPTH, "control model").name == DEPTH
    with pytest.raises(Exception, match="no depth estimator named 'nope'"):
        library.get(EntryKind.DEPTH_ESTIMATOR, "nope", "depth estimator")
