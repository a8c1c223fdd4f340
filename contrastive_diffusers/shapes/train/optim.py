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
             weight_decay: float = 0.01, ema=None, checkpoint=None, generator: torch.Generator | None = None) -> None:
    """AdamW over ``steps`` calls of ``batch_loss(step)``, with warm-up + cosine lr, gradient
    clipping at 1, optional EMA (updated after every step), and the curve (mean loss per
    ``log_every`` steps) and timing written to ``log["phases"][phase]``. ``checkpoint``
    (:class:`~.checkpoints.PhaseStep`): continue from its last save and save every few steps,
    with ``generator`` (the phase's draws) and the global RNG state."""
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warmup = max(1, min(100, steps // 10))
    curve, window, first, elapsed = [], [], 0, 0.0
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        with torch.no_grad():
            for p, value in zip(params, saved["params"], strict=True):
                p.copy_(value)
        optimizer.load_state_dict(saved["optimizer"])
        if ema is not None:
            ema.load_state_dict(saved["ema"])
        if generator is not None:
            generator.set_state(saved["generator"])
        torch.set_rng_state(saved["global_rng"])
        curve, window, first, elapsed = saved["curve"], saved["window"], saved["step"], saved["seconds"]
        print(f"[{phase}] resumed at step {first}/{steps}", flush=True)
    start = time.perf_counter() - elapsed
    for step in range(first, steps):
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
        if checkpoint is not None and checkpoint.due(step + 1, steps):
            checkpoint.save({
                "params": [p.detach().clone() for p in params], "optimizer": optimizer.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "generator": generator.get_state() if generator is not None else None,
                "global_rng": torch.get_rng_state(), "curve": curve, "window": window, "step": step + 1,
                "seconds": time.perf_counter() - start,
            })
    seconds = time.perf_counter() - start
    log["phases"].setdefault(phase, {}).update(
        steps=steps, curve=curve, seconds=round(seconds, 2),
        seconds_per_step=round(seconds / max(steps, 1), 4),
    )
