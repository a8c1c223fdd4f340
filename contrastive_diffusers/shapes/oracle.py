"""Read an image back into objects, and check a caption spec against them (GenEval-style).

Pipeline (pure numpy, no learned weights; every step can be inspected):

1. Background: the per-channel median of the image's one-pixel border (scenes keep objects
   off the border).
2. Colour un-mixing: a pixel ``p`` is modelled as ``bg + a * (C - bg)`` for each palette
   colour ``C``; ``a`` is the least-squares mixing weight and the residual the distance from
   that line. Of the colours with ``a >= 0.25`` and a residual of at most
   ``max(RESIDUAL_ABS, RESIDUAL_REL * a * |C - bg|)`` the smallest residual wins, and the
   pixel is foreground for it when its ``a >= 0.5``. This reads anti-aliased edges, blur (mixtures with the background), darker or lighter
   shades and moderate noise as the right colour, and leaves pixels of no palette colour out.
3. Connected components per colour (8-connectivity); components smaller than
   ``MIN_AREA_FRACTION`` of the image are noise and dropped.
4. Shape (:func:`fit_shape`): the object's soft silhouette (its un-mixing weights on the
   component and a ring of unassigned pixels around it) is compared with each shape's ideal
   silhouette fitted by moments - side from the mass, centre from the centroid, both kept by
   blur - and blurred by a few candidate amounts; the smallest L1 difference (relative to the
   mass) wins, and above ``MAX_SHAPE_ERROR`` the shape is unknown (``None``, matches no shape).
   Size: the fitted side against the midpoint of the two sizes. Position: the fitted box centre.
5. :func:`check` judges the objects with :func:`spec.evaluate` (GenEval rules: every object
   present, exact counts for counting captions, each colour on its own shape, relations by
   centres with a margin; extra objects allowed unless ``allow_extra=False``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .geometry import CROSS_ARM, inside
from .spec import CaptionSpec, evaluate
from .world import PALETTE, SHAPES, SIZES

__all__ = [
    "CANDIDATE_WEIGHT",
    "FILL",
    "MAX_SHAPE_ERROR",
    "MIN_AREA_FRACTION",
    "RESIDUAL_ABS",
    "RESIDUAL_REL",
    "DetectedObject",
    "OracleResult",
    "check",
    "connected_components",
    "detect",
    "estimate_background",
    "fit_shape",
    "segment",
]

RESIDUAL_ABS = 30.0
RESIDUAL_REL = 0.35
#: Mixing weight from which a colour competes for a pixel (it is foreground from 0.5). At 0.5
#: the oracle is the one before 2026-12-02, in which a colour competed only from the cut
#: (``benchmarks/oracle_sensitivity.py`` rescores evidence runs with it).
CANDIDATE_WEIGHT = 0.25
#: Components below this fraction of the image area are noise (10 px at 32 px; a small
#: triangle covers 32 px).
MIN_AREA_FRACTION = 0.01
#: A silhouette whose best fit differs from it by more than this (L1, relative to its mass)
#: has no shape.
MAX_SHAPE_ERROR = 0.6
#: Fraction of the box each shape covers.
FILL = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5, "diamond": 0.5,
        "cross": 1 - (1 - CROSS_ARM) ** 2}
_SIZE_THRESHOLD = sum(SIZES.values()) / len(SIZES)


@dataclass(frozen=True)
class DetectedObject:
    """An object read from an image: ``x, y`` box centre and ``side`` (larger box side) as
    fractions of the image side; ``bbox`` ``(x0, y0, x1, y1)`` in pixels, end-exclusive;
    ``shape`` is ``None`` when no silhouette fits (``shape_error`` is the best fit's error)."""

    shape: str | None
    color: str
    size: str
    x: float
    y: float
    side: float
    area: int
    bbox: tuple[int, int, int, int]
    shape_error: float

    def to_dict(self) -> dict:
        return {"shape": self.shape, "color": self.color, "size": self.size, "x": self.x, "y": self.y,
                "side": self.side, "area": self.area, "bbox": list(self.bbox), "shape_error": self.shape_error}


@dataclass(frozen=True)
class OracleResult:
    success: bool
    reasons: list[str] = field(default_factory=list)
    detected: list[DetectedObject] = field(default_factory=list)


def _as_array(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float64)
    raw = np.asarray(image)
    array = raw.astype(np.float64)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"Expected an RGB image (H x W x 3), got an array of shape {array.shape}.")
    if np.issubdtype(raw.dtype, np.floating) and 0 < array.max() <= 1.0:
        # diffusers' output_type="np" gives [0, 1]: read on the 0-255 scale, every pixel is background
        raise ValueError(
            "The image is a float array in [0, 1] (diffusers' output_type='np'); the oracle reads 0-255: pass "
            "(array * 255).round().astype('uint8'), or a PIL image."
        )
    return array


