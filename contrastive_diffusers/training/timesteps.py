"""Timesteps and targets for diffusion training: uniform or ReVersion's relation-focal timestep
sampling, and what the UNet learns to predict at a timestep.

Relation-focal sampling draws ``t`` in ``0..T-1`` with ``p(t) ∝ 1 - α·cos(π t / T)``: with
``α = 0.5``, high-noise steps (where layout and relations form) are drawn up to 3x as often
as low-noise ones.
"""

from __future__ import annotations

import math

import torch


def relation_focal_probabilities(num_train_timesteps: int, alpha: float = 0.5) -> torch.Tensor:
    """``p(t)`` for ``t = 0..T-1`` (float64, sums to 1). ``alpha`` in ``[0, 1)``; 0 is uniform."""
    if num_train_timesteps < 1:
        raise ValueError(f"num_train_timesteps must be positive, got {num_train_timesteps}")
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"The relation-focal alpha must be in [0, 1), got {alpha}")
    t = torch.arange(num_train_timesteps, dtype=torch.float64)
    weights = 1.0 - alpha * torch.cos(math.pi * t / num_train_timesteps)
    return weights / weights.sum()


def sample_timestep(
    num_train_timesteps: int,
    generator: torch.Generator,
    probabilities: torch.Tensor | None = None,
) -> int:
    """One timestep: uniform when ``probabilities`` is ``None``, else drawn from them."""
    if probabilities is None:
        return int(torch.randint(0, num_train_timesteps, (1,), generator=generator).item())
    if probabilities.shape != (num_train_timesteps,):
        raise ValueError(
            f"Got {probabilities.shape[0]} timestep probabilities for {num_train_timesteps} training timesteps."
        )
    return int(torch.multinomial(probabilities, 1, generator=generator).item())


def prediction_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet learns to predict from ``scheduler.add_noise(latents, noise, timesteps)``, per
    the scheduler's ``prediction_type``: the noise, or the velocity
    ``sqrt(alpha_bar) * noise - sqrt(1 - alpha_bar) * latents``."""
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"Unsupported prediction type {prediction_type!r} (epsilon and v_prediction are).")
