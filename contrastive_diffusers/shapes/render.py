"""Scene -> RGB image, deterministically (no randomness at all: a scene is drawn one way).

Each pixel is sampled ``supersample`` x ``supersample`` times (4 x 4 by default) and the
object's coverage blended over the background, which anti-aliases the edges; edge pixels are
mixtures of one object colour and the background only, because objects never touch
(``world.MIN_GAP``), which is what the oracle's colour un-mixing relies on.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .geometry import inside
from .world import PALETTE, Scene

__all__ = ["IMAGE_SIZES", "render", "render_array"]

IMAGE_SIZES = (32, 64)


def render_array(scene: Scene, size: int = 32, supersample: int = 4) -> np.ndarray:
    """The scene as a ``size x size x 3`` float array in 0..255."""
    if not isinstance(size, int) or size < 16:
        raise ValueError(f"Image size must be an integer of at least 16 pixels, got {size!r}.")
    if not isinstance(supersample, int) or supersample < 1:
        raise ValueError(f"supersample must be a positive integer, got {supersample!r}.")
    image = np.empty((size, size, 3), dtype=np.float64)
    image[:] = np.asarray(scene.background, dtype=np.float64)
    k = supersample
    for obj in scene.objects:
        half = obj.side / 2
        # Pixel rows/columns the box touches.
        x0, x1 = max(int(np.floor((obj.x - half) * size)), 0), min(int(np.ceil((obj.x + half) * size)), size)
        y0, y1 = max(int(np.floor((obj.y - half) * size)), 0), min(int(np.ceil((obj.y + half) * size)), size)
        if x1 <= x0 or y1 <= y0:
            continue
        xs = (x0 + (np.arange((x1 - x0) * k) + 0.5) / k) / size
        ys = (y0 + (np.arange((y1 - y0) * k) + 0.5) / k) / size
        u = (xs - obj.x) / half
        v = (ys - obj.y) / half
        cover = inside(obj.shape, u[None, :], v[:, None]).astype(np.float64)
        cover = cover.reshape(y1 - y0, k, x1 - x0, k).mean(axis=(1, 3))[..., None]
        patch = image[y0:y1, x0:x1]
        image[y0:y1, x0:x1] = patch * (1 - cover) + np.asarray(PALETTE[obj.color], dtype=np.float64) * cover
    return image


def render(scene: Scene, size: int = 32, supersample: int = 4) -> Image.Image:
    """The scene as a ``size x size`` RGB PIL image (32 or 64 px in this project; any size >= 16 works)."""
    array = np.clip(np.rint(render_array(scene, size, supersample)), 0, 255).astype(np.uint8)
    return Image.fromarray(array)
