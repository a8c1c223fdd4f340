"""Building a pair folder (:mod:`contrastive_diffusers.training.pairs`) from generated images.

The builder (:func:`build_pairs`) is an offline ConPair-style generator: for each prompt with
token groups and each of its minimal perturbations (:func:`~contrastive_diffusers.prompts.contrast_set`) it
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
swap_attributes     by the swapped words (those the two objects  2
                    do not share): ``color`` if a colour word
                    (the parser's: cyan, grey, silver too),
                    ``texture`` / ``shape`` if one of
                    :data:`TEXTURE_WORDS` / :data:`SHAPE_WORDS`,
                    else ``non-spatial``
swap_objects        as swap_attributes (a binding change), or    2
                    ``spatial`` when both objects carry the same
                    attributes (only their order changes: "a
                    cat to the left of a dog"; ``non-spatial``
                    with a negation: "a dog and no cat")
any, ≥ 3 groups     ``complex``                                  3
==================  ===========================================  =====

Candidate images are cached under ``<out>/candidates/`` keyed by (prompt, token groups,
method, seed, generation options, pipeline, scheduler and dtype): a re-run (after an interruption, or with another margin or scorer) reuses
them and only generates what is missing. ``pairs.jsonl`` is written last and atomically (the
folder is complete once it exists), with ``build.json`` recording every candidate's scores and
why each perturbation was kept or rejected; when no pair is kept there is no ``pairs.jsonl``
(an earlier one is removed: it belonged to other settings) and a warning says so.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..atomic_io import save_image_atomic, write_json_atomic, write_jsonl_atomic
from ..guidance.lexicon import COLORS, CONJUNCTIONS, DETERMINERS, MATERIALS, PREPOSITIONS
from ..guidance.parsing import DENYING_WORDS, tokenize
from ..models.names import DEFAULT_CLIP_MODEL
from ..prompts import contrast_set
from ..prompts.contrast import split_group
from ..runs import generate_image, generation_options
from ..training.pairs import PAIRS_FILE

SHAPE_WORDS = frozenset(
    "round square circular rectangular triangular oval spherical cubic cylindrical flat long short tall".split()
)
# The lexicon's materials (what the contrast captions treat as attributes) and their adjectives.
TEXTURE_WORDS = MATERIALS | frozenset("wooden metallic fluffy furry woolen woollen golden".split())


# Words that, right before an object, make a swap of two objects say which one is absent,
# not where they are ("a dog and no cat"; "a cat that isn't on a dog" stays a relation).
NEGATIONS = DENYING_WORDS | {"none"}
_PHRASE_ENDS = PREPOSITIONS | CONJUNCTIONS | frozenset(",.;:!?")


def _denies_an_object(prompt: str, groups) -> bool:
    """Whether a negation stands before a word of a group in its phrase ("no cat", "not a very
    big cat"; not "not on a dog", nor "a no parking sign")."""
    tokens = tokenize(prompt)
    group_words = {str(w).lower() for g in groups for w in g}
    for i, token in enumerate(tokens):
        if token not in NEGATIONS or (token == "no" and i and tokens[i - 1] in DETERMINERS):
            continue
        for word in tokens[i + 1 :]:
            if word in group_words:
                return True
            if word in _PHRASE_ENDS:
                break
    return False


def category_and_stage(source, perturbed) -> tuple[str, int]:
    """``(category, stage)`` of a perturbation (``PromptItem`` source and ``contrast_set``
    item); the mapping is in the module docstring."""
    kind = perturbed.metadata.get("perturbation")
    groups = source.token_groups or []
    if len(groups) >= 3:
        return "complex", 3
    if kind == "replace_object":
        return "shape", max(1, len(groups))
    if kind in ("swap_attributes", "swap_objects"):
        a, b = ({w.lower() for w in split_group(g)[0]} for g in groups)
        words = a ^ b  # what the swap moves: the attributes the two objects do not share
        if kind == "swap_objects" and not words:
            if _denies_an_object(source.prompt, groups):
                return "non-spatial", 2  # which object is there changes ("a dog and no cat")
            return "spatial", 2  # the same attributes: only the order changes ("a cat left of a dog")
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


def _key(prompt: str, method: str, seed: int, options: Mapping, source: list, groups=None) -> str:
    """Cache key of a candidate image: everything that decides its pixels, the model, its
    scheduler and dtype, the method's configuration and the token groups it guides included
    (another model or other groups must not reuse these images)."""
    text = json.dumps([prompt, method, seed, {k: options[k] for k in sorted(options)}, source, groups], default=str)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:20]


def _source(pipe, method) -> list:
    inner = getattr(pipe, "pipe", pipe)  # a wrapper around a pipeline (tests) names the inner one
    config = getattr(inner, "config", {}) or {}
    name = config.get("_name_or_path", "") if hasattr(config, "get") else ""
    scheduler = getattr(inner, "scheduler", None)
    sampler = None if scheduler is None else [type(scheduler).__name__, dict(getattr(scheduler, "config", {}))]
    return [type(inner).__name__, name, method.config() if hasattr(method, "config") else None, sampler,
            str(getattr(inner, "dtype", ""))]


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
    clip_model: str = DEFAULT_CLIP_MODEL,
) -> BuildReport:
    """Build a pair folder from ``PromptItem`` s with token groups (see the module docstring).

    ``pipe``: a pipeline (a guided one when ``methods`` holds guidance methods); ``methods``:
    ``{name: GuidanceMethod or None}`` (default ``{"none": None}``, plain generation; see
    ``runs.build_methods``); ``options``: generation options (``runs.generation_options``;
    default the pipeline's defaults with 50 steps); ``scorer``: a ``ClipScorer``, a callable
    ``(images, texts) -> scores``, or ``None`` to load ``clip_model`` as a ``ClipScorer``.
    """
    from PIL import Image

    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    seeds = list(dict.fromkeys(int(s) for s in seeds))
    if not seeds:
        raise ValueError("Give at least one seed.")
    methods = dict(methods) if methods is not None else {"none": None}
    options = dict(options) if options is not None else generation_options(pipe)
    if scorer is None:
        from .clip_score import ClipScorer

        scorer = ClipScorer.from_pretrained(clip_model)
    score = as_scorer(scorer)
    out = Path(out_dir)
    cache = out / "candidates"
    cache.mkdir(parents=True, exist_ok=True)
    counts = {"generated": 0, "reused": 0}

    def candidate(prompt: str, groups, method_name: str, seed: int) -> Path:
        method = methods[method_name]
        # plain images do not depend on the groups: one candidate serves every grouping of a prompt
        key_groups = groups if method is not None else None
        path = cache / f"{_key(prompt, method_name, seed, options, _source(pipe, method), key_groups)}.png"
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
    if rows:
        write_jsonl_atomic(out / PAIRS_FILE, rows)
    else:
        (out / PAIRS_FILE).unlink(missing_ok=True)
        warnings.warn(f"build_pairs kept no pair ({len(rejected)} rejected; build.json says why), so {out} has no "
                      f"{PAIRS_FILE}: lower the margin, add seeds or methods, or use another scorer.", stacklevel=2)
    return BuildReport(out, kept, rejected, counts["generated"], counts["reused"])
