"""What ``tune`` searches, and on which prompts: the candidate settings of a method, the
train/test split of a prompt set, and the successive-halving plan that fits a budget.

A candidate is a dict of changes to the paper defaults (``{}`` is the defaults): fields of
:class:`~contrastive_diffusers.guidance.GuidanceSchedule` (``step_size``, ``max_update_step``
as a fraction of the trajectory, ``refinement_iterations``), constructor arguments of the
method (CONFORM's ``temperature``, EBAMA's ``intensity_weight``) and ``attn_res`` (the map
size, where the model has several).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from dataclasses import dataclass

from ..guidance.methods import SCHEDULE_FIELDS, get_method, method_class
from ..guidance.schedule import PAPER_STEPS, as_fractions
from ..records import jsonable

__all__ = ["Plan", "build_candidate", "candidate_label", "plan_halving", "same_guidance", "search_space",
           "split_by_hash"]

# Multiples of the paper's step size (set for SD's 64x64 latents; smaller latents may want less).
STEP_SCALES = (0.25, 0.5, 1.0, 2.0)
# Last guided step as a fraction of the trajectory (the papers: about 0.5).
LAST_STEP_FRACTIONS = (0.25, 0.5, 0.75)
# The method's own weights.
OWN_WEIGHTS = {
    "conform": {"temperature": (0.25, 0.5, 1.0)},
    "ebama": {"intensity_weight": (0.25, 0.5, 1.0)},
}
# Methods with refinement: the paper's refinement, or none at all.
REFINING = ("attend_and_excite", "conform")
HALVING_RATE = 2  # successive halving keeps the best 1/2 of the candidates at each rung
MAX_CANDIDATES = 16


def search_space(method_name: str, map_sizes=(), shuffle_seed: int = 0, loop_steps: int | None = None,
                 paper_fractions: bool = False) -> list[dict]:
    """Every candidate for ``method_name``: the paper defaults (``{}``) first, then the grid of
    step-size multiples x last guided step x refinement on/off x the method's own weights x
    the other map sizes (``map_sizes``: ``(h, w)`` besides the default), in a fixed shuffled
    order so that any prefix spreads over the grid. With ``loop_steps`` (and
    ``paper_fractions``, see :func:`same_guidance`), a grid point that guides exactly as an
    earlier candidate in such a run is left out: SynGen's last guided step 25 of 50 is the
    fraction 0.5 at 50 steps, and a search would otherwise spend a place, and its images, on
    the defaults twice."""
    cls = method_class(method_name)
    name = cls.name
    default_step = get_method(name).schedule.step_size
    axes: dict = {
        "step_size": [default_step * s for s in STEP_SCALES],
        "max_update_step": list(LAST_STEP_FRACTIONS),
    }
    if name in REFINING:
        axes["refinement_iterations"] = [0, get_method(name).schedule.refinement_iterations]
    axes.update({k: list(v) for k, v in OWN_WEIGHTS.get(name, {}).items()})
    axes["attn_res"] = [None, *[tuple(int(v) for v in s) for s in map_sizes]]
    grid = [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
    grid = [{k: v for k, v in c.items() if v is not None} for c in grid]
    random.Random(shuffle_seed).shuffle(grid)
    candidates = [{}] + grid
    if loop_steps is None:
        return candidates
    seen, kept = set(), []
    for candidate in candidates:
        key = same_guidance(method_name, candidate, loop_steps, paper_fractions)
        if key not in seen:
            seen.add(key)
            kept.append(candidate)
    return kept


def same_guidance(method_name: str, candidate: dict, loop_steps: int, paper_fractions: bool = False) -> str:
    """What a candidate does in a run of ``loop_steps`` denoising iterations, as a comparable
    string; equal strings guide alike. The schedule is resolved as the guider resolves it:
    ``loop_steps`` is the length of the scheduler's timesteps (PNDM's is one more than the
    steps asked), and ``paper_fractions`` reads int step indices as fractions of the papers'
    50 steps first (the MMDiT guider's default,
    :func:`~contrastive_diffusers.guidance.schedule.as_fractions`). The string holds, per
    guided step, the step size, whether it updates and its refinement target, then the
    refinement iterations (when any step refines), the method's own arguments and the map
    size; a candidate that guides no step at all is plain generation, whatever its settings."""
    method, attn_res = build_candidate(method_name, candidate)
    schedule = as_fractions(method.schedule) if paper_fractions else method.schedule
    schedule = schedule.resolve(loop_steps)
    sizes = schedule.step_sizes(loop_steps)
    steps = [[i, float(sizes[i]), schedule.updates_at(i),
              schedule.refinement[i] if schedule.refines_at(i) else "no refinement"]
             for i in range(loop_steps) if schedule.is_active(i)]
    if not steps:
        return "no step guided"
    refines = any(step[3] != "no refinement" for step in steps)
    # the arguments that set the paper's schedule are the same in every candidate (a candidate
    # changes the schedule through its overrides); the others are the method's own weights
    arguments = {k: v for k, v in method.init_kwargs().items() if k != "schedule_overrides"}
    return json.dumps(jsonable([type(method).__name__, steps, schedule.refinement_iterations if refines else 0,
                                arguments, attn_res]), sort_keys=True)


def candidate_label(candidate: dict) -> str:
    """``"defaults"`` or ``"step_size=10 max_update_step=0.5 ..."``."""
    if not candidate:
        return "defaults"
    return " ".join(f"{k}={'x'.join(map(str, v)) if isinstance(v, (tuple, list)) else v}" for k, v in candidate.items())


def _refinement_before(refinement: dict, last) -> dict:
    """The refinement steps before ``last`` (the candidate's last guided step), in its units:
    a fraction ``last`` turns the paper's step indices into fractions of its 50 steps, so that
    refinement and the last guided step move together with the number of steps."""
    if isinstance(last, float):
        refinement = {(s / PAPER_STEPS if isinstance(s, int) else s): t for s, t in refinement.items()}
    return {s: t for s, t in refinement.items() if s < last}


def build_candidate(method_name: str, candidate: dict):
    """``(method, attn_res)`` for a candidate: the method with its changes applied. A
    candidate's last guided step (``max_update_step``) also ends refinement: the paper's
    refinement steps at or after it are dropped (diffusers' A&E would still refine there,
    which is not "the last guided step" the search means)."""
    changes = dict(candidate)
    attn_res = changes.pop("attn_res", None)
    schedule = {k: changes.pop(k) for k in list(changes) if k in SCHEDULE_FIELDS}
    method = get_method(method_name, **changes)
    if "max_update_step" in schedule and "refinement" not in schedule:
        schedule["refinement"] = _refinement_before(method.schedule.refinement, schedule["max_update_step"])
    if schedule:
        method = method.with_schedule(**schedule)
    return method, (tuple(attn_res) if attn_res else None)


def split_by_hash(items, test_fraction: float = 0.5) -> tuple[list, list]:
    """A deterministic train/test split by the SHA-256 of each prompt id: the same prompt lands
    on the same side in every run and on every machine, whatever the order. A text the set
    holds more than once (under several ids) goes, every time, where its smallest id goes: a
    test prompt is never also a train prompt."""
    texts = [" ".join(item.prompt.lower().split()) for item in items]
    first_id = {}
    for item, text in zip(items, texts):
        first_id[text] = min(first_id.get(text, item.id), item.id)
    train, test = [], []
    for item, text in zip(items, texts):
        key = first_id[text].encode("utf-8")
        value = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64
        (test if value < test_fraction else train).append(item)
    return train, test


@dataclass(frozen=True)
class Plan:
    """Successive halving: ``candidates`` start; rung k runs the survivors on the first
    ``prompts[k]`` train prompts (at every seed), then keeps the best ``1/HALVING_RATE``."""

    candidates: int
    prompts: tuple[int, ...]
    seeds: int

    def survivors(self, rung: int) -> int:
        return max(1, math.ceil(self.candidates / HALVING_RATE**rung))

    @property
    def images(self) -> int:
        """What the plan counts against the budget: every rung's images in full."""
        return sum(self.survivors(k) * p * self.seeds for k, p in enumerate(self.prompts))

    @property
    def drawn(self) -> int:
        """The images drawn: a survivor reuses its images of the rungs before."""
        before = (0, *self.prompts[:-1])
        return sum(self.survivors(k) * (p - q) * self.seeds for k, (p, q) in enumerate(zip(self.prompts, before)))


def _rungs(candidates: int, first: int, available: int) -> tuple[int, ...]:
    """Prompts per rung: ``first``, doubling, while two candidates or more are left to compare."""
    prompts, k = [], 0
    while math.ceil(candidates / HALVING_RATE**k) >= 2:
        prompts.append(min(first * HALVING_RATE**k, available))
        if prompts[-1] == available:
            break
        k += 1
    return tuple(prompts)


def plan_halving(budget: int, space_size: int, train_prompts: int, seeds: int) -> Plan:
    """The plan with the most candidates (up to ``MAX_CANDIDATES``) whose first rung gives each
    at least two prompts (one when the budget allows no more) and whose images fit ``budget``;
    then its first rung grown a prompt at a time while the plan still fits (the cost is not
    monotonic in the first rung, so a larger one past the first that does not fit is not tried). ``ValueError`` when not even two candidates
    on one prompt fit."""
    for min_first in (2, 1):
        for n in range(min(space_size, MAX_CANDIDATES), 1, -1):
            if min_first > train_prompts:
                continue
            if Plan(n, _rungs(n, min_first, train_prompts), seeds).images > budget:
                continue
            first = min_first
            while first < train_prompts and Plan(n, _rungs(n, first + 1, train_prompts), seeds).images <= budget:
                first += 1
            return Plan(n, _rungs(n, first, train_prompts), seeds)
    need = Plan(2, _rungs(2, 1, max(train_prompts, 1)), seeds).images
    raise ValueError(
        f"A search budget of {budget} images cannot compare two settings ({need} images at least with "
        f"{seeds} seed(s)); raise --budget."
    )
