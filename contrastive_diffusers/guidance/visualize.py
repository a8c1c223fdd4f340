"""Per-token cross-attention maps drawn as heatmaps over the generated image.

``overlay_heatmap`` blends one (h, w) map, upsampled bilinearly to the image size and
coloured with an inferno-like colormap, over an image. ``attention_grid`` lays the image
and one overlay per token out in a row with the token's label underneath each tile, and
``save_attention_heatmaps`` writes that grid as a PNG. No matplotlib: the colormap is a
piecewise-linear interpolation between anchor colours of matplotlib's ``inferno``.

Typical use with :class:`~contrastive_diffusers.guidance.attention.AttentionRecorder`,
whose ``aggregate()`` is ``(batch, h, w, tokens)``::

    maps = recorder.aggregate()[0][..., token_indices]          # (h, w, k)
    save_attention_heatmaps(image, maps, ["cat", "dog"], "out/attn.png")
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Sequence
from numbers import Real

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

__all__ = ["colorize", "overlay_heatmap", "attention_grid", "save_attention_heatmaps"]

# matplotlib's 'inferno' sampled at 0, 1/8, ..., 1 (black -> purple -> orange -> pale yellow);
# perceptually uniform and monotone in lightness, so low attention reads dark.
_ANCHORS = np.array(
    [
        [0, 0, 4],
        [31, 12, 72],
        [85, 15, 109],
        [136, 34, 106],
        [186, 54, 85],
        [227, 89, 51],
        [249, 140, 10],
        [249, 201, 50],
        [252, 255, 164],
    ],
    dtype=np.float64,
)
_POSITIONS = np.linspace(0.0, 1.0, len(_ANCHORS))

_MIN_DEFAULT_TILE = 128  # default tiles are at least this wide so labels fit
_LABEL_PAD = 3  # pixels around the label text


def _map_to_numpy(attention_map, what: str = "attention_map") -> np.ndarray:
    """A (h, w) float64 numpy array from a torch tensor or array-like; ValueError otherwise."""
    if isinstance(attention_map, torch.Tensor):
        array = attention_map.detach().to(device="cpu", dtype=torch.float32).numpy()
    else:
        array = np.asarray(attention_map)
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.floating)
        or np.issubdtype(array.dtype, np.integer)
        or array.dtype == bool
    ):
        raise ValueError(f"{what} must be numeric, got dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"{what} must be 2-D (h, w), got shape {tuple(array.shape)}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{what} must be non-empty, got shape {tuple(array.shape)}")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} contains NaN or infinite values")
    return array


def colorize(values: np.ndarray) -> np.ndarray:
    """Colour a (h, w) map with an inferno-like colormap: (h, w, 3) uint8.

    The map is min-max normalised first, so its minimum is the darkest colour and its
    maximum the brightest; a constant map is all the darkest colour. NaN and infinite
    values raise ValueError.
    """
    array = _map_to_numpy(values, "values")
    low, high = float(array.min()), float(array.max())
    span = high - low
    if span > 0 and math.isfinite(span):
        normed = (array - low) / span
    else:  # constant map (or a span that overflows): lowest colour, no NaN from 0/0
        normed = np.zeros_like(array)
    normed = np.clip(normed, 0.0, 1.0)
    rgb = np.stack(
        [np.interp(normed, _POSITIONS, _ANCHORS[:, c]) for c in range(3)], axis=-1
    )
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _image_to_rgb(image) -> Image.Image:
    """An RGB PIL image from a PIL image or an (H, W, 3) array (uint8, or float in [0, 1])."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise ValueError(
            f"image must be a PIL image or an (H, W, 3) numpy array, got {type(image).__name__}"
        )
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image array must have shape (H, W, 3), got {tuple(image.shape)}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image array must be non-empty, got shape {tuple(image.shape)}")
    if image.dtype == np.uint8:
        pixels = image
    elif np.issubdtype(image.dtype, np.floating):
        as_float = image.astype(np.float64)
        if not np.all(np.isfinite(as_float)):
            raise ValueError("image array contains NaN or infinite values")
        low, high = float(as_float.min()), float(as_float.max())
        if low < -1e-3 or high > 1.0 + 1e-3:
            raise ValueError(
                f"float image values must be in [0, 1], got range [{low:.4g}, {high:.4g}]"
            )
        pixels = np.rint(np.clip(as_float, 0.0, 1.0) * 255.0).astype(np.uint8)
    elif np.issubdtype(image.dtype, np.integer):
        low, high = int(image.min()), int(image.max())
        if low < 0 or high > 255:
            raise ValueError(
                f"integer image values must be in [0, 255], got range [{low}, {high}]"
            )
        pixels = image.astype(np.uint8)
    else:
        raise ValueError(f"image array must be uint8 or float, got dtype {image.dtype}")
    return Image.fromarray(np.ascontiguousarray(pixels))


