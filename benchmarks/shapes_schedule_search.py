"""Tune one guidance method's settings for a ShapesWorld model, then check the choice on the test split.

    python benchmarks/shapes_schedule_search.py --method attend_and_excite \\
        --grid step_size=10,20,40 max_update_step=10,25 --output outputs/ae-search.json

A paper's defaults were set for Stable Diffusion's 64x64 latents; the embedded model's are
16x16 with 8x8 maps, so its best settings may differ. Every grid point (the cartesian product
of ``--grid``) generates the first ``--tune-prompts`` two-object prompts of the *train* split
whose text is not a test prompt, at ``--seeds``, and the oracle scores them. The best point
(ties: the earlier point) is then run, with the method's defaults and plain generation, on the
first ``--test-prompts`` two-object prompts of the test split (the ones
``shapes_benchmark.py`` uses) at the same seeds, so the test numbers never chose the setting.

Grid keys: fields of :class:`~contrastive_diffusers.guidance.GuidanceSchedule` (``step_size``,
``max_update_step``, ``start_step``, ``refinement_iterations``), keyword arguments of the method
(``temperature``, ``intensity_weight``, ...), and ``attn_res`` (an integer N for NxN maps).
Results are written to ``--output`` after every grid point; a rerun with the same arguments
skips the points already there.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

from contrastive_diffusers.atomic_io import write_json_atomic
from contrastive_diffusers.eval.tune_space import build_candidate
from contrastive_diffusers.guidance.methods import get_method
from contrastive_diffusers.models.loading import load_pipeline, resolve_dtype
from contrastive_diffusers.runs import generate_image, generation_options
from contrastive_diffusers.shapes import shapes_prompts
from contrastive_diffusers.shapes.oracle import check


def parse_value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_grid(entries: list[str]) -> list[dict]:
    """``["step_size=10,20", "attn_res=8"]`` -> every combination as a dict."""
    axes = {}
    for entry in entries:
        key, sep, values = entry.partition("=")
        if not sep or not values:
            raise SystemExit(f"--grid entry {entry!r}: expected KEY=V1,V2,...")
        axes[key] = [parse_value(v) for v in values.split(",")]
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def build(method_name: str, setting: dict):
    """The method with ``setting`` applied, and the ``attn_res`` to generate with (``tune``'s
    candidate builder; this script's ``attn_res`` is one side of a square map)."""
    setting = dict(setting)
    side = setting.pop("attn_res", None)
    return build_candidate(method_name, {**setting, **({"attn_res": (side, side)} if side else {})})


def prompt_sets(tune_prompts: int, test_prompts: int) -> tuple[list, list]:
    """Two-object prompts to tune on (train split, no test prompt's text) and to test on."""
    test_split = shapes_prompts("test")
    test_texts = {i.prompt for i in test_split}
    tune = [i for i in shapes_prompts("train") if i.category == "two_object" and i.prompt not in test_texts]
    test = [i for i in test_split if i.category == "two_object"]
    return tune[:tune_prompts], test[:test_prompts]


def success_rate(pipe, options, items, seeds, method=None, attn_res=None) -> dict:
    wins = []
    for item in items:
        for seed in seeds:
            image = generate_image(pipe, item.prompt, seed, options, method, item.token_groups or "auto",
                                   attn_res).images[0]
            wins.append(check(image, item.metadata["spec"]).success)
    return {"success": sum(wins), "n": len(wins), "rate": sum(wins) / len(wins)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", required=True)
    parser.add_argument("--grid", nargs="+", required=True, help="KEY=V1,V2,... (see the module docstring)")
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--tune-prompts", type=int, default=16)
    parser.add_argument("--test-prompts", type=int, default=24)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)

    grid = parse_grid(args.grid)
    for setting in grid:  # bad keys and values fail here, before any image
        build(args.method, setting)
    tune, test = prompt_sets(args.tune_prompts, args.test_prompts)

    pipe = load_pipeline(args.model, "cpu", resolve_dtype(None, "cpu")[0], quiet=True)
    pipe.set_progress_bar_config(disable=True)
    options = generation_options(pipe, steps=args.steps)
    key = {k: getattr(args, k) for k in ("method", "model", "seeds", "tune_prompts", "test_prompts", "steps")}
    results = json.loads(args.output.read_text()) if args.output.is_file() else {}
    if results.get("key") != key:
        results = {"key": key, "tune": {}, "test": {}}

    def run(table: str, label: str, items, method=None, attn_res=None) -> dict:
        if label not in results[table]:
            start = time.perf_counter()
            results[table][label] = success_rate(pipe, options, items, args.seeds, method, attn_res)
            results[table][label]["seconds"] = round(time.perf_counter() - start, 1)
            write_json_atomic(args.output, results)
        r = results[table][label]
        print(f"[{table}] {label:60s} {r['success']:3d}/{r['n']:<3d} {r['rate']:.3f}", flush=True)
        return r

    run("tune", "plain", tune)
    scores = {}
    for setting in grid:
        label = json.dumps(setting, sort_keys=True)
        scores[label] = run("tune", label, tune, *build(args.method, setting))["rate"]
    best = max(scores, key=scores.get)  # max keeps the first of equal rates
    results["best"] = json.loads(best)
    run("test", "plain", test)
    run("test", "defaults", test, get_method(args.method))
    run("test", f"best {best}", test, *build(args.method, json.loads(best)))
    write_json_atomic(args.output, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
