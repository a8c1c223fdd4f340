"""Guidance methods: a loss on attention maps plus the schedule that applies it.

A method is a diffusers config object (``ConfigMixin``): its constructor arguments are its
config, saved with ``save_config`` and rebuilt with ``from_config`` or :func:`load_method`.
Its defaults reproduce the authors' code for 50 denoising steps. The guidance engine
(:mod:`.engine`) does the forward passes and updates; a method only says how to score one
image's maps.
"""

from __future__ import annotations

import dataclasses
import json
import os
from abc import ABC, abstractmethod
from typing import Any, Literal, Mapping, Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, FrozenDict, register_to_config

from . import losses
from .maps import check_smoothable
from .schedule import GuidanceSchedule, StepPosition

TokenWindow = Literal["auto", "all", "prompt"]
SCHEDULE_FIELDS = tuple(f.name for f in dataclasses.fields(GuidanceSchedule))


class MethodConfig(FrozenDict):
    """A method's diffusers config. Calling it, ``method.config()``, gives the method's run
    record (:meth:`GuidanceMethod.record`), as run folders and benchmark ledgers store it."""

    def __init__(self, config: Mapping, record):
        super().__init__(config)
        object.__setattr__(self, "_record", record)

    def __call__(self) -> dict:
        return self._record()


class GuidanceMethod(ConfigMixin, ABC):
    """Base class. Subclasses set ``name``, implement :meth:`loss` and decorate their
    ``__init__`` with ``@register_to_config``; every constructor takes ``schedule_overrides``:
    fields of :class:`GuidanceSchedule` that replace those its paper parameters give."""

    config_name = "guidance_method.json"
    name = "base"
    #: whether :meth:`loss` reads the previous denoising step's maps.
    uses_previous_maps = False
    #: whether :meth:`loss` smooths the maps (``kernel_size``, ``sigma``).
    smooths_maps = True

    def __init__(
        self,
        schedule: GuidanceSchedule,
        token_window: TokenWindow = "auto",
        kernel_size: int = 3,
        sigma: float = 0.5,
        softmax_temperature: float = 100.0,
        schedule_overrides: Mapping[str, Any] | None = None,
    ):
        if token_window not in ("auto", "all", "prompt"):
            raise ValueError(f"token_window must be 'auto', 'all' or 'prompt', got {token_window!r}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        overrides = dict(schedule_overrides or {})
        unknown = sorted(set(overrides) - set(SCHEDULE_FIELDS))
        if unknown:
            raise ValueError(
                f"Unknown schedule field(s) {', '.join(unknown)}; GuidanceSchedule has {', '.join(SCHEDULE_FIELDS)}."
            )
        self.schedule = dataclasses.replace(schedule, **overrides) if overrides else schedule
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

    # -- config ------------------------------------------------------------------------
    @property
    def config(self) -> MethodConfig:
        return MethodConfig(self._internal_dict, self.record)

    def init_kwargs(self) -> dict:
        """The constructor arguments this method was made with (its config without diffusers' keys)."""
        return {k: v for k, v in self._internal_dict.items() if not k.startswith("_")}

    def record(self) -> dict:
        """JSON-ready: the method's name, its constructor arguments and the schedule they give."""
        params = json.loads(json.dumps(self.init_kwargs()))
        return {"method": self.name, **params, "schedule": self.schedule.to_dict()}

    def with_schedule(self, **changes) -> "GuidanceMethod":
        """A copy with some schedule fields changed, e.g. ``method.with_schedule(step_size=10)``
        or ``method.with_schedule(max_update_step=0.5)`` (half the trajectory at any step count)."""
        kwargs = self.init_kwargs()
        overrides = {**(kwargs.get("schedule_overrides") or {}), **changes}
        return type(self)(**{**kwargs, "schedule_overrides": overrides})

    def _smoothing(self) -> dict:
        return dict(kernel_size=self.kernel_size, sigma=self.sigma)

    def check_map_size(self, map_hw: tuple[int, int]) -> None:
        """``ValueError`` when this method cannot read maps of ``map_hw`` (too small to smooth)."""
        if self.smooths_maps:
            check_smoothable(map_hw, self.kernel_size)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.init_kwargs().items())
        return f"{type(self).__name__}({params})"


