"""What a caption requires, and the one rule that decides whether a set of objects satisfies it.

The same :func:`evaluate` judges a scene's true objects (ground truth, used to build negatives
that are really false) and the objects the oracle reads from an image, so the oracle's only
job is reading.

Rules (GenEval-style):

- Every required object (shape, and colour / size when given) is matched to its own object:
  one object never satisfies two requirements, so "a red circle and a blue square" needs a red
  circle *and* a blue square - a red square and a blue circle (colours swapped) fail.
- ``count``: at least ``count`` matching objects; with ``exact`` (counting captions, like
  GenEval's ``exclude`` rows) exactly ``count``.
- ``relation`` ``(i, name, j)``: some object matched to requirement ``i`` is ``name`` some
  object matched to requirement ``j``, box centres compared with ``RELATION_MARGIN`` of the
  image side ("left of": ``x_j - x_i >= margin``), on the named axis only: an object up and to
  the left of another is both "above" and "left of" it. GenEval compares centres too, with a
  margin of 0.1 times the boxes' summed size, and names a direction only when it carries more
  than half of the offset: at 45 degrees both hold there as well, at 70 degrees only "above"
  (:func:`~contrastive_diffusers.eval.judges.geneval_rules.relative_position`).
- Extra objects not named by the caption are allowed by default (GenEval allows them too);
  ``allow_extra=False`` forbids them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from .world import COLORS, PLURALS, RELATIONS, SHAPES, SIZES

__all__ = ["RELATION_MARGIN", "CaptionSpec", "Judgement", "ObjectSpec", "describe", "evaluate", "relation_holds"]

#: Centres must differ by at least this fraction of the image side for a relation to hold.
RELATION_MARGIN = 0.1


class _Object(Protocol):
    shape: str | None
    color: str | None
    size: str | None
    x: float
    y: float


@dataclass(frozen=True)
class ObjectSpec:
    """One required object: its shape, optional colour and size, and how many."""

    shape: str
    color: str | None = None
    count: int = 1
    size: str | None = None
    exact: bool = False

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise ValueError(f"Unknown shape {self.shape!r}; valid shapes: {', '.join(SHAPES)}.")
        if self.color is not None and self.color not in COLORS:
            raise ValueError(f"Unknown colour {self.color!r}; valid colours: {', '.join(COLORS)}.")
        if self.size is not None and self.size not in SIZES:
            raise ValueError(f"Unknown size {self.size!r}; valid sizes: {', '.join(SIZES)}.")
        if not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"ObjectSpec.count must be a positive integer, got {self.count!r}.")

    def matches(self, obj: _Object) -> bool:
        return (
            obj.shape == self.shape
            and (self.color is None or obj.color == self.color)
            and (self.size is None or obj.size == self.size)
        )

    def to_dict(self) -> dict:
        return {"shape": self.shape, "color": self.color, "count": self.count, "size": self.size,
                "exact": self.exact}

    @classmethod
    def from_dict(cls, data: dict) -> ObjectSpec:
        """The object of ``data`` (as :meth:`to_dict` writes it); ``ValueError`` for a key it does
        not know or a value of the wrong type: a dropped ``"colour"`` would let any colour pass."""
        _check_keys(data, _OBJECT_KEYS, "an object")
        if "shape" not in data:
            raise ValueError(f"The object {data!r} has no 'shape'; valid shapes: {', '.join(SHAPES)}.")
        count, exact = data.get("count", 1), data.get("exact", False)
        if not _is_int(count):
            raise ValueError(f"The object {data!r} has count {count!r}; give a whole number (1 when left out).")
        if not isinstance(exact, bool):
            raise ValueError(f"The object {data!r} has exact {exact!r}; give true or false (JSON), not a string.")
        return cls(data["shape"], data.get("color"), int(count), data.get("size"), exact)


@dataclass(frozen=True)
class CaptionSpec:
    """What must be true of an image: required objects and an optional relation between two of them."""

    objects: tuple[ObjectSpec, ...]
    relation: tuple[int, str, int] | None = None

    def __post_init__(self):
        object.__setattr__(self, "objects", tuple(self.objects))
        if not self.objects:
            raise ValueError("A caption spec needs at least one object.")
        if self.relation is not None:
            i, name, j = self.relation
            object.__setattr__(self, "relation", (int(i), name, int(j)))
            if name not in RELATIONS:
                raise ValueError(f"Unknown relation {name!r}; valid relations: {', '.join(RELATIONS)}.")
            n = len(self.objects)
            if not (0 <= i < n and 0 <= j < n and i != j):
                raise ValueError(f"relation {self.relation!r} must name two different objects of {n}.")
            if self.objects[i].count != 1 or self.objects[j].count != 1:
                raise ValueError("A relation can only relate objects with count 1.")

    def to_dict(self) -> dict:
        return {"objects": [o.to_dict() for o in self.objects],
                "relation": list(self.relation) if self.relation is not None else None}

    @classmethod
    def from_dict(cls, data: dict) -> CaptionSpec:
        """The spec of ``data`` (as :meth:`to_dict` writes it); ``ValueError`` for a key it does not
        know (a misspelt ``"relations"`` would drop the relation the oracle checks)."""
        _check_keys(data, _SPEC_KEYS, "a caption spec")
        objects = data.get("objects")
        if not isinstance(objects, (list, tuple)):
            raise ValueError(f"The caption spec {data!r} needs 'objects': a list of objects.")
        relation = data.get("relation")
        if relation is not None and not (isinstance(relation, (list, tuple)) and len(relation) == 3
                                         and _is_int(relation[0]) and _is_int(relation[2])):
            raise ValueError(
                f"The caption spec's relation {relation!r} must be [object index, relation, object index], "
                "e.g. [0, \"above\", 1]."
            )
        for obj in objects:
            if not isinstance(obj, dict):
                raise ValueError(f"The caption spec's object {obj!r} must be a dict such as "
                                 "{\"shape\": \"circle\", \"color\": \"red\"}.")
        return cls(tuple(ObjectSpec.from_dict(o) for o in objects),
                   tuple(relation) if relation is not None else None)


_OBJECT_KEYS = ("shape", "color", "count", "size", "exact")
_SPEC_KEYS = ("objects", "relation")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_keys(data, known: tuple, what: str) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"Expected {what} as a dict, got {type(data).__name__} {data!r}.")
    unknown = [key for key in data if key not in known]
    if unknown:
        raise ValueError(
            f"{what[0].upper()}{what[1:]} holds the unknown key(s) {', '.join(map(repr, unknown))} ({data!r}); "
            f"valid keys: {', '.join(known)}."
        )


@dataclass(frozen=True)
class Judgement:
    success: bool
    reasons: list[str]


def describe(item: ObjectSpec | _Object, count: int | None = None) -> str:
    """"red circle", "large blue square"; with ``count``: "2 red circles", "1 circle"."""
    words = [w for w in (getattr(item, "size", None), getattr(item, "color", None)) if w]
    noun = item.shape if item.shape is not None else "object"
    if count is not None and count != 1:
        noun = PLURALS.get(noun, noun + "s")
    return " ".join(([str(count)] if count is not None else []) + words + [noun])


def relation_holds(a: _Object, name: str, b: _Object, margin: float = RELATION_MARGIN) -> bool:
    """Whether ``a`` is ``name`` ``b`` by box centres with the margin."""
    if name == "left of":
        return b.x - a.x >= margin
    if name == "right of":
        return a.x - b.x >= margin
    if name == "above":
        return b.y - a.y >= margin
    if name == "below":
        return a.y - b.y >= margin
    raise ValueError(f"Unknown relation {name!r}; valid relations: {', '.join(RELATIONS)}.")


def _assign(slots: list[list[int]], used: set[int]) -> bool:
    """Whether every slot (a list of acceptable object indices) gets its own object (Kuhn)."""
    owner: dict[int, int] = {}

    def augment(s: int, seen: set[int]) -> bool:
        for o in slots[s]:
            if o in used or o in seen:
                continue
            seen.add(o)
            if o not in owner or augment(owner[o], seen):
                owner[o] = s
                return True
        return False

    return all(augment(s, set()) for s in range(len(slots)))


def evaluate(objects: Sequence[_Object], spec: CaptionSpec, allow_extra: bool = True,
             margin: float = RELATION_MARGIN) -> Judgement:
    """Judge ``objects`` (anything with ``shape, color, size, x, y``) against ``spec``; the
    reasons say what failed in words ("expected 1 red circle, found 0; saw: blue circle")."""
    objects = list(objects)
    reasons: list[str] = []
    seen = ", ".join(describe(o) for o in objects) or "nothing"
    candidates = [[k for k, o in enumerate(objects) if req.matches(o)] for req in spec.objects]
    for req, cands in zip(spec.objects, candidates):
        if len(cands) < req.count or (req.exact and len(cands) != req.count):
            exactly = "exactly " if req.exact else ""
            reasons.append(f"expected {exactly}{describe(req, req.count)}, found {len(cands)}; saw: {seen}")
    if reasons:
        return Judgement(False, reasons)
    slots = [cands for req, cands in zip(spec.objects, candidates) for _ in range(req.count)]
    if spec.relation is None:
        if not _assign(slots, set()):
            return Judgement(False, [f"the required objects cannot each get an object of their own; saw: {seen}"])
    else:
        i, name, j = spec.relation
        first = {idx: sum(r.count for r in spec.objects[:idx]) for idx in range(len(spec.objects))}
        rest = [s for k, s in enumerate(slots) if k not in (first[i], first[j])]
        ok = any(
            a != b and relation_holds(objects[a], name, objects[b], margin) and _assign(rest, {a, b})
            for a in candidates[i] for b in candidates[j]
        )
        if not ok:
            subject, obj = describe(spec.objects[i]), describe(spec.objects[j])
            return Judgement(False, [f"no {subject} is {name} a {obj} (margin {margin:g} of the image side); saw: {seen}"])
    if not allow_extra and len(objects) > len(slots):
        return Judgement(False, [f"{len(objects) - len(slots)} object(s) the caption does not name; saw: {seen}"])
    return Judgement(True, [])
