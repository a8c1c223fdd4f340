"""A staged curriculum: stages run in order, each until its step budget is spent or, with an
advance rule, until a validation metric reaches a threshold (the budget then caps the stage).

The state (``index`` of the current stage and the ``start_step`` at which it began) is plain
JSON, stored in every checkpoint's ``training_state.json`` so a resumed run continues in the
stage and at the step where the checkpoint was taken.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: Advance metrics: name -> True when larger is better.
METRICS = {"pair_accuracy": True, "margin": True, "val_loss": False}


@dataclass
class Curriculum:
    stages: list[int]
    budgets: list[int]  # steps per stage: the budget, or the cap with an advance rule
    metric: str | None = None
    threshold: float | None = None
    check_every: int = 1
    index: int = 0
    start_step: int = 0

    def __post_init__(self):
        if not self.stages or len(self.stages) != len(self.budgets):
            raise ValueError(
                f"{len(self.budgets)} stage step budget(s) for {len(self.stages)} stage(s) "
                f"({', '.join(map(str, self.stages))}); give one --stage_steps value per stage."
            )
        if any(b < 1 for b in self.budgets):
            raise ValueError(f"Every stage needs at least one step, got --stage_steps {self.budgets}.")
        if self.metric is not None:
            if self.metric not in METRICS:
                raise ValueError(f"Unknown advance metric {self.metric!r}; use one of {', '.join(METRICS)}.")
            if self.threshold is None:
                raise ValueError(f"--advance_metric {self.metric} needs --advance_threshold.")
            if self.check_every < 1:
                raise ValueError(f"--advance_check_steps must be positive, got {self.check_every}.")

    @classmethod
    def split(cls, stages: Sequence[int], total_steps: int, **kwargs) -> Curriculum:
        """Budgets splitting ``total_steps`` evenly (the remainder to the last stages)."""
        n = len(stages)
        if total_steps < n:
            raise ValueError(f"--max_train_steps {total_steps} is fewer than the {n} stages; give at least one step each.")
        base, extra = divmod(total_steps, n)
        return cls(list(stages), [base + (1 if k >= n - extra else 0) for k in range(n)], **kwargs)

    @property
    def stage(self) -> int:
        return self.stages[min(self.index, len(self.stages) - 1)]

    @property
    def finished(self) -> bool:
        return self.index >= len(self.stages)

    @property
    def total_steps(self) -> int:
        return sum(self.budgets)

    def step_done(self, step: int, evaluate: Callable[[], float] | None = None) -> dict:
        """After optimizer step ``step`` (1-based, global): advance when the stage's budget is
        spent or the metric (``evaluate()``, called every ``check_every`` steps of the stage)
        passes the threshold. Returns what to log."""
        done = step - self.start_step
        log: dict = {"stage": self.stage, "stage_step": done}
        advance = done >= self.budgets[self.index]
        if self.metric is not None and evaluate is not None and done % self.check_every == 0:
            value = float(evaluate())
            log["stage_metric"] = value
            passed = value >= self.threshold if METRICS[self.metric] else value <= self.threshold
            advance = advance or passed
        if advance:
            self.index += 1
            self.start_step = step
            log["advanced"] = True
        return log

    def state(self) -> dict:
        return {"index": self.index, "start_step": self.start_step, "stages": list(self.stages)}

    def restore(self, state: dict) -> None:
        if list(state["stages"]) != list(self.stages):
            raise ValueError(
                f"The checkpoint's curriculum has stages {state['stages']}, this data has {self.stages}; "
                "resume with the same pair folder."
            )
        self.index, self.start_step = int(state["index"]), int(state["start_step"])
