"""Objectives of the contrastive LoRA methods, as pure functions over tensors.

Notation: ``pred`` is the UNet output ε_θ(x_t, c) (or v), ``target`` the noise ε (or v);
``e = ‖pred − target‖²`` averaged over channels and pixels, one number per sample
(:func:`per_sample_error`). A positive ``x⁺`` and its hard negative ``x⁻`` are noised with the
SAME noise and timestep, and both are denoised under the positive's caption ``c``, so
``e⁺ < e⁻`` means the model finds the caption more consistent with the positive.

- :func:`denoising_mse`: ``mean(e⁺)``, plain fine-tuning on the positive.
- :func:`contrastive_infonce`: InfoNCE over the logits ``−e / τ``: for sample ``i`` the positive
  ``−e⁺_i`` against its own negative ``−e⁻_i`` and (``in_batch_negatives``, off by default)
  the other negatives of the batch ``−e⁻_j``; ``−log softmax`` of the positive, averaged.
  Other pairs were noised at other timesteps, and an error's size depends mostly on the
  timestep, so in-batch negatives compare timesteps more than content; under several
  processes they are each process's own batch.
- :func:`preference_margin`: DPO/DCO-style against the frozen reference (the base model,
  adapters off): ``−log σ(−β·[(e_θ⁺ − e_ref⁺) − (e_θ⁻ − e_ref⁻)])`` per sample, averaged.
- :func:`consistency_dco`: DCO for personalization (Lee et al., 2024): on reference images
  only, ``−log σ(−β·(e_θ − e_ref))`` per sample, β = 1000 by default.

At the start of LoRA training (``B = 0``, the model equals the reference) both reference
losses are ``log 2``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "OBJECTIVES",
    "consistency_dco",
    "contrastive_infonce",
    "denoising_mse",
    "pair_margin",
    "per_sample_error",
    "preference_margin",
]

#: Objectives of the ``evogen`` method: name -> (needs the negative, needs the reference model).
OBJECTIVES: dict[str, tuple[bool, bool]] = {
    "denoise": (False, False),
    "contrastive": (True, False),
    "margin": (True, True),
}


def per_sample_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``‖pred − target‖²`` averaged over all but the first dimension, in float32: ``(B,)``."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    return (pred.float() - target.float()).pow(2).reshape(pred.shape[0], -1).mean(dim=1)


def denoising_mse(e_pos: torch.Tensor) -> torch.Tensor:
    """Mean of the positives' per-sample errors (the usual denoising MSE)."""
    return e_pos.mean()


def contrastive_infonce(
    e_pos: torch.Tensor, e_neg: torch.Tensor, temperature: float = 0.05, in_batch_negatives: bool = False
) -> torch.Tensor:
    """InfoNCE on negative denoising errors (see the module docstring); ``(B,)`` inputs."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if e_pos.shape != e_neg.shape or e_pos.dim() != 1:
        raise ValueError(f"expected two (B,) error vectors, got {tuple(e_pos.shape)} and {tuple(e_neg.shape)}")
    if in_batch_negatives:
        negatives = -e_neg.unsqueeze(0).expand(e_pos.shape[0], -1)  # row i: every negative of the batch
    else:
        negatives = -e_neg.unsqueeze(1)
    logits = torch.cat([-e_pos.unsqueeze(1), negatives], dim=1) / temperature
    return -F.log_softmax(logits, dim=1)[:, 0].mean()


def preference_margin(
    e_pos: torch.Tensor, e_neg: torch.Tensor, ref_pos: torch.Tensor, ref_neg: torch.Tensor, beta: float = 1000.0
) -> torch.Tensor:
    """``mean(−log σ(−β·[(e⁺ − e_ref⁺) − (e⁻ − e_ref⁻)]))``; the reference errors carry no gradient."""
    inside = -beta * ((e_pos - ref_pos.detach()) - (e_neg - ref_neg.detach()))
    return -F.logsigmoid(inside).mean()


def consistency_dco(e_model: torch.Tensor, e_ref: torch.Tensor, beta: float = 1000.0) -> torch.Tensor:
    """DCO: ``mean(−log σ(−β·(e_θ − e_ref)))`` on reference images."""
    return -F.logsigmoid(-beta * (e_model - e_ref.detach())).mean()


def pair_margin(e_pos: torch.Tensor, e_neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean(e⁻ − e⁺), fraction with e⁺ < e⁻)``: how much better the caption fits the positive."""
    diff = (e_neg - e_pos).detach().float()
    return diff.mean(), (diff > 0).float().mean()
