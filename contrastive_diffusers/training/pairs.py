"""Positive / hard-negative image pairs for contrastive fine-tuning (EvoGen), and their builder.

Folder format (what :func:`contrastive_diffusers.shapes.export.export_evogen` writes)::

    pairs/
      pairs.jsonl      one JSON object per line:
                       {"caption": "a red circle", "positive": "images/00000_pos.png",
                        "negative": "images/00000_neg.png", "category": "color", "stage": 1}
      images/...       (paths are relative to the folder; absolute paths are accepted)

``category`` is one of :data:`CATEGORIES`; ``stage`` an integer ≥ 1 (the curriculum runs the
stages in increasing order). The positive matches the caption, the negative is a minimal change
that does not. :func:`load_pairs` validates everything (and decodes every image once) before a
model is loaded; each error names the file, the line and the fix.

The builder (:func:`build_pairs`) is an offline ConPair-style generator: for each prompt with
token groups and each of its minimal perturbations (:func:`eval.prompts.contrast_set`) it
generates candidates of the prompt and of the perturbed prompt with the given pipelines /
guidance methods and seeds, scores every candidate against both texts, and keeps a pair when

- the positive (generated from the prompt) scores higher on the prompt than on the perturbed
  prompt by more than ``margin``, and
- the negative (generated from the perturbed prompt) scores higher on the perturbed prompt than
  on the prompt by more than ``margin``.

Category and stage come from the perturbation (:func:`category_and_stage`); the stage from
the number of objects of the prompt (1: single-object attributes, 2: two-object binding and
relations, 3: complex scenes with three or more), the category from what changed:

==================  ===========================================  =====
perturbation        category                                     stage
==================  ===========================================  =====
replace_object      ``shape`` (the object's identity changes)    1 or 2
swap_attributes     by the swapped words: ``color`` if a colour   2
                    word, ``texture`` / ``shape`` if one of
                    :data:`TEXTURE_WORDS` / :data:`SHAPE_WORDS`,
                    else ``non-spatial``
swap_objects        as swap_attributes (a binding change)        2
any, ≥ 3 groups     ``complex``                                  3
==================  ===========================================  =====

Candidate images are cached under ``<out>/candidates/`` keyed by (prompt, method, seed,
generation options): a re-run (after an interruption, or with another margin or scorer) reuses
them and only generates what is missing. ``pairs.jsonl`` is written last and atomically (the
folder is complete once it exists), with ``build.json`` recording every candidate's scores and
why each perturbation was kept or rejected.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .data import DataError, DataStream, _check_image, crop_origin, jsonl_rows, mix_seed, open_short_side, to_pixels

PAIRS_FILE = "pairs.jsonl"
CATEGORIES = ("color", "shape", "texture", "counting", "spatial", "non-spatial", "scene", "complex")
SHAPE_WORDS = frozenset(
    "round square circular rectangular triangular oval spherical cubic cylindrical flat long short tall".split()
)
TEXTURE_WORDS = frozenset(
    "wooden metallic metal glass plastic leather fabric fluffy furry rubber stone ceramic paper silk woolen "
    "velvet marble golden silver".split()
)


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

    def __init__(self, pairs: Sequence[Pair], resolution: int, center_crop: bool = False):
        if not pairs:
            raise ValueError("No pairs.")
        if resolution < 8 or resolution % 8:
            raise ValueError(f"--resolution must be a positive multiple of 8, got {resolution}.")
        self.pairs = list(pairs)
        self.resolution = resolution
        self.center_crop = center_crop

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int, seed: int, position: int) -> dict:
        rng = random.Random(mix_seed(seed, position, 0xDA7A))
        pair = self.pairs[index]
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


# ---------------------------------------------------------------------------------- builder
def category_and_stage(source, perturbed) -> tuple[str, int]:
    """``(category, stage)`` of a perturbation (``PromptItem`` source and ``contrast_set``
    item); the mapping is in the module docstring."""
    from ..eval.prompts import COLORS

    kind = perturbed.metadata.get("perturbation")
    groups = source.token_groups or []
    if len(groups) >= 3:
        return "complex", 3
    if kind == "replace_object":
        return "shape", max(1, len(groups))
    if kind in ("swap_attributes", "swap_objects"):
        words = {w.lower() for g in groups for w in g[:-1]}
        if words & set(COLORS):
            return "color", 2
        if words & TEXTURE_WORDS:
            return "texture", 2
        if words & SHAPE_WORDS:
            return "shape", 2
        return "non-spatial", 2
    raise ValueError(f"Unknown perturbation {kind!r} of {perturbed.id!r}; expected a contrast_set item.")


def as_scorer(scorer) -> Callable:
    """A ``(images, texts) -> (N,) float tensor`` callable: a ``ClipScorer`` (unclamped
    CLIPScore) or any such callable."""
    if hasattr(scorer, "clip_score"):
        return lambda images, texts: scorer.clip_score(images, list(texts), clamp=False)
    if callable(scorer):
        return scorer
    raise TypeError(f"scorer must be a ClipScorer or a callable (images, texts) -> scores, got {type(scorer).__name__}")


def _key(prompt: str, method: str, seed: int, options: Mapping, source: list) -> str:
    """Cache key of a candidate image: everything that decides its pixels, the model and the
    method's configuration included (another model must not reuse these images)."""
    text = json.dumps([prompt, method, seed, {k: options[k] for k in sorted(options)}, source], default=str)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:20]


def _source(pipe, method) -> list:
    inner = getattr(pipe, "pipe", pipe)  # a wrapper around a pipeline (tests) names the inner one
    config = getattr(inner, "config", {}) or {}
    name = config.get("_name_or_path", "") if hasattr(config, "get") else ""
    return [type(inner).__name__, name, method.config() if hasattr(method, "config") else None]


