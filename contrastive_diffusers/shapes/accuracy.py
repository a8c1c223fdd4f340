"""How often the oracle agrees with the ground truth, on clean and degraded renders.

For ``n`` random captions (kinds in turn), a scene that satisfies the caption is rendered,
optionally degraded (:func:`perturb`), and checked against the caption (a positive: must pass)
and against every perturbation of the caption that is false for the scene (negatives: must
fail). Run ``python -m contrastive_diffusers.shapes.accuracy`` for the table.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from PIL import Image, ImageFilter

from .captions import (
    CAPTION_KINDS,
    caption_text,
    negatives_for,
    sample_spec,
    scenes_for,
)
from .oracle import detect
from .render import render
from .spec import evaluate

__all__ = ["PERTURBATIONS", "oracle_accuracy", "perturb"]

PERTURBATIONS = ("clean", "blur", "noise", "color_shift", "combined")


def perturb(image: Image.Image, kind: str, rng) -> Image.Image:
    """A degraded copy, as a small diffusion model might draw it. ``blur``: Gaussian, radius
    1 px at 32 px (scaled with the size); ``noise``: Gaussian, sigma 15 per channel;
    ``color_shift``: every channel scaled by a random factor in [0.85, 1.1] and shifted by up to
    +-15 (background included); ``combined``: all three."""
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    if kind == "clean":
        return image.copy()
    if kind == "combined":
        for step in ("color_shift", "blur", "noise"):
            image = perturb(image, step, rng)
        return image
    if kind == "blur":
        return image.filter(ImageFilter.GaussianBlur(radius=image.width / 32))
    array = np.asarray(image, dtype=np.float64)
    if kind == "noise":
        array = array + rng.normal(0.0, 15.0, array.shape)
    elif kind == "color_shift":
        array = array * rng.uniform(0.85, 1.1, 3) + rng.uniform(-15, 15, 3)
    else:
        raise ValueError(f"Unknown perturbation {kind!r}; valid: {', '.join(PERTURBATIONS)}.")
    return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8))


def oracle_accuracy(n: int = 300, seed: int = 0, perturbation: str = "clean", size: int = 32,
                    kinds=CAPTION_KINDS, distractor_rate: float = 0.3) -> dict:
    """Oracle agreement over ``n`` random captions; returns positive and negative accuracy, their
    counts, per-kind and per-negative-type rates, and up to 10 failures with reasons."""
    rng = np.random.default_rng(seed)
    pos_ok = neg_ok = neg_total = 0
    by_kind: dict[str, list[int]] = {}
    by_negative: dict[str, list[int]] = {}
    failures = []
    for index in range(n):
        kind = kinds[index % len(kinds)]
        spec = sample_spec(kind, rng)
        used = sum(o.count for o in spec.objects)
        distractors = int(used < 3 and rng.random() < distractor_rate)
        scene = scenes_for(spec, rng, distractors=distractors)
        caption = caption_text(spec, kind)
        image = perturb(render(scene, size), perturbation, rng)
        detected = detect(image)
        result = evaluate(detected, caption.spec)
        pos_ok += result.success
        by_kind.setdefault(kind, [0, 0])
        by_kind[kind][0] += result.success
        by_kind[kind][1] += 1
        if not result.success and len(failures) < 10:
            failures.append({"caption": caption.text, "expected": True, "reasons": result.reasons,
                             "scene": scene.to_dict(), "detected": [o.to_dict() for o in detected]})
        for name, negative in negatives_for(scene, caption, rng):
            rejected = not evaluate(detected, negative.spec).success
            neg_ok += rejected
            neg_total += 1
            by_negative.setdefault(name, [0, 0])
            by_negative[name][0] += rejected
            by_negative[name][1] += 1
            if not rejected and len(failures) < 10:
                failures.append({"caption": negative.text, "expected": False, "negative": name,
                                 "scene": scene.to_dict()})
    return {
        "perturbation": perturbation,
        "size": size,
        "positives": n,
        "positive_accuracy": pos_ok / n,
        "negatives": neg_total,
        "negative_accuracy": neg_ok / max(neg_total, 1),
        "accuracy": (pos_ok + neg_ok) / (n + neg_total),
        "by_kind": {k: v[0] / v[1] for k, v in by_kind.items()},
        "by_negative": {k: v[0] / v[1] for k, v in by_negative.items()},
        "failures": failures,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Measure the ShapesWorld oracle's accuracy.")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--perturbations", default=",".join(PERTURBATIONS))
    parser.add_argument("--json", action="store_true", help="Print the full results as JSON.")
    args = parser.parse_args(argv)
    results = [oracle_accuracy(args.n, args.seed, p, args.size) for p in args.perturbations.split(",")]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'perturbation':<12} {'positives':>16} {'negatives':>16}")
    for r in results:
        print(f"{r['perturbation']:<12} {r['positive_accuracy']:>9.3f} (n={r['positives']}) "
              f"{r['negative_accuracy']:>9.3f} (n={r['negatives']})")


if __name__ == "__main__":
    main()