def _check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, Real):
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    alpha = float(alpha)
    if not (0.0 <= alpha <= 1.0):  # also rejects NaN
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return alpha


def _upsample(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinearly resize a float (h, w) map to ``size`` = (width, height)."""
    if (array.shape[1], array.shape[0]) == size:
        return array
    resized = Image.fromarray(array.astype(np.float32)).resize(
        size, resample=Image.Resampling.BILINEAR
    )
    return np.asarray(resized, dtype=np.float64)


def overlay_heatmap(image, attention_map, alpha: float = 0.5) -> Image.Image:
    """Blend a colorized attention map over ``image``; returns an RGB image of the image's size.

    ``image``: PIL image, or (H, W, 3) numpy array (uint8, or float in [0, 1]).
    ``attention_map``: (h, w) torch tensor or numpy array of any float dtype (float16
    included); it is upsampled bilinearly to (H, W), min-max normalised and coloured.
    ``alpha`` is the heatmap's weight: 0 gives the image's pixels unchanged, 1 the pure
    heatmap colours.
    """
    alpha = _check_alpha(alpha)
    rgb = _image_to_rgb(image)
    array = _map_to_numpy(attention_map)
    heat = colorize(_upsample(array, rgb.size))
    if alpha == 0.0:
        return rgb.copy()
    if alpha == 1.0:
        return Image.fromarray(heat)
    base = np.asarray(rgb, dtype=np.float32)
    blended = (1.0 - alpha) * base + alpha * heat.astype(np.float32)
    return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8))


def _split_maps(maps) -> list[np.ndarray]:
    """k (h, w) float maps from an (h, w, k) tensor/array or a list of k (h, w) maps."""
    if isinstance(maps, (list, tuple)):
        return [_map_to_numpy(m, f"maps[{i}]") for i, m in enumerate(maps)]
    if isinstance(maps, torch.Tensor):
        maps = maps.detach().to(device="cpu", dtype=torch.float32).numpy()
    array = np.asarray(maps)
    if array.ndim != 3:
        raise ValueError(
            "maps must be an (h, w, k) tensor/array or a list of k (h, w) maps, got shape "
            f"{tuple(array.shape)} (for a single map pass [map]; for a recorder's "
            "(batch, h, w, tokens) aggregate pick one batch element)"
        )
    return [_map_to_numpy(array[:, :, i], f"maps[..., {i}]") for i in range(array.shape[2])]


def _load_font():
    return ImageFont.load_default()


def _text_width(draw: ImageDraw.ImageDraw, font, text: str) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    return right - left


def _drawable(draw: ImageDraw.ImageDraw, font, text: str) -> str:
    """``text``, with characters the font cannot encode replaced by '?'."""
    try:
        draw.textbbox((0, 0), text, font=font)
        return text
    except UnicodeEncodeError:  # the bitmap fallback font is latin-1 only
        return text.encode("latin-1", "replace").decode("latin-1")


def _fit_label(draw: ImageDraw.ImageDraw, font, text: str, max_width: int) -> str:
    """``text`` shortened with a trailing '...' until it is at most ``max_width`` wide."""
    text = _drawable(draw, font, text)
    if _text_width(draw, font, text) <= max_width:
        return text
    for end in range(len(text) - 1, -1, -1):
        candidate = text[:end].rstrip() + "..."
        if _text_width(draw, font, candidate) <= max_width:
            return candidate
    return ""


def _tile_dims(image: Image.Image, tile_size: int | None) -> tuple[int, int]:
    """(width, height) of each tile: ``tile_size`` wide (default: the image width, at least
    128), height following the image's aspect ratio."""
    if tile_size is None:
        width = max(image.width, _MIN_DEFAULT_TILE)
    else:
        if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 1:
            raise ValueError(f"tile_size must be a positive int or None, got {tile_size!r}")
        width = tile_size
    height = max(1, round(width * image.height / image.width))
    return width, height


def attention_grid(
    image,
    maps,
    labels: list[str],
    alpha: float = 0.5,
    tile_size: int | None = None,
    include_image: bool = True,
) -> Image.Image:
    """One row of tiles: the image, then the image overlaid with each map, labelled underneath.
    ``include_image=False`` leaves out the plain image tile (where the image is shown beside
    the strip anyway, as in the benchmark report).

    ``maps``: an (h, w, k) tensor/array or a list of k (h, w) maps; ``labels``: k strings
    (e.g. the tokens), drawn under the overlay tiles with PIL's default font (the image tile
    is labelled "image"). Each tile is ``tile_size`` pixels wide (default: the image width,
    but at least 128 so labels fit) with the image's aspect ratio, so the grid is
    ``(k + 1) * tile_size`` wide (``k * tile_size`` without the image tile). Mismatched map
    and label counts raise ValueError.
    """
    alpha = _check_alpha(alpha)
    rgb = _image_to_rgb(image)
    arrays = _split_maps(maps)
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise ValueError(f"labels must be a list of strings, got {type(labels).__name__}")
    labels = [str(label) for label in labels]
    if len(arrays) == 0:
        raise ValueError("maps is empty: need at least one attention map")
    if len(labels) != len(arrays):
        raise ValueError(f"got {len(arrays)} maps but {len(labels)} labels; they must match")

    tile_w, tile_h = _tile_dims(rgb, tile_size)
    base = rgb if rgb.size == (tile_w, tile_h) else rgb.resize(
        (tile_w, tile_h), resample=Image.Resampling.BICUBIC
    )
    tiles = [overlay_heatmap(base, array, alpha) for array in arrays]
    texts = list(labels)
    if include_image:
        tiles, texts = [base, *tiles], ["image", *texts]

    font = _load_font()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    _, top, _, bottom = measure.textbbox((0, 0), "Ag|", font=font)
    text_h = bottom - top
    strip_h = text_h + 2 * _LABEL_PAD

    grid = Image.new("RGB", (tile_w * len(tiles), tile_h + strip_h), color=(255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for i, (tile, text) in enumerate(zip(tiles, texts)):
        x0 = i * tile_w
        grid.paste(tile, (x0, 0))
        text = _fit_label(draw, font, text, tile_w - 2 * _LABEL_PAD)
        if not text:
            continue
        x = x0 + (tile_w - _text_width(draw, font, text)) // 2
        draw.text((x, tile_h + _LABEL_PAD - top), text, fill=(0, 0, 0), font=font)
    return grid


def save_attention_heatmaps(image, maps, labels, path, alpha: float = 0.5, include_image: bool = True) -> pathlib.Path:
    """Write :func:`attention_grid` as a PNG to ``path`` (parent folders are created);
    returns the path."""
    grid = attention_grid(image, maps, labels, alpha=alpha, include_image=include_image)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, format="PNG")
    return path


def word_maps(maps, groups) -> tuple[list, list[str]]:
    """One ``(h, w)`` map per group word (the sum of its pieces' maps) and the words as labels.

    ``maps``: one image's ``(h, w, tokens)`` maps; ``groups``: its :class:`TokenGroup` list.
    """
    tiles, labels = [], []
    for group in groups:
        for word, positions in zip(group.words, group.word_positions):
            tiles.append(maps[..., list(positions)].sum(-1))
            labels.append(word)
    return tiles, labels


def save_output_heatmaps(output, path, image_index: int = 0, step: int | None = None, alpha: float = 0.5,
                         include_image: bool = True):
    """Heatmaps of one image of a guided call made with ``return_attention_maps=True``: one
    tile per group word, from guided step ``step`` (default: the last guided step), after a
    tile of the image itself unless ``include_image=False``."""
    if not output.attention_maps:
        raise ValueError(
            "The output holds no attention maps: only guided steps record them. Call the pipeline with a guidance "
            "method and return_attention_maps=True.")
    step = max(output.attention_maps) if step is None else step
    if step not in output.attention_maps:
        raise ValueError(f"Step {step} was not guided; guided steps: {sorted(output.attention_maps)}.")
    maps = output.attention_maps[step]
    if not 0 <= image_index < maps.shape[0]:
        raise ValueError(f"image_index {image_index} is out of range for {maps.shape[0]} images.")
    per_prompt = maps.shape[0] // len(output.token_groups)
    tiles, labels = word_maps(maps[image_index], output.token_groups[image_index // per_prompt])
    return save_attention_heatmaps(output.images[image_index], tiles, labels, path, alpha, include_image)