@dataclass
class BuildReport:
    folder: Path
    kept: list[dict]
    rejected: list[dict]
    generated: int
    reused: int


def build_pairs(
    items,
    pipe,
    out_dir,
    scorer=None,
    methods: Mapping[str, object] | None = None,
    seeds: Sequence[int] = (0, 1),
    options: Mapping | None = None,
    margin: float = 0.0,
    clip_model: str = "openai/clip-vit-base-patch16",
) -> BuildReport:
    """Build a pair folder from ``PromptItem`` s with token groups (see the module docstring).

    ``pipe``: a pipeline (a guided one when ``methods`` holds guidance methods); ``methods``:
    ``{name: GuidanceMethod or None}`` (default ``{"none": None}``, plain generation; see
    ``runs.build_methods``); ``options``: generation options (``runs.generation_options``;
    default the pipeline's defaults with 50 steps); ``scorer``: a ``ClipScorer``, a callable
    ``(images, texts) -> scores``, or ``None`` to load ``clip_model`` as a ``ClipScorer``.
    """
    from PIL import Image

    from ..atomic_io import save_image_atomic, write_json_atomic, write_jsonl_atomic
    from ..eval.prompts import contrast_set
    from ..runs import generate_image, generation_options

    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    seeds = list(dict.fromkeys(int(s) for s in seeds))
    if not seeds:
        raise ValueError("Give at least one seed.")
    methods = dict(methods) if methods is not None else {"none": None}
    options = dict(options) if options is not None else generation_options(pipe)
    if scorer is None:
        from ..eval.clip_score import ClipScorer

        scorer = ClipScorer.from_pretrained(clip_model)
    score = as_scorer(scorer)
    out = Path(out_dir)
    cache = out / "candidates"
    cache.mkdir(parents=True, exist_ok=True)
    counts = {"generated": 0, "reused": 0}

    def candidate(prompt: str, groups, method_name: str, seed: int) -> Path:
        path = cache / f"{_key(prompt, method_name, seed, options, _source(pipe, methods[method_name]))}.png"
        if path.exists():
            counts["reused"] += 1
            return path
        output = generate_image(pipe, prompt, seed, options, methods[method_name], token_groups=groups or "auto")
        save_image_atomic(output.images[0], path)
        counts["generated"] += 1
        return path

    kept, rejected = [], []
    for item in items:
        for variant in contrast_set(item):
            category, stage = category_and_stage(item, variant)
            texts = [item.prompt, variant.prompt]
            candidates = []  # (role, method, seed, path)
            for name in methods:
                for seed in seeds:
                    candidates.append(("positive", name, seed, candidate(item.prompt, item.token_groups, name, seed)))
                    candidates.append(
                        ("negative", name, seed, candidate(variant.prompt, variant.token_groups, name, seed))
                    )
            images = []
            for _, _, _, path in candidates:
                with Image.open(path) as image:
                    images.append(image.convert("RGB"))
            # every image against the prompt, then against the perturbed prompt
            scores = torch.as_tensor(score(images + images, [texts[0]] * len(images) + [texts[1]] * len(images)))
            scores = scores.detach().float().cpu().reshape(2, len(images))
            records, positives, negatives = [], {}, {}
            for k, (role, name, seed, path) in enumerate(candidates):
                s_prompt, s_perturbed = float(scores[0, k]), float(scores[1, k])
                gap = s_prompt - s_perturbed if role == "positive" else s_perturbed - s_prompt
                ok = gap > margin
                records.append(
                    {"role": role, "method": name, "seed": seed, "image": path.relative_to(out).as_posix(),
                     "score_prompt": s_prompt, "score_perturbed": s_perturbed, "gap": gap, "valid": ok}
                )
                if ok:
                    (positives if role == "positive" else negatives)[(name, seed)] = (gap, path)
            entry = {"id": variant.id, "caption": item.prompt, "perturbed": variant.prompt,
                     "perturbation": variant.metadata.get("perturbation"), "category": category, "stage": stage,
                     "candidates": records}
            if not positives or not negatives:
                entry["reason"] = (
                    "no positive candidate matches the prompt better than the perturbed prompt"
                    if not positives else "no negative candidate matches the perturbed prompt better than the prompt"
                )
                rejected.append(entry)
                continue
            # Prefer a positive and a negative from the same method and seed (the most similar
            # images); otherwise the best valid candidate of each role.
            shared = [k for k in positives if k in negatives]
            if shared:
                best = max(shared, key=lambda k: positives[k][0] + negatives[k][0])
                pos, neg = positives[best][1], negatives[best][1]
            else:
                pos = max(positives.values(), key=lambda v: v[0])[1]
                neg = max(negatives.values(), key=lambda v: v[0])[1]
            entry.update(positive=pos.relative_to(out).as_posix(), negative=neg.relative_to(out).as_posix())
            kept.append(entry)
    rows = [
        {"caption": e["caption"], "positive": e["positive"], "negative": e["negative"], "category": e["category"],
         "stage": e["stage"]}
        for e in kept
    ]
    write_json_atomic(
        out / "build.json",
        {"margin": margin, "seeds": seeds, "methods": list(methods), "options": {k: options[k] for k in options},
         "scorer": getattr(scorer, "name", type(scorer).__name__), "kept": kept, "rejected": rejected,
         "generated": counts["generated"], "reused": counts["reused"]},
    )
    write_jsonl_atomic(out / PAIRS_FILE, rows)
    return BuildReport(out, kept, rejected, counts["generated"], counts["reused"])
