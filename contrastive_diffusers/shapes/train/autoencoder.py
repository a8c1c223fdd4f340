"""Phase ``vae``: the ``AutoencoderKL`` with L1 + L2 reconstruction and a small KL term, then
``scaling_factor = 1 / std`` of the training latents, so the UNet sees unit variance."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .data import ShapesData, batch_indices, to_unit
from .optim import optimise


def train_vae(vae, data: ShapesData, args, log: dict, checkpoint=None) -> float:
    """Train the VAE; set and return its ``scaling_factor`` (1 / std of the training latents).
    ``checkpoint``: :class:`~.checkpoints.PhaseStep` to resume from and save to."""
    gen = torch.Generator().manual_seed(args.seed * 1000 + 1)
    device = args.device
    vae.to(device).train()

    def batch_loss(step: int) -> torch.Tensor:
        x = to_unit(data.images[batch_indices(gen, len(data.images), args.batch_size)]).to(device)
        posterior = vae.encode(x).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=gen).to(device)
        recon = vae.decode(posterior.mean + posterior.std * noise).sample
        kl = posterior.kl().mean() / posterior.mean[0].numel()
        return F.l1_loss(recon, x) + F.mse_loss(recon, x) + args.vae_kl_weight * kl

    optimise("vae", list(vae.parameters()), args.vae_steps, args.vae_lr, batch_loss, log, args.log_every,
             checkpoint=checkpoint, generator=gen)
    vae.eval()
    mean, std = encode_all(vae, data.images, args)
    scale = 1.0 / float(mean.flatten().std().clamp_min(1e-6))
    vae.register_to_config(scaling_factor=scale)
    with torch.no_grad():
        x = to_unit(data.images[:256]).to(device)
        recon = vae.decode(mean[:256].to(device)).sample
    log["phases"]["vae"].update(
        scaling_factor=scale, latent_mean=float(mean.mean()), latent_std=float(mean.std()),
        posterior_std_mean=float(std.mean()), recon_l1_255=float((recon - x).abs().mean() * 127.5),
    )
    print(f"[vae] scaling_factor {scale:.4f}; reconstruction L1 {log['phases']['vae']['recon_l1_255']:.2f}/255",
          flush=True)
    return scale


@torch.no_grad()
def encode_all(vae, images: torch.Tensor, args) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of every image (CPU tensors)."""
    means, stds = [], []
    for start in range(0, len(images), 256):
        posterior = vae.encode(to_unit(images[start:start + 256]).to(args.device)).latent_dist
        means.append(posterior.mean.cpu())
        stds.append(posterior.std.cpu())
    return torch.cat(means), torch.cat(stds)
