"""A tiny SD 1.5 checkpoint that keeps a picture's structure, for composition tests.

Why: the embedded tiny model and `ldm_layout.build_tiny_components` have random
weights, so any img2img on them loses the picture, and a test cannot tell a refine
that keeps the composition from one that scrambles it. This stand-in has the real
SD 1.5 architecture (the tiny shapes of `ldm_layout`) with hand-set weights:

- The VAE is a box-average encoder and a nearest-neighbour decoder. Its resnets are
  identities (second conv zeroed: the block adds nothing to its input), its attention
  too (output projection zeroed), each downsampler averages 2x2 pixels, each upsampler
  copies (nearest, then an identity conv). The one obstacle is the GroupNorm before
  each side's output conv, which would subtract every channel's mean and so forget a
  flat tile's colour. So the VAE uses one norm group over all channels, and the
  channels carry x, -x and two constants +K, -K: the group's mean is exactly 0 and
  its deviation K/4 to within 0.4 %, so the norm only scales. The SiLU after it is
  undone by pairing: silu(z) - silu(-z) = z. The latent is the 8x8 mean of the
  picture's RGB, `LATENT_GAIN` times larger (so the noise a low strength adds is small
  next to it), with a log-variance of -30 (no sampling noise).
- The UNet's output conv is zeroed: it predicts zero noise, so every sampler step
  keeps the latent as it is, and the result is the picture plus the noise the
  strength added at the start (deterministic for a seed).

It is written as a single-file checkpoint with a sidecar config folder (one norm
group is not a shipped architecture) and loaded by the product like any other file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL

from modelkit.ldm_layout import build_tiny_components, save_config_folder, write_ldm_checkpoint

#: The constant carried by two VAE channels so the one-group norm only scales.
CARRIER = 20.0
#: What the one-group norm divides by: sqrt((2 K^2 + 2 |x|^2) / 32) ~ K / 4.
NORM_DEVIATION = CARRIER / 4
#: The encoder's latent is this many times the picture's [-1, 1] values.
LATENT_GAIN = 40.0
#: Log-variance of the latent distribution: no sampling noise.
NO_VARIANCE = -30.0
CHANNELS = 32


def box_vae(
    latent_channels: int = 4,
    scaling: float = 0.18215,
    shift: float | None = None,
    quant_convs: bool = True,
    sample_size: int = 64,
) -> Any:
    """The tiny VAE's shapes with one norm group and the hand-set weights of `_set_vae`:
    SD 1.5's (4 latent channels, quant convs) by default; `modelkit.structured_flow`
    asks for the Flux / SD 3.5 shapes (16 channels, no quant convs, a shift)."""
    vae: Any = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(CHANNELS,) * 4,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=1,
        sample_size=sample_size,
        scaling_factor=scaling,
        shift_factor=shift,
        use_quant_conv=quant_convs,
        use_post_quant_conv=quant_convs,
    )
    with torch.no_grad():
        for param in vae.parameters():
            param.zero_()
        _set_vae(vae)
    return vae.eval()


def _centre(conv: torch.nn.Conv2d, out: int, into: int, value: float) -> None:
    """`out` gets `value` times channel `into` at the same pixel."""
    kernel = conv.weight.shape[-1]
    conv.weight[out, into, kernel // 2, kernel // 2] = value


def _spread(conv: torch.nn.Conv2d, channels: int, scale: float = 1.0) -> None:
    """Input conv: RGB (or latent) channel c -> channels c and 3 + c as x and -x (times
    `scale`), and the two carrier constants in channels 6 and 7 (biases)."""
    for c in range(channels):
        _centre(conv, c, c, scale)
        _centre(conv, 3 + c, c, -scale)
    assert conv.bias is not None
    conv.bias[6], conv.bias[7] = CARRIER, -CARRIER


def _gather(conv: torch.nn.Conv2d, outputs: int, gain: float) -> None:
    """Output conv after norm and SiLU: silu(x/s) - silu(-x/s) = x/s, times s * gain."""
    for c in range(outputs):
        _centre(conv, c, c, NORM_DEVIATION * gain)
        _centre(conv, c, 3 + c, -NORM_DEVIATION * gain)


def _identity_blocks(side: Any) -> None:
    """Norms to plain scaling; every resnet and attention adds nothing to its input."""
    for module in side.modules():
        if isinstance(module, torch.nn.GroupNorm):
            module.weight.fill_(1.0)
    # conv2 of every resnet and the attention's output projection stay zero.


def _set_vae(vae: Any) -> None:
    """The gain comes off in the post-quant conv where there is one, else in the
    decoder's input conv."""
    encoder, decoder = vae.encoder, vae.decoder
    latent_channels = vae.config.latent_channels
    _identity_blocks(encoder)
    _identity_blocks(decoder)
    _spread(encoder.conv_in, 3)
    for block in encoder.down_blocks:
        for down in block.downsamplers or []:
            for c in range(CHANNELS):  # padded right/bottom, stride 2: the 2x2 mean
                down.conv.weight[c, c, 0:2, 0:2] = 0.25
    _gather(encoder.conv_out, 3, LATENT_GAIN)
    encoder.conv_out.bias[latent_channels:] = NO_VARIANCE  # the log-variances
    if vae.quant_conv is not None:
        for c in range(2 * latent_channels):
            vae.quant_conv.weight[c, c, 0, 0] = 1.0
    if vae.post_quant_conv is not None:
        for c in range(latent_channels):
            vae.post_quant_conv.weight[c, c, 0, 0] = 1.0 / LATENT_GAIN
        _spread(decoder.conv_in, 3)
    else:
        _spread(decoder.conv_in, 3, 1.0 / LATENT_GAIN)
    for block in decoder.up_blocks:
        for up in block.upsamplers or []:
            for c in range(CHANNELS):
                _centre(up.conv, c, c, 1.0)
    _gather(decoder.conv_out, 3, 1.0)


def build_structured_sd15(seed: int = 0) -> Any:
    """The tiny SD 1.5 pipeline with the structure-keeping VAE and a zero-noise UNet."""
    pipe = build_tiny_components("sd15", seed=seed)
    with torch.no_grad():
        pipe.unet.conv_out.weight.zero_()
        pipe.unet.conv_out.bias.zero_()
    pipe.register_modules(vae=box_vae())
    return pipe


def write_structured_sd15(path: Path, seed: int = 0) -> Path:
    """The stand-in as `path` (.safetensors, float32: the hand-set weights exactly) and
    its sidecar `<stem>.config/`, as `test_single_file` writes tiny checkpoints."""
    pipe = build_structured_sd15(seed)
    write_ldm_checkpoint(pipe, path, dtype=torch.float32)
    save_config_folder(pipe, path.with_suffix(".config"))
    return path
