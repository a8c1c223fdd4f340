"""When and how strongly guidance moves the latents: a schedule is plain data.

Step positions are given either as absolute step indices (``int``, as the papers publish
them for 50 steps) or as fractions of the trajectory (``float`` in ``[0, 1]``, as diffusers'
guiders take ``start``/``stop``). :meth:`GuidanceSchedule.resolve` turns fractions into
indices for the number of denoising-loop iterations of a call; :func:`as_fractions` reads a
schedule's indices as fractions of the papers' 50 steps (the MMDiT guider's default).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, replace
from typing import Literal, Mapping, Union

import numpy as np

#: An absolute step index (``int``) or a fraction of the trajectory (``float`` in ``[0, 1]``).
StepPosition = Union[int, float]

# Guards int(fraction * steps) against float noise (0.29 * 100 = 28.999999999999996).
_FRACTION_SLACK = 1e-9


def _check_position(name: str, value) -> StepPosition:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be an int step index or a float fraction in [0, 1], got {value!r}")
    if isinstance(value, numbers.Integral):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
        return int(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(
            f"{name} = {value!r} is a float, read as a fraction of the trajectory, so it must lie in [0, 1]; "
            "pass an int for an absolute step index."
        )
    if isinstance(value, float):
        return float(value)
    try:  # through its shortest text: numpy's float32(0.29) is 0.28999999... as a double (28 of 100 steps)
        return float(str(value))
    except ValueError:  # a Fraction, a Decimal in exponent form, ...
        return float(value)


def _parse_refinement_key(key) -> StepPosition:
    """Refinement keys come back from JSON as strings ("10", "0.2")."""
    if isinstance(key, str):
        try:
            key = int(key)
        except ValueError:
            try:
                key = float(key)
            except ValueError:
                raise ValueError(f"refinement step {key!r} is neither an int step index nor a float fraction") from None
    return _check_position("a refinement step", key)


def step_index(position: StepPosition, num_steps: int) -> int:
    """The loop index of ``position`` in a call of ``num_steps`` iterations: an int as is,
    a fraction ``f`` as ``floor(f * num_steps)`` (diffusers' guiders: ``int(start * steps)``)."""
    if isinstance(position, int):
        return position
    return int(math.floor(position * num_steps + _FRACTION_SLACK))


@dataclass(frozen=True)
class GuidanceSchedule:
    """Which denoising steps are guided, with which step size, and where to refine.

    - ``start_step`` / ``max_update_step``: steps ``start_step <= i < max_update_step`` get
      one gradient update; no step before ``start_step`` is guided at all. Each is an int
      (loop index) or a float fraction of the trajectory: ``max_update_step=0.5`` guides the
      first half of a 20-step call (steps 0-9) as of a 50-step call (steps 0-24).
    - ``step_size`` / ``step_size_kind``: ``"constant"`` uses ``step_size`` at every step;
      ``"sqrt_linspace"`` uses ``step_size * sqrt(linspace(start, end, num_steps))`` as
      Attend-and-Excite and CONFORM do (``step_size_range = (start, end)``).
    - ``refinement``: ``{step: target_loss}``; at those steps (ints or fractions) the latents
      are updated repeatedly before the regular update, until the loss is at most
      ``target_loss`` (or ``refinement_iterations`` updates were made); ``None`` as target
      means exactly ``refinement_iterations`` updates.
    """

    max_update_step: StepPosition = 25
    start_step: StepPosition = 0
    step_size: float = 20.0
    step_size_kind: Literal["constant", "sqrt_linspace"] = "sqrt_linspace"
    step_size_range: tuple[float, float] = (1.0, 0.5)
    refinement: Mapping[StepPosition, float | None] = field(default_factory=dict)
    refinement_iterations: int = 20

    def __post_init__(self):
        object.__setattr__(self, "max_update_step", _check_position("max_update_step", self.max_update_step))
        object.__setattr__(self, "start_step", _check_position("start_step", self.start_step))
        if not (self.step_size > 0 and math.isfinite(self.step_size)):
            raise ValueError(f"step_size must be positive and finite, got {self.step_size}")
        if self.step_size_kind not in ("constant", "sqrt_linspace"):
            raise ValueError(f"step_size_kind must be 'constant' or 'sqrt_linspace', got {self.step_size_kind!r}")
        if len(self.step_size_range) != 2:
            raise ValueError(f"step_size_range must be (start, end), got {self.step_size_range!r}")
        if not all(math.isfinite(v) and v >= 0 for v in self.step_size_range):
            raise ValueError(f"step_size_range values must be finite and >= 0 (the step size is scaled by their "
                             f"square roots), got {self.step_size_range!r}")
        if self.refinement_iterations < 0:
            raise ValueError(f"refinement_iterations must be >= 0, got {self.refinement_iterations}")
        refinement = {}
        for step, target in dict(self.refinement).items():
            step = _parse_refinement_key(step)
            if target is not None and not target >= 0:
                raise ValueError(f"refinement target loss at step {step} must be >= 0 or None, got {target!r}")
            refinement[step] = target
        object.__setattr__(self, "refinement", refinement)
        object.__setattr__(self, "step_size_range", tuple(float(v) for v in self.step_size_range))

    # -- fractions -> step indices ---------------------------------------------------------
    @property
    def is_fractional(self) -> bool:
        """Whether any step position is a fraction (the schedule needs :meth:`resolve`)."""
        positions = (self.max_update_step, self.start_step, *self.refinement)
        return any(isinstance(p, float) for p in positions)

    def resolve(self, num_steps: int) -> "GuidanceSchedule":
        """This schedule with every fraction turned into the loop index of a call with
        ``num_steps`` iterations; a schedule of absolute indices is returned as is.
        Two fractions landing on one index keep the first refinement target."""
        if not self.is_fractional:
            return self
        refinement: dict[int, float | None] = {}
        for step, target in self.refinement.items():
            refinement.setdefault(step_index(step, num_steps), target)
        return replace(
            self,
            max_update_step=step_index(self.max_update_step, num_steps),
            start_step=step_index(self.start_step, num_steps),
            refinement=refinement,
        )

    # -- what the engine asks (absolute indices; resolve a fractional schedule first) ------
    def step_sizes(self, num_steps: int) -> np.ndarray:
        if self.step_size_kind == "constant":
            return np.full(num_steps, float(self.step_size))
        start, end = self.step_size_range
        return self.step_size * np.sqrt(np.linspace(start, end, num_steps))

    def _require_absolute(self) -> None:
        if self.is_fractional:
            raise ValueError(
                "This schedule gives steps as fractions of the trajectory; call schedule.resolve(num_steps) "
                "for the number of denoising steps before asking which steps it guides."
            )

    def updates_at(self, step: int) -> bool:
        self._require_absolute()
        return self.start_step <= step < self.max_update_step

    def refines_at(self, step: int) -> bool:
        self._require_absolute()
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


#: The step count the papers' step indices were published for.
PAPER_STEPS = 50


def as_fractions(schedule: GuidanceSchedule, paper_steps: int = PAPER_STEPS) -> GuidanceSchedule:
    """``schedule`` with every absolute step index ``i`` read as the fraction ``i / paper_steps``
    of the trajectory (fractions stay as given): the papers' presets, published for 50 steps,
    then guide the same share of a 4-, 28- or 50-step flow-matching run."""

    def fraction(position):
        return position if isinstance(position, float) else min(position / paper_steps, 1.0)

    return replace(
        schedule,
        max_update_step=fraction(schedule.max_update_step),
        start_step=fraction(schedule.start_step),
        refinement={fraction(step): target for step, target in schedule.refinement.items()},
    )