def estimate_background(array: np.ndarray) -> np.ndarray:
    """Per-channel median of the one-pixel border."""
    border = np.concatenate([array[0], array[-1], array[1:-1, 0], array[1:-1, -1]], axis=0)
    return np.median(border, axis=0)


def segment(array: np.ndarray, background: np.ndarray | None = None,
            candidate_weight: float = CANDIDATE_WEIGHT) -> tuple[np.ndarray, list[str]]:
    """Per-pixel palette index (``-1``: background or no palette colour) and the colour names.

    ``candidate_weight``: the mixing weight from which a colour competes for a pixel
    (:data:`CANDIDATE_WEIGHT`; at most 0.5, the foreground cut)."""
    if not 0.0 < candidate_weight <= 0.5:
        raise ValueError(f"candidate_weight must lie in (0, 0.5] (a pixel is foreground from 0.5), got {candidate_weight}.")
    array = _as_array(array)
    bg = estimate_background(array) if background is None else np.asarray(background, dtype=np.float64)
    names = [n for n, c in PALETTE.items() if np.linalg.norm(np.asarray(c) - bg) >= 60]
    diff = array - bg
    best = np.full(array.shape[:2], np.inf)
    labels = np.full(array.shape[:2], -1, dtype=np.int64)
    weight = np.zeros(array.shape[:2])
    for k, name in enumerate(names):
        d = np.asarray(PALETTE[name], dtype=np.float64) - bg
        norm = np.linalg.norm(d)
        a = diff @ d / (norm * norm)
        residual = np.linalg.norm(diff - np.clip(a, 0, None)[..., None] * d, axis=-1)
        # The colour whose line fits best wins before the 0.5 cut, not after: an edge pixel
        # 45% yellow would otherwise go to orange, whose longer line reaches 0.5 there.
        ok = (a >= candidate_weight) & (residual <= np.maximum(RESIDUAL_ABS, RESIDUAL_REL * a * norm)) & (residual < best)
        labels[ok] = k
        best[ok] = residual[ok]
        weight[ok] = a[ok]
    labels[weight < 0.5] = -1
    return labels, names


def connected_components(mask: np.ndarray) -> list[np.ndarray]:
    """8-connected components of a boolean mask, each as an ``(n, 2)`` array of (row, col)."""
    mask = np.asarray(mask, dtype=bool)
    seen = np.zeros_like(mask)
    h, w = mask.shape
    out = []
    for r0, c0 in zip(*np.nonzero(mask)):
        if seen[r0, c0]:
            continue
        seen[r0, c0] = True
        queue, pixels = deque([(r0, c0)]), []
        while queue:
            r, c = queue.popleft()
            pixels.append((r, c))
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    rr, cc = r + dr, c + dc
                    if 0 <= rr < h and 0 <= cc < w and mask[rr, cc] and not seen[rr, cc]:
                        seen[rr, cc] = True
                        queue.append((rr, cc))
        out.append(np.asarray(pixels, dtype=np.int64))
    return out


