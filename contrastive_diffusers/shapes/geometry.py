"""The shapes' silhouettes, shared by the renderer (to draw them) and the oracle (to compare).

Every shape is defined on its box's normalised coordinates ``u`` (right) and ``v`` (down),
both in ``[-1, 1]``, and touches all four sides of the box.
"""

from __future__ import annotations

import numpy as np

from .world import SHAPES

__all__ = ["CROSS_ARM", "coverage", "inside"]

#: Half-width of the cross's arms in box coordinates (arm width = 0.36 of the box side).
CROSS_ARM = 0.36


def inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean array: which points ``(u, v)`` of the box lie inside the shape."""
    box = (np.abs(u) <= 1) & (np.abs(v) <= 1)
    if shape == "circle":
        return u * u + v * v <= 1
    if shape == "square":
        return box
    if shape == "triangle":  # apex at the top centre, base along the bottom
        return box & (np.abs(u) <= (v + 1) / 2)
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1
    if shape == "cross":
        return box & ((np.abs(u) <= CROSS_ARM) | (np.abs(v) <= CROSS_ARM))
    raise ValueError(f"Unknown shape {shape!r}; valid shapes: {', '.join(SHAPES)}.")


def coverage(shape: str, width: int, height: int, supersample: int = 4) -> np.ndarray:
    """Fraction of each pixel of a ``height x width`` grid covered by the shape stretched to the
    whole grid (``supersample`` x ``supersample`` samples per pixel)."""
    k = supersample
    u = (np.arange(width * k) + 0.5) / (width * k) * 2 - 1
    v = (np.arange(height * k) + 0.5) / (height * k) * 2 - 1
    mask = inside(shape, u[None, :], v[:, None]).astype(np.float32)
    return mask.reshape(height, k, width, k).mean(axis=(1, 3))
