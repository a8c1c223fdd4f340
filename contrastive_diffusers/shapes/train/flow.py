"""Phase ``transformer`` of ``--format mmdit``: the ``SD3Transformer2DModel`` and the three text
encoders trained jointly with SD3's rectified-flow loss, caption dropout for classifier-free
guidance and an EMA of all four; optional bf16 autocast of the forward.

The loss follows diffusers' SD3 training scripts and uses their helpers: noise levels drawn
logit-normal (``compute_density_for_timestep_sampling``, mean 0, std 1) and mapped through the
training scheduler's shifted sigmas; noisy latents ``(1 - sigma) x0 + sigma noise`` (the
scheduler's ``scale_noise``); target the velocity ``noise - x0``; weights from
``compute_loss_weighting_for_sd3``. Prompts are encoded by the pipeline's own
``encode_prompt`` (CLIP penultimate states, pooled projections, T5 states at the T5
tokenizer's ``model_max_length``), so training and generation read the text the same way.
"""

from __future__ import annotations

import torch

from .data import ShapesData, batch_indices
from .mmdit import flow_scheduler, text_encoders
from .optim import ema_model, optimise

#: SD3's timestep density and loss weighting (diffusers' ``--weighting_scheme``): logit-normal
#: sampling, unit weights.
WEIGHTING_SCHEME = "logit_normal"


def flow_targets(scheduler, latents: torch.Tensor, noise: torch.Tensor, u: torch.Tensor):
    """Timesteps, noisy latents, velocity targets and loss weights for density samples ``u`` in
    [0, 1) (one per example), as diffusers' SD3 training scripts compute them."""
    from diffusers.training_utils import compute_loss_weighting_for_sd3

    indices = (u * scheduler.config.num_train_timesteps).long()
    timesteps = scheduler.timesteps[indices]
    sigmas = scheduler.sigmas[indices].view(-1, *[1] * (latents.dim() - 1))
    noisy = scheduler.scale_noise(latents, timesteps, noise)
    weights = compute_loss_weighting_for_sd3(WEIGHTING_SCHEME, sigmas)
    return timesteps, noisy, noise - latents, weights


def train_transformer(pipe, vae_latents, scale: float, shift: float, data: ShapesData, args, log: dict,
                      checkpoint=None) -> None:
    """Joint training of ``pipe``'s transformer and text encoders on latents standardised with
    the VAE's ``shift`` and ``scale``; leaves the EMA weights in them."""
    from diffusers.training_utils import compute_density_for_timestep_sampling

    gen = torch.Generator().manual_seed(args.seed * 1000 + 2)
    device = args.device
    scheduler = flow_scheduler(args.flow_shift)
    mean, std = vae_latents
    modules = [pipe.transformer, *text_encoders(pipe.components)]
    for module in modules:
        module.to(device).train()
    params = [p for module in modules for p in module.parameters()]
    ema = ema_model(params, args.ema_decay) if args.ema_decay > 0 else None
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16,
                              enabled=args.mixed_precision == "bf16")

    def batch_loss(step: int) -> torch.Tensor:
        idx = batch_indices(gen, len(data.captions), args.batch_size)
        latents = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen) - shift) * scale
        noise = torch.randn(latents.shape, generator=gen)
        u = compute_density_for_timestep_sampling(WEIGHTING_SCHEME, len(idx), logit_mean=0.0, logit_std=1.0,
                                                  generator=gen)
        timesteps, noisy, target, weights = flow_targets(scheduler, latents, noise, u)
        drop = torch.rand(len(idx), generator=gen) < args.caption_dropout
        captions = ["" if dropped else data.captions[i] for dropped, i in zip(drop.tolist(), idx.tolist())]
        with autocast:
            embeds, _, pooled, _ = pipe.encode_prompt(
                captions, None, None, device=torch.device(device), do_classifier_free_guidance=False,
                max_sequence_length=pipe.tokenizer_3.model_max_length)
            pred = pipe.transformer(hidden_states=noisy.to(device), timestep=timesteps.to(device),
                                    encoder_hidden_states=embeds, pooled_projections=pooled).sample
        per_sample = (weights.to(device) * (pred.float() - target.to(device)) ** 2).mean(dim=(1, 2, 3))
        return per_sample.mean()

    optimise("transformer", params, args.transformer_steps, args.transformer_lr, batch_loss, log, args.log_every,
             ema=ema, checkpoint=checkpoint, generator=gen)
    if ema is not None:
        ema.copy_to(params)
    for module in modules:
        module.eval()
