"""Tiny preview decoders (TAESD): found in ComfyUI's and A1111's folders by name, checked
from the header, refused as pickles, and loaded from the published key layout (and
diffusers' AutoencoderTiny layout) into the same decoder, weight for weight."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from kd_server.families import Family
from kd_server.library import ModelLibrary
from kd_server.taesd import decode_preview, load_decoder
from modelkit.taesd import build_test_decoder, write_taesd_decoder


def test_decoders_are_found_checked_and_chosen_per_family(tmp_path: Path) -> None:
    comfy = tmp_path / "ComfyUI" / "models" / "vae_approx"
    write_taesd_decoder(comfy / "taesd_decoder.safetensors", seed=1)
    write_taesd_decoder(comfy / "taesdxl_decoder.safetensors", seed=2, diffusers_layout=True)
    (comfy / "taesd_decoder.pth").write_bytes(b"\x80\x04 a pickle, never opened")
    write_taesd_decoder(comfy / "taesd3_decoder.safetensors", seed=3)
    write_taesd_decoder(comfy / "taesd_encoder.safetensors", seed=4)
    save_file({"encoder.conv_in.weight": torch.zeros(2)}, str(comfy / "taesd_other.safetensors"))
    (comfy / "readme.txt").write_text("not a model")
    a1111 = tmp_path / "webui" / "models" / "VAE-taesd"
    write_taesd_decoder(a1111 / "taesdxl_decoder.safetensors", seed=5)

    library = ModelLibrary([tmp_path / "webui", tmp_path / "ComfyUI"])

    found = {(d.name, d.path.parent.name): d for d in library.preview_decoders()}
    assert found[("taesd_decoder", "vae_approx")].usable
    assert found[("taesd_decoder", "vae_approx")].family is Family.SD15
    refused = [d for d in library.preview_decoders() if d.path.suffix == ".pth"]
    assert len(refused) == 1 and not refused[0].usable and "convert" in refused[0].reason
    # an SD 3 decoder reads SD 3's 16 latent channels: this 4-channel one is refused
    assert "SD 3 and 3.5 latents have 16" in found[("taesd3_decoder", "vae_approx")].reason
    assert "encoder" in found[("taesd_encoder", "vae_approx")].reason
    assert "Not a TAESD decoder" in found[("taesd_other", "vae_approx")].reason
    assert ("readme", "vae_approx") not in found
    # A1111's folder comes first (it was configured first); inpaint models share latents.
    xl = library.preview_decoder(Family.SDXL_INPAINT)
    assert xl is not None and xl.path.parent.name == "VAE-taesd"
    sd15 = library.preview_decoder(Family.SD15)
    assert sd15 is not None and sd15.path.suffix == ".safetensors"


def test_no_decoder_folder_means_none(tmp_path: Path) -> None:
    library = ModelLibrary([tmp_path])
    assert library.preview_decoders() == [] and library.preview_decoder(Family.SD15) is None


def test_both_layouts_load_weight_for_weight(tmp_path: Path) -> None:
    latents = torch.randn(1, 4, 12, 10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = build_test_decoder(width=8, seed=9)(latents)
    for diffusers_layout in (False, True):
        path = write_taesd_decoder(
            tmp_path / f"taesd_decoder_{diffusers_layout}.safetensors",
            width=8,
            seed=9,
            diffusers_layout=diffusers_layout,
        )
        module = load_decoder(str(path), "cpu", torch.float32)
        with torch.no_grad():
            assert torch.equal(module(latents), expected)


def test_a_preview_is_the_decoders_picture(tmp_path: Path) -> None:
    path = write_taesd_decoder(tmp_path / "taesd_decoder.safetensors", colour=(200, 40, 90))
    module = load_decoder(str(path), "cpu", torch.float32)
    latents = torch.randn(1, 4, 64, 32)  # a 512x256 image: decoded at half size, then 256
    with torch.no_grad():
        image = decode_preview(module, latents, 256)
    assert image.size == (128, 256) and image.mode == "RGB"
    assert np.all(np.asarray(image) == np.array([200, 40, 90], dtype=np.uint8))
