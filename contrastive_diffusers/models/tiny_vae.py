"""The VAE of every tiny pipeline (:mod:`.tiny`, :mod:`.tiny_mmdit`): SD's four levels
(``vae_scale_factor`` 8) at widths 8 to 16, one layer per block."""

from __future__ import annotations


def tiny_vae(latent_channels: int = 4, scaling_factor: float = 0.18215, **config):
    """A random-weight ``AutoencoderKL``; ``config`` adds what a family differs in (SD3 and
    Flux: ``shift_factor`` and no quant convs)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=128,
        scaling_factor=scaling_factor,
        **config,
    )
