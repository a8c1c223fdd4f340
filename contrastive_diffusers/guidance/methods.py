"""Guidance methods: a loss on attention maps plus the schedule that applies it.

A method is a small configuration object; its defaults reproduce the paper's settings for
50 denoising steps. The guidance engine (:mod:`.engine`) does the forward passes and
updates; a method only says how to score one image's maps.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import replace
from typing import Literal, Mapping, Sequence

import torch

from . import losses
from .schedule import GuidanceSchedule

TokenWindow = Literal["auto", "all", "prompt"]


class GuidanceMethod(ABC):
    """Base class. Subclasses set ``name`` and implement :meth:`loss`."""

    name = "base"
    #: whether :meth:`loss` reads the previous denoising step's maps.
    uses_previous_maps = False

    def __init__(
        self,
        schedule: GuidanceSchedule,
        token_window: TokenWindow = "auto",
        kernel_size: int = 3,
        sigma: float = 0.5,
        softmax_temperature: float = 100.0,
    ):
        if token_window not in ("auto", "all", "prompt"):
            raise ValueError(f"token_window must be 'auto', 'all' or 'prompt', got {token_window!r}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        self.schedule = schedule
        self.token_window = token_window
        self.kernel_size = kernel_size
        self.sigma = sigma
        self.softmax_temperature = softmax_temperature

    # -- what subclasses provide -------------------------------------------------------
    @abstractmethod
    def loss(
        self,
        maps: torch.Tensor,
        groups: Sequence,
        window: tuple[int, int],
        prompt_length: int,
        previous_maps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss of one image's maps ``(h, w, tokens)`` for its token ``groups``."""

    def validate_groups(self, groups: Sequence, prompt: str) -> None:
        """Raise ``ValueError`` when ``groups`` cannot drive this method."""
        if not groups:
            raise ValueError(f"{self.name} needs at least one token group for prompt {prompt!r}.")

    # -- conveniences --------------------------------------------------------------------
    def with_schedule(self, **changes) -> "GuidanceMethod":
        """A copy with some schedule fields changed, e.g. ``method.with_schedule(step_size=10)``."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.schedule = replace(self.schedule, **changes)
        return clone

    def _smoothing(self) -> dict:
        return dict(kernel_size=self.kernel_size, sigma=self.sigma)

    def config(self) -> dict:
        params = {k: v for k, v in self.__dict__.items() if k != "schedule"}
        return {"method": self.name, **params, "schedule": self.schedule.to_dict()}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "method")
        return f"{type(self).__name__}({params})"


class AttendAndExcite(GuidanceMethod):
    """Attend-and-Excite (Chefer et al., SIGGRAPH 2023): raise the peak attention of every
    subject (the noun of each group). ``thresholds`` are the paper's per-step attention
    targets for iterative refinement (loss target ``1 - threshold``)."""

    name = "attend_and_excite"

    def __init__(
        self,
        scale_factor: float = 20.0,
        scale_range: tuple[float, float] = (1.0, 0.5),
        max_iter_to_alter: int = 25,
        thresholds: Mapping[int, float] | None = None,
        max_refinement_steps: int = 20,
        token_window: TokenWindow = "auto",
        kernel_size: int = 3,
        sigma: float = 0.5,
        softmax_temperature: float = 100.0,
    ):
        thresholds = {0: 0.05, 10: 0.5, 20: 0.8} if thresholds is None else dict(thresholds)
        for step, value in thresholds.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"threshold at step {step} must lie in [0, 1], got {value}")
        schedule = GuidanceSchedule(
            max_update_step=max_iter_to_alter,
            step_size=scale_factor,
            step_size_kind="sqrt_linspace",
            step_size_range=tuple(scale_range),
            refinement={step: 1.0 - value for step, value in thresholds.items()},
            refinement_iterations=max_refinement_steps,
        )
        super().__init__(schedule, token_window, kernel_size, sigma, softmax_temperature)

    def loss(self, maps, groups, window, prompt_length, previous_maps=None):
        subjects = [group.noun for group in groups]
        return losses.attend_and_excite_loss(maps, subjects, window, self.softmax_temperature, **self._smoothing())


class Conform(GuidanceMethod):
    """CONFORM (Meral et al., CVPR 2024): contrastive NT-Xent over token maps; words of one
    group together, groups apart, the previous step's maps as extra positives.
    Defaults: refinement of exactly 20 updates at steps 0, 10 and 20, temperature 0.5."""

    name = "conform"
    uses_previous_maps = True

    def __init__(
        self,
        temperature: float = 0.5,
        scale_factor: float = 20.0,
        scale_range: tuple[float, float] = (1.0, 0.5),
        max_iter_to_alter: int = 25,
        refinement_steps: Sequence[int] = (0, 10, 20),
        refinement_iterations: int = 20,
        use_previous_maps: bool = True,
        softmax_normalize: bool = True,
        token_window: TokenWindow = "auto",
        kernel_size: int = 3,
        sigma: float = 0.5,
        softmax_temperature: float = 100.0,
    ):
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        schedule = GuidanceSchedule(
            max_update_step=max_iter_to_alter,
            step_size=scale_factor,
            step_size_kind="sqrt_linspace",
            step_size_range=tuple(scale_range),
            refinement={int(step): None for step in refinement_steps},
            refinement_iterations=refinement_iterations,
        )
        super().__init__(schedule, token_window, kernel_size, sigma, softmax_temperature)
        self.temperature = temperature
        self.use_previous_maps = use_previous_maps
        self.softmax_normalize = softmax_normalize
        self.uses_previous_maps = use_previous_maps

    def validate_groups(self, groups, prompt):
        super().validate_groups(groups, prompt)
        if len(groups) < 2:
            raise ValueError(
                f"CONFORM needs at least two token groups (one per object) to have negatives; got "
                f"{len(groups)} for prompt {prompt!r}. Add a group per object, or use AttendAndExcite "
                "for a single subject."
            )

    def loss(self, maps, groups, window, prompt_length, previous_maps=None):
        return losses.conform_loss(
            maps,
            groups,
            window,
            previous_maps=previous_maps if self.use_previous_maps else None,
            temperature=self.temperature,
            softmax_temperature=self.softmax_temperature,
            softmax_normalize=self.softmax_normalize,
            **self._smoothing(),
        )


class Ebama(GuidanceMethod):
    """EBAMA (Zhang et al., 2024): object-conditioned binding (each modifier close to its
    object, the object away from the other tokens) plus ``intensity_weight`` times an
    intensity regulariser on every object's peak attention. Constant step size 20 for the
    first 25 steps, no refinement."""

    name = "ebama"

    def __init__(
        self,
        intensity_weight: float = 0.5,
        step_size: float = 20.0,
        max_iter_to_alter: int = 25,
        token_window: TokenWindow = "auto",
        kernel_size: int = 3,
        sigma: float = 0.5,
        softmax_temperature: float = 100.0,
    ):
        schedule = GuidanceSchedule(
            max_update_step=max_iter_to_alter, step_size=step_size, step_size_kind="constant"
        )
        super().__init__(schedule, token_window, kernel_size, sigma, softmax_temperature)
        self.intensity_weight = intensity_weight

    def loss(self, maps, groups, window, prompt_length, previous_maps=None):
        return losses.ebama_loss(
            maps,
            groups,
            window,
            prompt_length,
            intensity_weight=self.intensity_weight,
            temperature=self.softmax_temperature,
            **self._smoothing(),
        )


class SynGen(GuidanceMethod):
    """SynGen (Rassin et al., NeurIPS 2023): symmetric KL pulls each modifier's map onto its
    noun's and pushes both from the rest of the prompt. Constant step size 20 for the first
    25 steps, no refinement."""

    name = "syngen"

    def __init__(self, step_size: float = 20.0, max_iter_to_alter: int = 25, token_window: TokenWindow = "auto"):
        schedule = GuidanceSchedule(
            max_update_step=max_iter_to_alter, step_size=step_size, step_size_kind="constant"
        )
        super().__init__(schedule, token_window)

    def validate_groups(self, groups, prompt):
        super().validate_groups(groups, prompt)
        if not any(group.modifiers for group in groups):
            raise ValueError(
                f"SynGen binds modifiers to nouns, but no token group of prompt {prompt!r} has a "
                "modifier (a group is [modifier..., noun]). Add the attribute words to the groups."
            )

    def loss(self, maps, groups, window, prompt_length, previous_maps=None):
        return losses.syngen_loss(maps, groups, prompt_length)


METHODS = {cls.name: cls for cls in (AttendAndExcite, Conform, Ebama, SynGen)}
ALIASES = {"ae": "attend_and_excite", "attend-and-excite": "attend_and_excite", "a&e": "attend_and_excite"}


def get_method(name: str, **kwargs) -> GuidanceMethod:
    """A method by name (``attend_and_excite``/``ae``, ``conform``, ``ebama``, ``syngen``)."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in METHODS:
        raise ValueError(f"Unknown guidance method {name!r}; choose one of {', '.join(METHODS)}.")
    return METHODS[key](**kwargs)
