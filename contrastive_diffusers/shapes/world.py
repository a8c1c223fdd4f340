"""ShapesWorld's vocabulary as data, and scenes: what objects there are and where.

A scene is 1-3 flat shapes on a plain background. Positions and sizes are fractions of the
image side (``x`` to the right, ``y`` downwards, both in ``[0, 1]``), so one scene renders
at any resolution. ``x, y`` is the centre of the object's bounding box and every shape fills
a square box of side ``SIZES[size]`` (a triangle points up, a diamond is a square on its
corner, a cross is a plus sign), which makes the box - and hence size and position - readable
back from the pixels.

Choices (documented for the oracle that reads images back):

- Background: dark grey ``(24, 24, 24)``. Every palette colour is far from it, so a pixel's
  colour can be un-mixed against the background (anti-aliased edges and blur are mixtures).
- Palette: eight saturated colours far apart in direction from the background (the closest
  pair, orange/yellow, is 16 degrees apart; a pure orange pixel is ~70 RGB units away from
  the yellow line).
- Shapes: circle, square, triangle, diamond, cross. Their silhouettes in the same box differ
  by at least ~20% of their area (circle/square is the closest pair), which the oracle
  separates at 32 px even for small objects; stars and hexagons were left out because at 8 px
  they are indistinguishable from circles.
- Sizes: small (0.25 of the side, 8 px at 32 px) and large (0.36, 11.5 px); three large
  objects still fit in one image with the gaps below.
- Texture: only ``"solid"``. Stripes would break an object into colour components that a
  32 px oracle could not reliably reassemble; the field exists so the format can grow.
- Relations: ``left of``, ``right of``, ``above``, ``below`` between box centres. A scene
  with a relation places the pair at least ``RELATION_MIN_SEPARATION`` apart along the
  relation's axis and at most ``RELATION_MAX_OFFSET`` apart across it, so the relation holds
  with a clear margin and the perpendicular relations clearly do not.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BACKGROUND",
    "COLORS",
    "EDGE_MARGIN",
    "MIN_GAP",
    "OPPOSITE_RELATION",
    "PALETTE",
    "PLURALS",
    "RELATIONS",
    "RELATION_MAX_OFFSET",
    "RELATION_MIN_SEPARATION",
    "RELATION_PHRASES",
    "SHAPES",
    "SIZES",
    "TEXTURES",
    "PlacementError",
    "Scene",
    "ShapeObject",
    "all_pairs",
    "layout_problems",
    "place_objects",
    "sample_scene",
]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")
PLURALS: dict[str, str] = {s: s + ("es" if s.endswith(("s", "x", "ch", "sh")) else "s") for s in SHAPES}

#: Colour name -> RGB. Chosen far apart in direction from the background (see module docstring).
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "orange": (250, 140, 20),
    "yellow": (240, 225, 40),
    "green": (40, 190, 60),
    "cyan": (40, 215, 225),
    "blue": (45, 85, 240),
    "purple": (165, 55, 225),
    "white": (240, 240, 240),
}
COLORS: tuple[str, ...] = tuple(PALETTE)
BACKGROUND: tuple[int, int, int] = (24, 24, 24)

#: Size name -> side of the object's square box as a fraction of the image side.
SIZES: dict[str, float] = {"small": 0.25, "large": 0.36}
TEXTURES: tuple[str, ...] = ("solid",)

RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
OPPOSITE_RELATION: dict[str, str] = {
    "left of": "right of", "right of": "left of", "above": "below", "below": "above",
}
#: How a relation reads in a caption ("a red circle to the left of a blue square").
RELATION_PHRASES: dict[str, str] = {
    "left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below",
}

#: Smallest gap between two objects' boxes (fraction of the side; 2.9 px at 32 px).
MIN_GAP = 0.09
#: Smallest gap between an object's box and the image border.
EDGE_MARGIN = 0.04
#: A related pair's centres: at least this far apart along the relation's axis ...
RELATION_MIN_SEPARATION = 0.3
#: ... and at most this far apart across it.
RELATION_MAX_OFFSET = 0.04


def _check_name(value, allowed: Sequence[str], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"Unknown {what} {value!r}; valid {what}s: {', '.join(allowed)}.")


@dataclass(frozen=True)
class ShapeObject:
    """One object: its shape, colour, size and texture names and box centre ``(x, y)``."""

    shape: str
    color: str
    size: str = "large"
    texture: str = "solid"
    x: float = 0.5
    y: float = 0.5

    def __post_init__(self):
        _check_name(self.shape, SHAPES, "shape")
        _check_name(self.color, COLORS, "colour")
        _check_name(self.size, tuple(SIZES), "size")
        _check_name(self.texture, TEXTURES, "texture")
        for name in ("x", "y"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"ShapeObject.{name} must be a number in [0, 1], got {value!r}.")

    @property
    def side(self) -> float:
        """Side of the object's square box, as a fraction of the image side."""
        return SIZES[self.size]

    def to_dict(self) -> dict:
        return {"shape": self.shape, "color": self.color, "size": self.size, "texture": self.texture,
                "x": float(self.x), "y": float(self.y)}

    @classmethod
    def from_dict(cls, data: dict) -> ShapeObject:
        return cls(data["shape"], data["color"], data.get("size", "large"), data.get("texture", "solid"),
                   float(data["x"]), float(data["y"]))


