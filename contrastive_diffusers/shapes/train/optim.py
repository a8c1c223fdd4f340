"""The optimisation loop every phase shares: AdamW, warm-up + cosine learning rate, gradient
clipping, optional EMA (diffusers' ``EMAModel``), a logged loss curve."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch


def ema_model(params: list[torch.nn.Parameter], decay: float):
    """diffusers' ``EMAModel`` with the warm-up ``min(decay, (1 + n) / (10 + n))`` at the n-th
    update. ``update_after_step=-1``: diffusers counts n from the second update (its first
    copies the weights), the shipped model's recipe from the first; ``foreach``: the fused
    update, whose rounding matches the ``lerp`` the recipe was trained with."""
    from diffusers.training_utils import EMAModel

    return EMAModel(params, decay=decay, update_after_step=-1, foreach=True)


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up from ``lr / warmup``, then cosine decay to 10% of ``lr``. Not diffusers'
    ``get_scheduler("cosine")``: that warms up from 0 and decays to 0, which would change the
    shipped recipe."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def optimise(phase: str, params: list[torch.nn.Parameter], steps: int, lr: float,
             batch_loss: Callable[[int], torch.Tensor], log: dict, log_every: int,
             weight_decay: float = 0.01, ema=None) -> None:
    """AdamW over ``steps`` calls of ``batch_loss(step)``, with warm-up + cosine lr, gradient
    clipping at 1, optional EMA (updated after every step), and the curve (mean loss per
    ``log_every`` steps) and timing written to ``log["phases"][phase]``."""
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warmup = max(1, min(100, steps // 10))
    curve, window, start = [], [], time.perf_counter()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup)
        loss = batch_loss(step)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{phase}: non-finite loss at step {step}; lower --{phase}_lr.")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if ema is not None:
            ema.step(params)
        window.append(float(loss.detach()))
        if len(window) == log_every or step == steps - 1:
            elapsed = time.perf_counter() - start
            curve.append({"step": step + 1, "loss": sum(window) / len(window), "seconds": round(elapsed, 2)})
            print(f"[{phase}] step {step + 1}/{steps} loss {curve[-1]['loss']:.4f} "
                  f"({elapsed / (step + 1):.2f} s/step)", flush=True)
            window = []
    seconds = time.perf_counter() - start
    log["phases"].setdefault(phase, {}).update(
        steps=steps, curve=curve, seconds=round(seconds, 2),
        seconds_per_step=round(seconds / max(steps, 1), 4),
    )