def _blur(array: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return array
    radius = max(1, int(np.ceil(3 * sigma)))
    t = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (t / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(array, radius)
    h, w = array.shape
    # Separable convolution with zero padding, as sums of shifted copies.
    rows = sum(kernel[i] * padded[i : i + h, :] for i in range(2 * radius + 1))
    return sum(kernel[i] * rows[:, i : i + w] for i in range(2 * radius + 1))


def _template(shape: str, shape_hw: tuple[int, int], cx: float, cy: float, side: float, k: int = 4) -> np.ndarray:
    """Pixel coverage of ``shape`` with box centre ``(cx, cy)`` and ``side`` (pixels) on a grid."""
    h, w = shape_hw
    xs = (np.arange(w * k) + 0.5) / k
    ys = (np.arange(h * k) + 0.5) / k
    half = max(side / 2, 1e-6)
    mask = inside(shape, ((xs - cx) / half)[None, :], ((ys - cy) / half)[:, None]).astype(np.float64)
    return mask.reshape(h, k, w, k).mean(axis=(1, 3))


def fit_shape(alpha: np.ndarray, blur_sigmas: tuple[float, ...] = (0.0, 0.7, 1.4)) -> dict:
    """Fit every shape to a soft silhouette (coverage in [0, 1] on a window around one object).

    Each shape's box is fitted by moments - side from the mass (``area = fill * side**2``),
    centre from the centroid (a triangle's centroid lies ``side / 6`` below its box centre) -
    so the fit is unaffected by blur, which keeps mass and centroid; the fitted silhouette,
    blurred by each of ``blur_sigmas`` (pixels), is compared with ``alpha`` by the L1
    difference relative to the mass. Returns ``{"shape", "error", "x", "y", "side", "errors"}``
    (pixel units within the window) for the best shape.
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    mass = float(alpha.sum())
    if mass <= 0:
        return {"shape": None, "error": float("inf"), "x": 0.0, "y": 0.0, "side": 0.0, "errors": {}}
    rows, cols = np.indices(alpha.shape)
    mx = float((alpha * (cols + 0.5)).sum() / mass)
    my = float((alpha * (rows + 0.5)).sum() / mass)
    fits = {}
    for shape in SHAPES:
        side = float(np.sqrt(mass / FILL[shape]))
        cy = my - side / 6 if shape == "triangle" else my
        template = _template(shape, alpha.shape, mx, cy, side)
        error = min(float(np.abs(_blur(template, s) - alpha).sum()) / mass for s in blur_sigmas)
        fits[shape] = (error, mx, cy, side)
    best = min(fits, key=lambda k: fits[k][0])
    error, x, y, side = fits[best]
    return {"shape": best, "error": error, "x": x, "y": y, "side": side,
            "errors": {k: round(v[0], 4) for k, v in fits.items()}}


def detect(image, background=None, candidate_weight: float = CANDIDATE_WEIGHT) -> list[DetectedObject]:
    """The objects in an image (PIL image or H x W x 3 array in 0..255), largest first
    (``candidate_weight``: see :func:`segment`)."""
    array = _as_array(image)
    h, w = array.shape[:2]
    bg = estimate_background(array) if background is None else np.asarray(background, dtype=np.float64)
    labels, names = segment(array, bg, candidate_weight)
    min_area = MIN_AREA_FRACTION * h * w
    scale = max(h, w) / 32
    ring = max(1, round(2 * scale))
    sigmas = tuple(s * scale for s in (0.0, 0.7, 1.4))
    found = []
    for k, name in enumerate(names):
        d = np.asarray(PALETTE[name], dtype=np.float64) - bg
        alpha_k = np.clip((array - bg) @ d / (d @ d), 0.0, 1.0)
        for pixels in connected_components(labels == k):
            if len(pixels) < min_area:
                continue
            r0, c0 = pixels.min(axis=0) - 2 * ring
            r1, c1 = pixels.max(axis=0) + 1 + 2 * ring
            r0, c0, r1, c1 = max(r0, 0), max(c0, 0), min(r1, h), min(c1, w)
            own = np.zeros((h, w), dtype=bool)
            own[pixels[:, 0], pixels[:, 1]] = True
            near = _dilate(own, ring) & (labels == -1)
            window = np.where((own | near)[r0:r1, c0:c1], alpha_k[r0:r1, c0:c1], 0.0)
            fit = fit_shape(window, sigmas)
            shape = fit["shape"] if fit["error"] <= MAX_SHAPE_ERROR else None
            side = fit["side"] / max(h, w)
            found.append(DetectedObject(
                shape, name, "large" if side >= _SIZE_THRESHOLD else "small",
                round(float(c0 + fit["x"]) / w, 4), round(float(r0 + fit["y"]) / h, 4), round(float(side), 4),
                len(pixels),
                (int(pixels[:, 1].min()), int(pixels[:, 0].min()), int(pixels[:, 1].max()) + 1, int(pixels[:, 0].max()) + 1),
                round(float(fit["error"]), 4),
            ))
    return sorted(found, key=lambda o: -o.area)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(radius):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


def check(image, spec: CaptionSpec | dict, allow_extra: bool = True,
          candidate_weight: float = CANDIDATE_WEIGHT) -> OracleResult:
    """Whether the image shows what ``spec`` (a :class:`CaptionSpec` or its dict) requires
    (``candidate_weight``: see :func:`segment`)."""
    if isinstance(spec, dict):
        spec = CaptionSpec.from_dict(spec)
    detected = detect(image, candidate_weight=candidate_weight)
    judgement = evaluate(detected, spec, allow_extra=allow_extra)
    return OracleResult(judgement.success, judgement.reasons, detected)
