"""Swap a pipeline's scheduler for another diffusers scheduler class, named as in diffusers.

Benchmarks fix their sampler (T2I-CompBench draws with DDIM, 30 steps), which is not always
the model's own; ``--scheduler DDIMScheduler`` reproduces that without touching the model."""

from __future__ import annotations

import importlib.util


def scheduler_names(pipe) -> list[str]:
    """The scheduler classes the pipeline's model can use (its scheduler's ``compatibles``)."""
    return sorted({type(pipe.scheduler).__name__, *(c.__name__ for c in pipe.scheduler.compatibles)})


def use_scheduler(pipe, name: str | None, guided: bool = False):
    """Give ``pipe`` the scheduler class ``name`` (e.g. ``"DDIMScheduler"``), built from its
    present scheduler's config (the model's betas and timestep settings carry over). ``None``
    keeps the model's own. ``guided``: the run guides, so the scheduler (given or the model's
    own) must be one guidance can follow (:func:`~..pipelines.session.check_guidable_loop`).
    Returns ``pipe``."""
    if name is not None:
        _swap_scheduler(pipe, name)
    if guided:
        from ..pipelines.session import check_guidable_loop

        check_guidable_loop(pipe)
    return pipe


def _swap_scheduler(pipe, name: str) -> None:
    import diffusers
    from diffusers.schedulers.scheduling_utils import SchedulerMixin

    known = scheduler_names(pipe)
    cls = getattr(diffusers, name, None)
    # diffusers' placeholder for a class whose dependency is missing
    missing = [b for b in getattr(cls, "_backends", ()) if importlib.util.find_spec(b) is None]
    if missing:
        raise ValueError(f"scheduler {name} needs {', '.join(missing)}: pip install {' '.join(missing)}.")
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise ValueError(f"unknown scheduler {name!r}: give a diffusers scheduler class name; this model can use "
                         f"{', '.join(known)}.")
    if name not in known:
        raise ValueError(f"scheduler {name} does not fit this model ({type(pipe.scheduler).__name__}); it can use "
                         f"{', '.join(known)}.")
    pipe.scheduler = cls.from_config(pipe.scheduler.config)