class AttendAndExcite(GuidanceMethod):
    """Attend-and-Excite (Chefer et al., SIGGRAPH 2023): raise the peak attention of every
    subject (the noun of each group). ``thresholds`` are the paper's per-step attention
    targets for iterative refinement (loss target ``1 - threshold``). Defaults: diffusers'
    ``StableDiffusionAttendAndExcitePipeline`` (updates at steps 0-24, step size
    ``20 * sqrt(linspace(1, 0.5, steps))``, refinement at steps 0, 10, 20 of at most 20 updates)."""

    name = "attend_and_excite"

    @register_to_config
    def __init__(
        self,
        scale_factor: float = 20.0,
        scale_range: tuple[float, float] = (1.0, 0.5),
        max_iter_to_alter: StepPosition = 25,
        thresholds: Mapping[StepPosition, float] | None = None,
        max_refinement_steps: int = 20,
        token_window: TokenWindow = "auto",
        kernel_size: int = 3,
        sigma: float = 0.5,
        softmax_temperature: float = 100.0,
        schedule_overrides: Mapping[str, Any] | None = None,
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
        super().__init__(schedule, token_window, kernel_size, sigma, softmax_temperature, schedule_overrides)

    def loss(self, maps, groups, window, prompt_length, previous_maps=None):
        subjects = [group.noun for group in groups]
        return losses.attend_and_excite_loss(maps, subjects, window, self.softmax_temperature, **self._smoothing())


class Conform(GuidanceMethod):
    """CONFORM (Meral et al., CVPR 2024): contrastive NT-Xent over token maps; tokens of one
    group together, groups apart, the previous step's maps as extra positives.

    Defaults: the authors' notebook (their README's entry point): raw attention maps
    (``softmax_normalize=False``), updates at steps 0-29, refinement of exactly 20 updates at
    steps 0, 10 and 20, temperature 0.5. :meth:`pipeline_signature` gives the defaults of
    their pipeline's ``__call__`` instead (token softmax on, updates at steps 0-24)."""

    name = "conform"
    uses_previous_maps = True

    @register_to_config
    def __init__(
        self,
        temperature: float = 0.5,
        scale_factor: float = 20.0,
        scale_range: tuple[float, float] = (1.0, 0.5),
        max_iter_to_alter: StepPosition = 30,
        refinement_steps: Sequence[StepPosition] = (0, 10, 20),
        refinement_iterations: int = 20,
        use_previous_maps: bool = True,
        softmax_normalize: bool = False,
        token_window: TokenWindow = "auto",
        kernel_size: int = 3,
        sigma: float = 0.5,
        softmax_temperature: float = 100.0,
        schedule_overrides: Mapping[str, Any] | None = None,
    ):
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        schedule = GuidanceSchedule(
            max_update_step=max_iter_to_alter,
            step_size=scale_factor,
            step_size_kind="sqrt_linspace",
            step_size_range=tuple(scale_range),
            refinement={step: None for step in refinement_steps},
            refinement_iterations=refinement_iterations,
        )
        super().__init__(schedule, token_window, kernel_size, sigma, softmax_temperature, schedule_overrides)
        self.temperature = temperature
        self.use_previous_maps = use_previous_maps
        self.softmax_normalize = softmax_normalize
        self.uses_previous_maps = use_previous_maps

    @classmethod
    def pipeline_signature(cls, **kwargs) -> "Conform":
        """CONFORM with the defaults of the authors' ``ConformPipeline.__call__``: token
        softmax of ``100 * maps`` on and updates at steps 0-24. (Their code multiplies the
        stored previous maps by 100 in place at every loss evaluation, so with the softmax on
        the previous maps sharpen with every refinement iteration; we apply the softmax once.)"""
        return cls(**{"softmax_normalize": True, "max_iter_to_alter": 25, **kwargs})

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
    """EBAMA (Zhang et al., ECCV 2024): object-conditioned binding (each modifier close to
    its object, the object away from the other tokens) plus ``intensity_weight`` times an
    intensity regulariser on every object's peak attention. Constant step size 20; the
    authors' code guides steps 0-25 (``if self.i > 25: return 0``), so ``max_iter_to_alter``
    (the first step left alone) is 26. No refinement."""

    name = "ebama"

    @register_to_config
    def __init__(
        self,
        intensity_weight: float = 0.5,
        step_size: float = 20.0,
        max_iter_to_alter: StepPosition = 26,
        token_window: TokenWindow = "auto",
        kernel_size: int = 3,
        sigma: float = 0.5,
        softmax_temperature: float = 100.0,
        schedule_overrides: Mapping[str, Any] | None = None,
    ):
        schedule = GuidanceSchedule(max_update_step=max_iter_to_alter, step_size=step_size, step_size_kind="constant")
        super().__init__(schedule, token_window, kernel_size, sigma, softmax_temperature, schedule_overrides)
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
    noun's and pushes both from the rest of the prompt. Constant step size 20 at steps 0-24
    (the authors' ``num_intervention_steps=25``), no refinement."""

    name = "syngen"
    smooths_maps = False

    @register_to_config
    def __init__(
        self,
        step_size: float = 20.0,
        max_iter_to_alter: StepPosition = 25,
        token_window: TokenWindow = "auto",
        schedule_overrides: Mapping[str, Any] | None = None,
    ):
        schedule = GuidanceSchedule(max_update_step=max_iter_to_alter, step_size=step_size, step_size_kind="constant")
        super().__init__(schedule, token_window, schedule_overrides=schedule_overrides)

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


def method_class(name: str) -> type[GuidanceMethod]:
    """The class of a method name or alias."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in METHODS:
        raise ValueError(f"Unknown guidance method {name!r}; choose one of {', '.join(METHODS)} (or 'ae').")
    return METHODS[key]


def get_method(name: str, **kwargs) -> GuidanceMethod:
    """A method by name (``attend_and_excite``/``ae``, ``conform``, ``ebama``, ``syngen``)."""
    return method_class(name)(**kwargs)


def load_method(source: str | os.PathLike | Mapping) -> GuidanceMethod:
    """A method from a config: a JSON file (``method.save_config(folder)`` writes
    ``folder/guidance_method.json``), a folder holding that file, or a dict.

    The class comes from ``_class_name`` (``"Conform"``, as ``save_config`` writes it) or,
    in a hand-written file, from ``"method"`` (a name or alias as :func:`get_method` takes);
    every other key is a constructor argument, e.g. ``{"method": "conform",
    "temperature": 0.25, "schedule_overrides": {"max_update_step": 0.5}}``."""
    if isinstance(source, Mapping):
        config, where = dict(source), "the config"
    else:
        path = os.fspath(source)
        if os.path.isdir(path):
            path = os.path.join(path, GuidanceMethod.config_name)
        if not os.path.isfile(path):
            raise ValueError(f"No method config at {path}; pass a JSON file or a folder made by save_config.")
        try:
            with open(path, encoding="utf-8") as f:
                config = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from None
        if not isinstance(config, dict):
            raise ValueError(f"{path} must hold a JSON object of constructor arguments, got {type(config).__name__}")
        where = path
    by_class = {cls.__name__: cls for cls in METHODS.values()}
    class_name, name = config.get("_class_name"), config.pop("method", None)
    if class_name is not None:
        if class_name not in by_class:
            raise ValueError(f"{where}: unknown method class {class_name!r}; expected one of {', '.join(by_class)}.")
        cls = by_class[class_name]
    elif name is not None:
        cls = method_class(name)
    else:
        raise ValueError(f"{where} names no method: add \"method\": one of {', '.join(METHODS)}.")
    kwargs = {k: v for k, v in config.items() if not k.startswith("_")}
    known = set(cls._get_init_keys(cls)) - {"self"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ValueError(
            f"{where}: {cls.__name__} takes no argument(s) {', '.join(unknown)}; it takes {', '.join(sorted(known))}."
        )
    try:
        return cls(**kwargs)
    except ValueError as err:  # a value out of range, named by the schedule field it sets
        alias = "max_update_step" in str(err) and "max_iter_to_alter" in kwargs
        note = " (max_iter_to_alter sets the schedule's max_update_step)" if alias else ""
        raise ValueError(f"{where}: {err}{note}") from None
    except TypeError as err:  # e.g. "temperature": "hot" compared with a number
        raise ValueError(
            f"{where}: a value of the wrong type for {cls.__name__} ({err}); write numbers as JSON numbers "
            '(e.g. "temperature": 0.25, "schedule_overrides": {"step_size": 10}).'
        ) from None
