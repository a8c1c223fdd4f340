"""Captions in the benchmarks' style, each with its token groups and the spec it asserts.

Kinds (``CAPTION_KINDS``):

============  ======================================================  ==========================
kind          example                                                 token groups
============  ======================================================  ==========================
single        "a red circle"                                          [[red, circle]]
two_object    "a red circle and a blue square"                        [[red, circle], [blue, square]]
relation      "a green triangle above a yellow circle"                [[green, triangle], [yellow, circle]]
count         "two red circles"                                       [[two, red, circles]]
no_color      "a circle"                                              [[circle]]
size          "a large red circle"                                    [[large, red, circle]]
scene         "a red circle to the left of a blue square and a        one group per object
              green triangle"
============  ======================================================  ==========================

Two-object, relation and scene captions use different colours and different shapes for
their objects, so swapping colours always makes a different (false) caption. Token groups
are the caption's own words, attributes first and the noun last.

:func:`negatives_for` gives minimal perturbations of a caption that are false for a scene
(swapped colours, a replaced shape or colour, the opposite or perpendicular relation, a count
off by one, the other size), checked against the scene's true objects with
:func:`spec.evaluate`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .spec import CaptionSpec, ObjectSpec, evaluate
from .world import (
    COLORS,
    OPPOSITE_RELATION,
    PLURALS,
    RELATION_PHRASES,
    RELATIONS,
    SHAPES,
    SIZES,
    PlacementError,
    Scene,
    ShapeObject,
    all_pairs,
    place_objects,
)

__all__ = [
    "CAPTION_KINDS",
    "NUMBER_WORDS",
    "Caption",
    "caption_for",
    "caption_text",
    "negatives_for",
    "perturbations",
    "sample_spec",
    "scenes_for",
]

CAPTION_KINDS: tuple[str, ...] = ("single", "two_object", "relation", "count", "no_color", "size", "scene")
NUMBER_WORDS: dict[int, str] = {1: "one", 2: "two", 3: "three"}
_PERPENDICULAR = {"left of": ("above", "below"), "right of": ("above", "below"),
                  "above": ("left of", "right of"), "below": ("left of", "right of")}


@dataclass(frozen=True)
class Caption:
    """A caption's text, its token groups (one per object: attributes then noun) and its spec."""

    text: str
    token_groups: list[list[str]]
    spec: CaptionSpec
    kind: str | None = None

    def to_dict(self) -> dict:
        return {"text": self.text, "token_groups": [list(g) for g in self.token_groups],
                "spec": self.spec.to_dict(), "kind": self.kind}

    @classmethod
    def from_dict(cls, data: dict) -> Caption:
        return cls(data["text"], [list(g) for g in data["token_groups"]],
                   CaptionSpec.from_dict(data["spec"]), data.get("kind"))


def _phrase(obj: ObjectSpec) -> tuple[str, list[str]]:
    words = [w for w in (obj.size, obj.color) if w]
    if obj.count == 1 and not obj.exact:
        noun = obj.shape
        article = "an" if (words[0] if words else noun)[0] in "aeiou" else "a"
        group = words + [noun]
        return " ".join([article] + group), group
    number = NUMBER_WORDS.get(obj.count, str(obj.count))
    noun = PLURALS[obj.shape] if obj.count != 1 else obj.shape
    group = [number] + words + [noun]
    return " ".join(group), group


def _join(parts: list[str]) -> str:
    if len(parts) <= 2:
        return " and ".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def caption_text(spec: CaptionSpec, kind: str | None = None) -> Caption:
    """The caption of a spec: object phrases joined with "and"; a relation reads
    "<subject> <relation phrase> <object>", the other objects follow with "and"."""
    phrases = [_phrase(o) for o in spec.objects]
    if spec.relation is None:
        order = list(range(len(phrases)))
        text = _join([phrases[k][0] for k in order])
    else:
        i, name, j = spec.relation
        order = [i, j] + [k for k in range(len(phrases)) if k not in (i, j)]
        head = f"{phrases[i][0]} {RELATION_PHRASES[name]} {phrases[j][0]}"
        rest = [phrases[k][0] for k in order[2:]]
        text = head if not rest else (f"{head} and {_join(rest)}" if len(rest) == 1 else f"{head}, {_join(rest)}")
    return Caption(text, [list(phrases[k][1]) for k in order], spec, kind)