@dataclass(frozen=True)
class Scene:
    """Objects on a background; ``relation`` ``(i, name, j)`` says object ``i`` is ``name`` object ``j``."""

    objects: tuple[ShapeObject, ...]
    relation: tuple[int, str, int] | None = None
    background: tuple[int, int, int] = BACKGROUND

    def __post_init__(self):
        object.__setattr__(self, "objects", tuple(self.objects))
        object.__setattr__(self, "background", tuple(int(c) for c in self.background))
        if not self.objects:
            raise ValueError("A scene needs at least one object.")
        if not all(isinstance(o, ShapeObject) for o in self.objects):
            raise ValueError("Scene.objects must be ShapeObject instances.")
        if self.relation is not None:
            i, name, j = self.relation
            object.__setattr__(self, "relation", (int(i), name, int(j)))
            _check_name(name, RELATIONS, "relation")
            n = len(self.objects)
            if not (0 <= i < n and 0 <= j < n and i != j):
                raise ValueError(f"Scene.relation {self.relation!r} must name two different objects of {n}.")
        if len(self.background) != 3 or not all(0 <= c <= 255 for c in self.background):
            raise ValueError(f"Scene.background must be an RGB triple in 0..255, got {self.background!r}.")

    def to_dict(self) -> dict:
        return {
            "objects": [o.to_dict() for o in self.objects],
            "relation": list(self.relation) if self.relation is not None else None,
            "background": list(self.background),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Scene:
        relation = data.get("relation")
        return cls(
            tuple(ShapeObject.from_dict(o) for o in data["objects"]),
            tuple(relation) if relation is not None else None,
            tuple(data.get("background", BACKGROUND)),
        )


def all_pairs() -> list[tuple[str, str]]:
    """Every (colour, shape) combination of the vocabulary."""
    return [(c, s) for c in COLORS for s in SHAPES]


class PlacementError(RuntimeError):
    """No non-overlapping placement was found for the requested objects."""


def _separated(a: tuple[float, float, float], b: tuple[float, float, float], gap: float) -> bool:
    (xa, ya, sa), (xb, yb, sb) = a, b
    need = (sa + sb) / 2 + gap
    return abs(xa - xb) >= need or abs(ya - yb) >= need


def _axis(relation: str) -> tuple[int, int]:
    """(axis index 0=x 1=y, sign): subject coordinate minus object coordinate has this sign."""
    return {"left of": (0, -1), "right of": (0, 1), "above": (1, -1), "below": (1, 1)}[relation]


def layout_problems(scene: Scene) -> list[str]:
    """What is wrong with a scene's layout (empty when fine): boxes outside the image with its
    ``EDGE_MARGIN``, or closer than ``MIN_GAP`` to each other."""
    problems = []
    for k, o in enumerate(scene.objects):
        lo, hi = o.side / 2 + EDGE_MARGIN - 1e-6, 1 - o.side / 2 - EDGE_MARGIN + 1e-6
        if not (lo <= o.x <= hi and lo <= o.y <= hi):
            problems.append(f"object {k} ({o.color} {o.shape}) is too close to the border")
    for a in range(len(scene.objects)):
        for b in range(a + 1, len(scene.objects)):
            oa, ob = scene.objects[a], scene.objects[b]
            if not _separated((oa.x, oa.y, oa.side), (ob.x, ob.y, ob.side), MIN_GAP - 1e-6):
                problems.append(f"objects {a} and {b} are closer than the minimum gap")
    return problems


def place_objects(
    rng: np.random.Generator,
    sides: Sequence[float],
    relation: tuple[int, str, int] | None = None,
    attempts: int = 2000,
) -> list[tuple[float, float]]:
    """Box centres for boxes of the given sides: inside the image with ``EDGE_MARGIN``, pairwise
    at least ``MIN_GAP`` apart, and the related pair (if any) placed as the module docstring says.
    Rejection sampling driven by ``rng`` only, so deterministic for a seed."""
    n = len(sides)
    for _ in range(attempts):
        centres: list[tuple[float, float]] = [None] * n  # type: ignore[list-item]
        order = list(range(n))
        if relation is not None:
            i, name, j = relation
            axis, sign = _axis(name)
            si, sj = sides[i], sides[j]
            along = max(RELATION_MIN_SEPARATION, (si + sj) / 2 + MIN_GAP)
            # Sample the pair's midpoint along the axis and their offsets.
            extra = rng.uniform(0.0, 0.15)
            d = along + extra
            lo_i = si / 2 + EDGE_MARGIN
            lo_j = sj / 2 + EDGE_MARGIN
            # coordinate of subject c_i = c_j + sign * d; both inside [lo, 1 - lo].
            lo = max(lo_j, lo_i - sign * d)
            hi = min(1 - lo_j, 1 - lo_i - sign * d)
            if lo > hi:
                continue
            cj_axis = rng.uniform(lo, hi)
            ci_axis = cj_axis + sign * d
            lo_c = max(si, sj) / 2 + EDGE_MARGIN
            cj_cross = rng.uniform(lo_c, 1 - lo_c)
            ci_cross = float(np.clip(cj_cross + rng.uniform(-RELATION_MAX_OFFSET, RELATION_MAX_OFFSET),
                                     si / 2 + EDGE_MARGIN, 1 - si / 2 - EDGE_MARGIN))
            if axis == 0:
                centres[i], centres[j] = (ci_axis, ci_cross), (cj_axis, cj_cross)
            else:
                centres[i], centres[j] = (ci_cross, ci_axis), (cj_cross, cj_axis)
            order = [k for k in range(n) if k not in (i, j)]
        ok = True
        for k in order:
            s = sides[k]
            for _ in range(200):
                c = (rng.uniform(s / 2 + EDGE_MARGIN, 1 - s / 2 - EDGE_MARGIN),
                     rng.uniform(s / 2 + EDGE_MARGIN, 1 - s / 2 - EDGE_MARGIN))
                if all(_separated((*c, s), (*centres[m], sides[m]), MIN_GAP)
                       for m in range(n) if centres[m] is not None):
                    centres[k] = c
                    break
            else:
                ok = False
                break
        if ok and (relation is None or _separated((*centres[relation[0]], sides[relation[0]]),
                                                   (*centres[relation[2]], sides[relation[2]]), MIN_GAP)):
            return [(round(float(x), 4), round(float(y), 4)) for x, y in centres]
    raise PlacementError(
        f"Could not place {n} objects of sides {list(sides)} without overlap"
        + (f" with relation {relation}" if relation else "") + "; use fewer or smaller objects."
    )


def sample_scene(
    rng: np.random.Generator | int,
    n_objects: int | None = None,
    pairs: Iterable[tuple[str, str]] | None = None,
    relation: bool | None = None,
    sizes: Sequence[str] | None = None,
) -> Scene:
    """A random scene: ``n_objects`` (default 1-3) objects with distinct (colour, shape) pairs
    drawn from ``pairs`` (default :func:`all_pairs`; pass ``training_pairs()`` to keep the
    held-out combinations out), sizes from ``sizes`` (default both), and - with ``relation``
    (default: at random when there are two or more objects) - a relation between the first two.
    ``rng`` is a numpy Generator or a seed; the same seed gives the same scene."""
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    pool = list(pairs) if pairs is not None else all_pairs()
    for color, shape in pool:
        _check_name(color, COLORS, "colour")
        _check_name(shape, SHAPES, "shape")
    if n_objects is None:
        n_objects = int(rng.integers(1, 4))
    if not 1 <= n_objects <= min(3, len(pool)):
        raise ValueError(f"n_objects must be between 1 and {min(3, len(pool))}, got {n_objects}.")
    size_names = list(sizes) if sizes is not None else list(SIZES)
    picks = rng.choice(len(pool), size=n_objects, replace=False)
    chosen = [pool[int(k)] for k in picks]
    sizes_drawn = [size_names[int(rng.integers(len(size_names)))] for _ in range(n_objects)]
    if relation is None:
        relation = n_objects >= 2 and bool(rng.integers(2))
    if relation and n_objects < 2:
        raise ValueError("A relation needs at least two objects.")
    rel = (0, RELATIONS[int(rng.integers(len(RELATIONS)))], 1) if relation else None
    centres = place_objects(rng, [SIZES[s] for s in sizes_drawn], rel)
    objects = tuple(
        ShapeObject(shape, color, size, "solid", x, y)
        for (color, shape), size, (x, y) in zip(chosen, sizes_drawn, centres)
    )
    return Scene(objects, rel)
