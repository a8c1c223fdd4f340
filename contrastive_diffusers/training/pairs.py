"""Positive / hard-negative image pairs for contrastive fine-tuning (EvoGen): the pair folder
format and its dataset.

Folder format::

    pairs/
      pairs.jsonl      one JSON object per line:
                       {"caption": "a red circle", "positive": "images/00000_pos.png",
                        "negative": "images/00000_neg.png", "category": "color", "stage": 1}
      images/...       (paths are relative to the folder; absolute paths are accepted)

``category`` is one of :data:`CATEGORIES`; ``stage`` an integer ≥ 1 (the curriculum runs the
stages in increasing order). The positive matches the caption, the negative is a minimal change
that does not. :func:`load_pairs` validates everything (and decodes every image once) before a
model is loaded; each error names the file, the line and the fix.

Pair folders come from :func:`contrastive_diffusers.eval.build_pairs` (generated and
CLIP-checked pairs) or :func:`contrastive_diffusers.shapes.export.export_evogen` (ShapesWorld).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .data import (
    DataError,
    DataStream,
    _check_image,
    crop_origin,
    jsonl_rows,
    mix_seed,
    open_short_side,
    open_squashed,
    to_pixels,
)

PAIRS_FILE = "pairs.jsonl"
CATEGORIES = ("color", "shape", "texture", "counting", "spatial", "non-spatial", "scene", "complex")


@dataclass(frozen=True)
class Pair:
    caption: str
    positive: Path
    negative: Path
    category: str
    stage: int
    line: int


def _resolve(folder: Path, value, where: str, key: str) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f'{where}: "{key}" must be an image path (relative to {folder}), got {value!r}.')
    path = Path(value)
    path = path if path.is_absolute() else folder / path
    if not path.is_file():
        raise DataError(f'{where}: the {key} image {path} does not exist; fix the path or add the image.')
    try:
        _check_image(path)
    except DataError as err:
        raise DataError(f"{where}: {err}") from None
    return path


def load_pairs(folder) -> list[Pair]:
    """Read and validate a pair folder (see the module docstring)."""
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"The pair folder {folder} does not exist; pass a folder with {PAIRS_FILE} as --train_data_dir.")
    if not folder.is_dir():
        raise DataError(f"--train_data_dir {folder} is a file; pass the folder that holds {PAIRS_FILE}.")
    path = folder / PAIRS_FILE
    if not path.is_file():
        raise DataError(
            f"{folder} has no {PAIRS_FILE}; write one JSON object per line with caption, positive, negative, "
            "category and stage (e.g. `python -m contrastive_diffusers.shapes.export evogen DIR`)."
        )
    pairs = []
    for number, where, row in jsonl_rows(path):
        missing = [k for k in ("caption", "positive", "negative", "category", "stage") if not isinstance(row, dict) or k not in row]
        if missing:
            raise DataError(
                f"{where}: missing {', '.join(missing)}; each line needs "
                '{"caption", "positive", "negative", "category", "stage"}.'
            )
        caption = row["caption"]
        if not isinstance(caption, str) or not caption.strip():
            raise DataError(f'{where}: "caption" must be a non-empty string, got {caption!r}.')
        if row["category"] not in CATEGORIES:
            raise DataError(f'{where}: unknown category {row["category"]!r}; use one of {", ".join(CATEGORIES)}.')
        stage = row["stage"]
        if isinstance(stage, bool) or not isinstance(stage, int) or stage < 1:
            raise DataError(f'{where}: "stage" must be an integer >= 1 (1, 2, 3, ...), got {stage!r}.')
        positive = _resolve(folder, row["positive"], where, "positive")
        negative = _resolve(folder, row["negative"], where, "negative")
        pairs.append(Pair(caption.strip(), positive, negative, row["category"], stage, number))
    if not pairs:
        raise DataError(f"{path} has no pairs; add at least one line.")
    return pairs


def _pixels(image, left: int, top: int, size: int) -> torch.Tensor:
    return to_pixels(image.crop((left, top, left + size, top + size)))


class PairImages:
    """Positive and negative resized and cropped IDENTICALLY (one crop drawn per stream
    position); never flipped, since a flip turns "left of" into "right of"."""

    def __init__(self, pairs: Sequence[Pair], resolution: int, center_crop: bool = False, squash: bool = False):
        if not pairs:
            raise ValueError("No pairs.")
        if resolution < 8 or resolution % 8:
            raise ValueError(f"--resolution must be a positive multiple of 8, got {resolution}.")
        self.pairs = list(pairs)
        self.resolution = resolution
        self.center_crop = center_crop
        self.squash = squash  # --image_fit squash: the whole image resized to the square

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int, seed: int, position: int) -> dict:
        rng = random.Random(mix_seed(seed, position, 0xDA7A))
        pair = self.pairs[index]
        if self.squash:
            original, positive, (top, left) = open_squashed(pair.positive, self.resolution, self.center_crop)
            _, negative, _ = open_squashed(pair.negative, self.resolution, self.center_crop)
        else:
            original, positive = open_short_side(pair.positive, self.resolution)
            _, negative = open_short_side(pair.negative, self.resolution)
            if negative.size != positive.size:
                negative = negative.resize(positive.size)
            left, top = crop_origin(positive, self.resolution, self.center_crop, rng)
        return {
            "pixel_values": _pixels(positive, left, top, self.resolution),
            "negative_pixel_values": _pixels(negative, left, top, self.resolution),
            "caption": pair.caption,
            "original_size": (original.height, original.width),
            "crop_top_left": (top, left),
            "category": pair.category,
            "stage": pair.stage,
        }

    def batch(self, stream: DataStream, positions: list[int], seed: int) -> dict:
        items = [self.load(stream.example_at(p), seed, p) for p in positions]
        return {
            "pixel_values": torch.stack([i["pixel_values"] for i in items]),
            "negative_pixel_values": torch.stack([i["negative_pixel_values"] for i in items]),
            "captions": [i["caption"] for i in items],
            "original_sizes": [i["original_size"] for i in items],
            "crop_top_lefts": [i["crop_top_left"] for i in items],
            "categories": [i["category"] for i in items],
            "stages": [i["stage"] for i in items],
            "positions": list(positions),
        }