def _rng(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _distinct_pairs(rng: np.random.Generator, pool: list[tuple[str, str]], n: int) -> list[tuple[str, str]]:
    """``n`` pairs from ``pool`` with pairwise different colours and different shapes."""
    for _ in range(1000):
        picks = [pool[int(k)] for k in rng.choice(len(pool), size=n, replace=False)]
        if len({c for c, _ in picks}) == n and len({s for _, s in picks}) == n:
            return picks
    raise ValueError(f"The pair pool has no {n} pairs with different colours and shapes.")


def sample_spec(kind: str, rng, pairs: Iterable[tuple[str, str]] | None = None) -> CaptionSpec:
    """A random spec of a caption kind; colour-shape combinations come from ``pairs`` (default
    all; pass ``training_pairs()`` or ``held_out_pairs()`` to control them)."""
    rng = _rng(rng)
    pool = list(pairs) if pairs is not None else all_pairs()
    if not pool:
        raise ValueError("The pair pool is empty.")
    if kind == "single":
        c, s = pool[int(rng.integers(len(pool)))]
        return CaptionSpec((ObjectSpec(s, c),))
    if kind == "size":
        c, s = pool[int(rng.integers(len(pool)))]
        return CaptionSpec((ObjectSpec(s, c, size=list(SIZES)[int(rng.integers(len(SIZES)))]),))
    if kind == "no_color":
        shapes = sorted({s for _, s in pool}, key=SHAPES.index)
        return CaptionSpec((ObjectSpec(shapes[int(rng.integers(len(shapes)))]),))
    if kind == "count":
        c, s = pool[int(rng.integers(len(pool)))]
        return CaptionSpec((ObjectSpec(s, c, count=int(rng.integers(2, 4)), exact=True),))
    if kind in ("two_object", "relation", "scene"):
        n = 3 if kind == "scene" else 2
        objects = tuple(ObjectSpec(s, c) for c, s in _distinct_pairs(rng, pool, n))
        relation = None if kind == "two_object" else (0, RELATIONS[int(rng.integers(len(RELATIONS)))], 1)
        return CaptionSpec(objects, relation)
    raise ValueError(f"Unknown caption kind {kind!r}; valid kinds: {', '.join(CAPTION_KINDS)}.")


def caption_for(scene: Scene, kind: str) -> Caption:
    """A true caption of ``kind`` for a scene (at-least semantics, so a caption may name only
    some of the objects). Raises ``ValueError`` when the scene cannot carry that kind (e.g.
    "relation" for a scene without one, "count" without two equal objects)."""
    objs = scene.objects
    if kind == "single":
        spec = CaptionSpec((ObjectSpec(objs[0].shape, objs[0].color),))
    elif kind == "size":
        spec = CaptionSpec((ObjectSpec(objs[0].shape, objs[0].color, size=objs[0].size),))
    elif kind == "no_color":
        spec = CaptionSpec((ObjectSpec(objs[0].shape),))
    elif kind == "count":
        counts: dict[tuple[str, str], int] = {}
        for o in objs:
            counts[(o.color, o.shape)] = counts.get((o.color, o.shape), 0) + 1
        (color, shape), n = max(counts.items(), key=lambda kv: kv[1])
        if n < 2:
            raise ValueError("A count caption needs a scene with two or more objects of one colour and shape.")
        spec = CaptionSpec((ObjectSpec(shape, color, count=n, exact=True),))
    elif kind == "two_object":
        if len(objs) < 2:
            raise ValueError("A two-object caption needs a scene with two objects.")
        spec = CaptionSpec(tuple(ObjectSpec(o.shape, o.color) for o in objs[:2]))
    elif kind in ("relation", "scene"):
        if kind == "relation" and scene.relation is None:
            raise ValueError("A relation caption needs a scene with a relation.")
        keep = list(range(len(objs))) if kind == "scene" else [scene.relation[0], scene.relation[2]]
        relation = None
        if scene.relation is not None:
            i, name, j = scene.relation
            relation = (keep.index(i), name, keep.index(j))
        spec = CaptionSpec(tuple(ObjectSpec(objs[k].shape, objs[k].color) for k in keep), relation)
    else:
        raise ValueError(f"Unknown caption kind {kind!r}; valid kinds: {', '.join(CAPTION_KINDS)}.")
    if not evaluate(objs, spec).success:
        raise ValueError(f"The scene does not support a true {kind} caption (objects repeat ambiguously).")
    return caption_text(spec, kind)


def scenes_for(
    spec: CaptionSpec,
    rng,
    distractors: int = 0,
    pairs: Iterable[tuple[str, str]] | None = None,
    attempts: int = 50,
) -> Scene:
    """A scene that satisfies ``spec`` (checked with :func:`spec.evaluate`, extra objects not
    allowed beyond the ``distractors``): each required object ``count`` times, free colours and
    sizes drawn at random (from ``pairs`` when given), plus ``distractors`` objects that match no
    requirement. Deterministic for a seed."""
    rng = _rng(rng)
    pool = list(pairs) if pairs is not None else all_pairs()
    total = sum(o.count for o in spec.objects) + distractors
    if total > 3:
        raise ValueError(f"A scene holds at most 3 objects; the spec and distractors ask for {total}.")
    for attempt in range(attempts):
        items: list[tuple[str, str, str]] = []  # shape, colour, size
        firsts: list[int] = []
        for req in spec.objects:
            if req.color is not None:
                color = req.color
            else:
                options = [c for c, s in pool if s == req.shape] or list(COLORS)
                color = options[int(rng.integers(len(options)))]
            firsts.append(len(items))
            for _ in range(req.count):
                size = req.size or ("small" if attempt >= attempts // 2 else list(SIZES)[int(rng.integers(len(SIZES)))])
                items.append((req.shape, color, size))
        used = {(color, shape) for shape, color, _ in items}
        free = [(c, s) for c, s in pool
                if (c, s) not in used
                and not any(s == r.shape and (r.color is None or r.color == c) for r in spec.objects)]
        if len(free) < distractors:
            raise ValueError("No colour-shape pairs are left for distractors that match no requirement.")
        for k in rng.choice(len(free), size=distractors, replace=False) if distractors else []:
            c, s = free[int(k)]
            items.append((s, c, "small" if attempt >= attempts // 2 else list(SIZES)[int(rng.integers(len(SIZES)))]))
        relation = None
        if spec.relation is not None:
            i, name, j = spec.relation
            relation = (firsts[i], name, firsts[j])
        try:
            centres = place_objects(rng, [SIZES[size] for _, _, size in items], relation, attempts=200)
        except PlacementError:
            continue
        scene = Scene(tuple(ShapeObject(s, c, size, "solid", x, y) for (s, c, size), (x, y) in zip(items, centres)),
                      relation)
        if evaluate(scene.objects, spec, allow_extra=distractors > 0).success:
            return scene
    raise PlacementError(f"No scene found for {caption_text(spec).text!r} in {attempts} attempts.")


def _other(rng: np.random.Generator, options: Iterable[str], avoid: Iterable[str]) -> str | None:
    choices = [o for o in options if o not in set(avoid)]
    return choices[int(rng.integers(len(choices)))] if choices else None


def perturbations(spec: CaptionSpec, rng=0, pairs: Iterable[tuple[str, str]] | None = None
                  ) -> list[tuple[str, CaptionSpec]]:
    """Minimal edits of a spec, named: ``swap_colors`` (two objects exchange colours),
    ``swap_shapes``, ``replace_color``, ``replace_shape`` (of one object, chosen at random),
    ``opposite_relation``, ``perpendicular_relation``, ``count_plus``, ``count_minus``,
    ``other_size``. Only edits that apply are returned; they are not checked against any scene
    (see :func:`negatives_for`). ``pairs``: the colour-shape pairs an edit may name (a
    replacement is chosen among them, a swap that leaves them is dropped), so that training
    negatives never name a held-out pair; ``None``: any."""
    rng = _rng(rng)
    objs = list(spec.objects)
    out: list[tuple[str, CaptionSpec]] = []
    pool = None if pairs is None else set(pairs)

    def allowed(obj: ObjectSpec) -> bool:
        return pool is None or obj.color is None or (obj.color, obj.shape) in pool

    def with_objects(new: list[ObjectSpec], relation=spec.relation) -> CaptionSpec:
        return CaptionSpec(tuple(new), relation)

    if len(objs) >= 2 and objs[0].color and objs[1].color and objs[0].color != objs[1].color:
        new = list(objs)
        new[0], new[1] = (ObjectSpec(objs[0].shape, objs[1].color, objs[0].count, objs[0].size, objs[0].exact),
                          ObjectSpec(objs[1].shape, objs[0].color, objs[1].count, objs[1].size, objs[1].exact))
        if all(allowed(o) for o in new):
            out.append(("swap_colors", with_objects(new)))
    if len(objs) >= 2 and objs[0].shape != objs[1].shape:
        new = list(objs)
        new[0], new[1] = (ObjectSpec(objs[1].shape, objs[0].color, objs[0].count, objs[0].size, objs[0].exact),
                          ObjectSpec(objs[0].shape, objs[1].color, objs[1].count, objs[1].size, objs[1].exact))
        if all(allowed(o) for o in new):
            out.append(("swap_shapes", with_objects(new)))
    k = int(rng.integers(len(objs)))
    o = objs[k]
    if o.color is not None:
        colors = [c for c in COLORS if allowed(ObjectSpec(o.shape, c))]
        color = _other(rng, colors, [x.color for x in objs if x.color])
        if color:
            new = list(objs)
            new[k] = ObjectSpec(o.shape, color, o.count, o.size, o.exact)
            out.append(("replace_color", with_objects(new)))
    shape = _other(rng, [sh for sh in SHAPES if allowed(ObjectSpec(sh, o.color))], [x.shape for x in objs])
    if shape:
        new = list(objs)
        new[k] = ObjectSpec(shape, o.color, o.count, o.size, o.exact)
        out.append(("replace_shape", with_objects(new)))
    if spec.relation is not None:
        i, name, j = spec.relation
        out.append(("opposite_relation", with_objects(objs, (i, OPPOSITE_RELATION[name], j))))
        perp = _PERPENDICULAR[name][int(rng.integers(2))]
        out.append(("perpendicular_relation", with_objects(objs, (i, perp, j))))
    for idx, req in enumerate(objs):
        if req.count >= 2 or req.exact:
            for name, delta in (("count_plus", 1), ("count_minus", -1)):
                n = req.count + delta
                if 1 <= n <= 3:
                    new = list(objs)
                    new[idx] = ObjectSpec(req.shape, req.color, n, req.size, exact=True)
                    out.append((name, with_objects(new)))
        if req.size is not None:
            new = list(objs)
            new[idx] = ObjectSpec(req.shape, req.color, req.count, "small" if req.size == "large" else "large", req.exact)
            out.append(("other_size", with_objects(new)))
    return out


def negatives_for(scene: Scene, caption: Caption | CaptionSpec, rng=0,
                  pairs: Iterable[tuple[str, str]] | None = None) -> list[tuple[str, Caption]]:
    """Perturbed captions (see :func:`perturbations`; ``pairs`` as there) that are false for ``scene``."""
    spec = caption.spec if isinstance(caption, Caption) else caption
    kind = caption.kind if isinstance(caption, Caption) else None
    return [
        (name, caption_text(neg, kind))
        for name, neg in perturbations(spec, rng, pairs)
        if not evaluate(scene.objects, neg).success
    ]
