"""Guidance methods on the embedded ShapesWorld model, checked by the world's oracle.

    python benchmarks/shapes_benchmark.py --output-dir outputs/shapes-bench [--seeds 0 1 2] [--model DIR]

Runs ``contrastive_diffusers.eval.run_benchmark`` (the ``bench`` command's runner: resumable,
reports in the folder) on the first ``--per-category`` prompts of each chosen category of
ShapesWorld's test split, with every method at the same seeds, and scores each image with the
oracle (exact) and the world's CLIP. The numbers in the README's ShapesWorld results come from
this script; the folder's ``summary.md`` holds every table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from contrastive_diffusers.eval import BenchConfig, run_benchmark
from contrastive_diffusers.models.names import is_embedded
from contrastive_diffusers.shapes import shapes_prompts

DEFAULT_CATEGORIES = {"two_object": 24, "relation": 8, "held_out": 8, "single": 8}
METHODS = ["none", "attend_and_excite", "conform", "ebama", "syngen"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--categories", nargs="+", default=list(DEFAULT_CATEGORIES),
                        help=f"categories of the test split (prompts per category: {DEFAULT_CATEGORIES})")
    parser.add_argument("--per-category", type=int, help="prompts per category (default: the table above)")
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--model", default="embedded",
                        help="the shipped model (default) or a training output folder of the same world")
    args = parser.parse_args()
    test_split, items = shapes_prompts("test"), []
    for category in args.categories:
        n = args.per_category or DEFAULT_CATEGORIES.get(category, 8)
        items += [item for item in test_split if item.category == category][:n]
    # a training output folder carries the world's CLIP in clip/, as the shipped model does
    clip_model = "auto" if is_embedded(args.model) else str(Path(args.model) / "clip")
    run_benchmark(BenchConfig(output_dir=args.output_dir, model=args.model, methods=args.methods, prompt_set=items,
                              seeds=args.seeds, steps=args.steps, device="cpu", clip_model=clip_model))


if __name__ == "__main__":
    main()
