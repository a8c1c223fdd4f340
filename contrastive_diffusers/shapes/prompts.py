"""The ShapesWorld prompt set, with colour-shape combinations held out of training.

:func:`held_out_pairs` is a fixed list of six (colour, shape) pairs chosen so that every colour
and every shape still occurs in training with other partners; the training split
(:func:`training_pairs`, and ``shapes_prompts("train")``) never uses them, and the test split's
``held_out`` category uses them: each held-out pair alone, then each with a training object.
Every prompt carries its oracle spec in ``metadata["spec"]`` (:meth:`CaptionSpec.to_dict`).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ..prompts import PromptItem
from .captions import caption_text, sample_spec
from .spec import CaptionSpec, ObjectSpec
from .world import all_pairs

__all__ = ["HELD_OUT_PAIRS", "PROMPT_CATEGORIES", "SPLITS", "held_out_pairs", "shapes_prompts", "training_pairs"]

#: (colour, shape) pairs never seen together in training.
HELD_OUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("red", "triangle"),
    ("orange", "diamond"),
    ("green", "circle"),
    ("blue", "square"),
    ("purple", "cross"),
    ("yellow", "triangle"),
)
#: Categories of the set and the caption kind each is drawn from.
PROMPT_CATEGORIES: dict[str, str] = {
    "single": "single",
    "two_object": "two_object",
    "relation": "relation",
    "count": "count",
    "no_color": "no_color",
    "size": "size",
}
SPLITS = ("train", "test")
_DEFAULT_PER_CATEGORY = {"train": 200, "test": 50}


def held_out_pairs() -> list[tuple[str, str]]:
    return list(HELD_OUT_PAIRS)


def training_pairs() -> list[tuple[str, str]]:
    """Every (colour, shape) pair except :func:`held_out_pairs`."""
    return [p for p in all_pairs() if p not in HELD_OUT_PAIRS]


def _item(split: str, category: str, n: int, spec: CaptionSpec, kind: str) -> PromptItem:
    caption = caption_text(spec, kind)
    return PromptItem(
        f"shapes-{split}-{category}-{n:03d}", caption.text, category, caption.token_groups,
        {"spec": spec.to_dict(), "kind": kind, "split": split, "world": "shapes"},
    )


def _held_out_specs(rng: np.random.Generator, count: int) -> list[tuple[CaptionSpec, str]]:
    """Each held-out pair alone, then held-out pairs with a training object (in random order)."""
    specs = [(CaptionSpec((ObjectSpec(shape, color),)), "single") for color, shape in HELD_OUT_PAIRS]
    while len(specs) < count:
        color, shape = HELD_OUT_PAIRS[len(specs) % len(HELD_OUT_PAIRS)]
        partners = [(c, s) for c, s in training_pairs() if c != color and s != shape]
        c2, s2 = partners[int(rng.integers(len(partners)))]
        objects = [ObjectSpec(shape, color), ObjectSpec(s2, c2)]
        if rng.integers(2):
            objects.reverse()
        specs.append((CaptionSpec(tuple(objects)), "two_object"))
    return specs[:count]


def shapes_prompts(split: str = "test", seed: int = 0, per_category: int | None = None) -> list[PromptItem]:
    """The ShapesWorld prompts of a split: ``per_category`` (default 50 for test, 200 for train)
    prompts for each of :data:`PROMPT_CATEGORIES`, drawn from training pairs only, plus - in the
    test split - as many ``held_out`` prompts. Duplicate captions within a category are
    skipped, so a small category (e.g. ``no_color``: five shapes) may hold fewer. Deterministic
    for ``(split, seed)``. A ``per_category`` below the default gives the first prompts of each
    category of the default split (the same ids, the same prompts); one above it draws a set of
    its own, whose ids may name other prompts than the default split's."""
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; valid splits: {', '.join(SPLITS)}.")
    default = _DEFAULT_PER_CATEGORY[split]
    per = per_category if per_category is not None else default
    if per < 1:
        raise ValueError(f"per_category must be positive, got {per}.")
    if per < default:  # every category's draw goes on from the previous one's: draw them all, keep the first
        kept, taken = [], Counter()
        for item in shapes_prompts(split, seed):
            taken[item.category] += 1
            if taken[item.category] <= per:
                kept.append(item)
        return kept
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    pool = training_pairs()
    items: list[PromptItem] = []
    categories = dict(PROMPT_CATEGORIES)
    if split == "test":
        categories["held_out"] = "held_out"
    for category, kind in categories.items():
        seen: set[str] = set()
        n = 0
        held_out = iter(_held_out_specs(rng, per * 20)) if category == "held_out" else None
        for _ in range(per * 20):
            if n == per:
                break
            if held_out is not None:
                spec, spec_kind = next(held_out)
            else:
                spec, spec_kind = sample_spec(kind, rng, pool), kind
            text = caption_text(spec, spec_kind).text
            if text in seen:
                continue
            seen.add(text)
            items.append(_item(split, category, n, spec, spec_kind))
            n += 1
    return items
