"""When and how strongly guidance moves the latents: a schedule is plain data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping

import numpy as np


@dataclass(frozen=True)
class GuidanceSchedule:
    """Which denoising steps are guided, with which step size, and where to refine.

    - ``start_step`` / ``max_update_step``: steps ``start_step <= i < max_update_step`` get
      one gradient update; no step before ``start_step`` is guided at all.
    - ``step_size`` / ``step_size_kind``: ``"constant"`` uses ``step_size`` at every step;
      ``"sqrt_linspace"`` uses ``step_size * sqrt(linspace(start, end, num_steps))`` as
      Attend-and-Excite and CONFORM do (``step_size_range = (start, end)``).
    - ``refinement``: ``{step: target_loss}``; at those steps the latents are updated
      repeatedly before the regular update, until the loss is at most ``target_loss``
      (or ``refinement_iterations`` updates were made); ``None`` as target means exactly
      ``refinement_iterations`` updates.
    """

    max_update_step: int = 25
    start_step: int = 0
    step_size: float = 20.0
    step_size_kind: Literal["constant", "sqrt_linspace"] = "sqrt_linspace"
    step_size_range: tuple[float, float] = (1.0, 0.5)
    refinement: Mapping[int, float | None] = field(default_factory=dict)
    refinement_iterations: int = 20

    def __post_init__(self):
        if self.max_update_step < 0:
            raise ValueError(f"max_update_step must be >= 0, got {self.max_update_step}")
        if self.start_step < 0:
            raise ValueError(f"start_step must be >= 0, got {self.start_step}")
        if not self.step_size > 0:
            raise ValueError(f"step_size must be positive, got {self.step_size}")
        if self.step_size_kind not in ("constant", "sqrt_linspace"):
            raise ValueError(f"step_size_kind must be 'constant' or 'sqrt_linspace', got {self.step_size_kind!r}")
        if self.refinement_iterations < 0:
            raise ValueError(f"refinement_iterations must be >= 0, got {self.refinement_iterations}")
        for step, target in self.refinement.items():
            if not isinstance(step, int) or step < 0:
                raise ValueError(f"refinement steps must be non-negative integers, got {step!r}")
            if target is not None and not target >= 0:
                raise ValueError(f"refinement target loss at step {step} must be >= 0 or None, got {target!r}")
        object.__setattr__(self, "refinement", dict(self.refinement))

    def step_sizes(self, num_steps: int) -> np.ndarray:
        if self.step_size_kind == "constant":
            return np.full(num_steps, float(self.step_size))
        start, end = self.step_size_range
        return self.step_size * np.sqrt(np.linspace(start, end, num_steps))

    def updates_at(self, step: int) -> bool:
        return self.start_step <= step < self.max_update_step

    def refines_at(self, step: int) -> bool:
        return step >= self.start_step and step in self.refinement and self.refinement_iterations > 0

    def is_active(self, step: int) -> bool:
        """Whether step ``step`` needs a guidance forward at all."""
        return self.updates_at(step) or self.refines_at(step)

    def to_dict(self) -> dict:
        return {
            "max_update_step": self.max_update_step,
            "start_step": self.start_step,
            "step_size": self.step_size,
            "step_size_kind": self.step_size_kind,
            "step_size_range": list(self.step_size_range),
            "refinement": {str(k): v for k, v in self.refinement.items()},
            "refinement_iterations": self.refinement_iterations,
        }
