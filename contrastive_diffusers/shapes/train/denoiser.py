"""Phase ``unet``: the ``UNet2DConditionModel`` and the ``CLIPTextModel`` trained jointly
with the epsilon or v loss (per ``--noise_schedule``), min-SNR-gamma weights, caption dropout
for classifier-free guidance and an EMA of both; optional bf16 autocast of the forward."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..model import build_noise_scheduler
from ...training.timesteps import prediction_target
from .data import ShapesData, batch_indices, tokenize
from .optim import ema_model, optimise


def snr_weights(scheduler, timesteps: torch.Tensor, gamma: float, v_weighting: str = "snr") -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023), ones when gamma <= 0. Epsilon prediction:
    ``min(snr, gamma) / snr``. v-prediction, ``v_weighting="snr"``: Hang et al.'s
    ``min(snr, gamma) / (snr + 1)`` - the same weight on the clean-latent error as epsilon's, so 0
    at a zero-SNR timestep (diffusers' training scripts since 0.26); ``"snr_plus_one"``:
    ``snr + 1`` in place of ``snr`` (those scripts before 0.26), which weighs the noisiest
    timesteps ~1 instead of ~snr."""
    if gamma <= 0:
        return torch.ones_like(timesteps, dtype=torch.float32)
    # alpha_bar / (1 - alpha_bar), not diffusers' compute_snr: its (sqrt(alpha_bar) / sqrt(1 -
    # alpha_bar)) ** 2 differs in the last bit at 2 of 3 timesteps, which would change the
    # weights the shipped model was trained with (same seed, other numbers).
    alpha_bar = scheduler.alphas_cumprod[timesteps.cpu()]
    snr = alpha_bar / (1 - alpha_bar)
    if scheduler.config.prediction_type != "v_prediction":
        return torch.clamp(snr, max=gamma) / snr
    if v_weighting == "snr":
        return torch.clamp(snr, max=gamma) / (snr + 1)
    if v_weighting == "snr_plus_one":
        return torch.clamp(snr + 1, max=gamma) / (snr + 1)
    raise ValueError(f"Unknown v_weighting {v_weighting!r}; choose snr or snr_plus_one.")


def train_unet(unet, text_encoder, tokenizer, vae_latents, scale: float, data: ShapesData, args, log: dict,
               checkpoint=None) -> None:
    """Joint training of the UNet and the text encoder; leaves the EMA weights in them."""
    gen = torch.Generator().manual_seed(args.seed * 1000 + 2)
    device = args.device
    scheduler = build_noise_scheduler(args.noise_schedule)
    ids = tokenize(tokenizer, data.captions)
    empty = tokenize(tokenizer, [""])[0]
    mean, std = vae_latents
    unet.to(device).train()
    text_encoder.to(device).train()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    ema = ema_model(params, args.ema_decay) if args.ema_decay > 0 else None
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16,
                              enabled=args.mixed_precision == "bf16")

    def batch_loss(step: int) -> torch.Tensor:
        idx = batch_indices(gen, len(ids), args.batch_size)
        latents = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)) * scale
        noise = torch.randn(latents.shape, generator=gen)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(idx),), generator=gen)
        drop = torch.rand(len(idx), generator=gen) < args.caption_dropout
        batch_ids = torch.where(drop[:, None], empty[None], ids[idx])
        noisy = scheduler.add_noise(latents, noise, timesteps)
        with autocast:
            encoder_states = text_encoder(batch_ids.to(device))[0]
            pred = unet(noisy.to(device), timesteps.to(device), encoder_states).sample
        target = prediction_target(scheduler, latents, noise, timesteps)
        per_sample = F.mse_loss(pred.float(), target.to(device), reduction="none").mean(dim=(1, 2, 3))
        return (per_sample * snr_weights(scheduler, timesteps, args.snr_gamma, args.v_weighting).to(device)).mean()

    optimise("unet", params, args.unet_steps, args.unet_lr, batch_loss, log, args.log_every, ema=ema,
             checkpoint=checkpoint, generator=gen)
    if ema is not None:
        ema.copy_to(params)
    unet.eval()
    text_encoder.eval()
