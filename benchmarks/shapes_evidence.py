"""Does guidance help the embedded ShapesWorld models? Plain generation, every method at its
paper defaults and every method tuned, on enough test images that a 10-point difference is
not noise; paired differences from plain generation with 95% intervals.

    python benchmarks/shapes_evidence.py --output-dir outputs/evidence          # the full run
    python benchmarks/shapes_evidence.py --output-dir outputs/evidence --estimate   # time it first
    python benchmarks/shapes_evidence.py --output-dir /tmp/smoke --smoke         # 2 prompts, 1 seed
    python benchmarks/shapes_evidence.py --output-dir outputs/evidence-mmdit --model embedded-mmdit \
        --steps 28 --tune-budget 240      # the committed evidence-mmdit.json (SD3's default steps)

``--model embedded`` (default) is the UNet model; ``embedded-mmdit`` its SD3-format sibling,
whose results go to ``evidence-mmdit.json`` (and ``.md``, ``.png``, ...) beside the UNet's.

1. **Tune** each method on ShapesWorld's *train* split only (``run_tuning`` without its own
   confirmation: successive halving over step size, last guided step, refinement, the
   method's weight and map size; ``--tune-budget`` images per method, oracle-scored), into
   ``DIR/tune/<method>/`` (the chosen setting: ``<method>-tuned.json``).
2. **Test** plain, the four methods at paper defaults and the four tuned settings on the
   *test* split: the first ``--two-object-prompts`` two-object prompts x ``--seeds`` seeds
   (default 50 x 8 = 400 images per method) and the first ``--other-prompts`` prompts of the
   relation, held-out and single-object categories x ``--other-seeds`` seeds (12 x 4), every
   method at the same seeds, 50 steps, through the bench runner (``DIR/test/``).
3. **Write** ``evidence.json`` (``--results``; default
   ``benchmarks/results/shapesworld/evidence.json``): ``{"n_seeds", "methods": {"<method>[:tuned]":
   {category: {mean, ci_low, ci_high, n}}}, "paired": {"<method>[:tuned]": {category: {delta,
   ci_low, ci_high, n, n_prompts}}}}`` with ``none`` as the baseline (intervals over prompts:
   the seeds of one prompt are not independent draws), and beside it ``evidence-records.jsonl``
   (every test image's arm, prompt, seed and verdict: ``--from-records`` recomputes the tables
   from it without drawing anything), ``evidence.md`` (the README's tables), ``evidence.png`` /
   ``evidence.svg`` (the chart) and ``evidence-grid.png`` (the same prompts and seeds across
   every arm, framed by the oracle's verdict).
4. (A separate command) ``benchmarks/oracle_sensitivity.py --run-dir DIR`` rescores the run's
   images with the oracle before 2026-12-02: a difference that only one oracle shows rests on
   borderline images.

Every stage resumes: re-running the command keeps every image and tuning step already made.
A tuned setting that settled on the paper defaults is not drawn again: its arm reuses the
defaults arm's images.
The test images are drawn ``--seed-batch`` seeds of a method and prompt per pipeline call
(default 8, the two-object seeds; the bench runner's ``seed_batch``): each image from its own
seeded generator, equal to the one-image call's up to float rounding (which Attend-and-Excite's
long refinement can amplify into visibly different pixels). Tuning draws one seed per prompt,
so it gains nothing from batching.

Runtime: about 5,400 images (480 for tuning, 3,600 two-object, about 1,300 others). Measured
on 2 CPU cores at 50 steps (OMP_NUM_THREADS=2, machine otherwise idle), seconds per image,
one per call / 8 per call: plain 1.42 / 0.85, CONFORM 4.52 / 1.88, A&E 3.71 / 1.69, EBAMA
2.96 / 1.31, SynGen 2.87 / 1.30 (CONFORM 2.47 at 4 per call, 1.78 at 16). Projected: tuning
about 28 minutes, two-object about 90, others at most about 40, so about 2.6 hours (about 5
hours one image per call). The run (finished 2026-12-01) took about 1.6 hours: 480 tuning
images and 3,264 test images (three of the four tuned settings were the paper defaults, whose
images serve both arms); the README gives its results. ``--estimate`` times a few images of each method on
this machine, one per call and ``--seed-batch`` per call, and prints the projection before
anything else runs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from contrastive_diffusers.atomic_io import write_json_atomic, write_text_atomic
from contrastive_diffusers.eval.report_charts import write_chart
from contrastive_diffusers.eval.report_grid import comparison_png, grid_sample
from contrastive_diffusers.eval.tune import TuneConfig, run_tuning
from contrastive_diffusers.eval.tune_runs import Arm, arm_tables, run_arms
from contrastive_diffusers.shapes import shapes_prompts

METHODS = ("attend_and_excite", "conform", "ebama", "syngen")
METRIC = "oracle_success"
OTHER_CATEGORIES = ("relation", "held_out", "single")
RESULTS = Path(__file__).resolve().parent / "results" / "shapesworld" / "evidence.json"
MODELS = {"embedded": RESULTS, "embedded-mmdit": RESULTS.with_name("evidence-mmdit.json")}
GRID_PROMPTS = 8  # rows of evidence-grid.png: prompts taken in turn from each category, seed 0
SMOKE = dict(two_object_prompts=2, seeds=1, other_prompts=2, other_seeds=1, tune_budget=4, steps=3)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output-dir", type=Path, required=True, help="working folder (re-use it to resume)")
    parser.add_argument("--model", choices=tuple(MODELS), default="embedded",
                        help="the UNet ShapesWorld model or its SD3-format (MMDiT) sibling")
    parser.add_argument("--results", type=Path, help=f"evidence.json to write. Default: {RESULTS} "
                        "(embedded-mmdit: evidence-mmdit.json beside it; with --smoke: DIR/evidence.json)")
    parser.add_argument("--two-object-prompts", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=8, help="seeds of the two-object prompts (0..N-1)")
    parser.add_argument("--other-prompts", type=int, default=12, help="prompts per other category")
    parser.add_argument("--other-seeds", type=int, default=4)
    parser.add_argument("--tune-budget", type=int, default=120, help="tuning images per method (train split)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--seed-batch", type=int, default=8,
                        help="seeds of a method and prompt per pipeline call (1: one image per call)")
    parser.add_argument("--smoke", action="store_true", help="2 prompts per category, 1 seed, a tiny tuning budget, 3 steps")
    parser.add_argument("--estimate", action="store_true", help="time a few images and print the projected runtime")
    parser.add_argument("--from-records", action="store_true",
                        help="draw nothing: recompute the tables and chart from the records file beside --results")
    args = parser.parse_args(argv)
    if args.seed_batch < 1:
        parser.error(f"--seed-batch must be at least 1, got {args.seed_batch}")
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    if args.results is None:
        args.results = args.output_dir / "evidence.json" if args.smoke else MODELS[args.model]
    return args


def test_items(args) -> tuple[list, list]:
    """(two-object prompts, the other categories' prompts) of the test split."""
    split = shapes_prompts("test")
    two = [i for i in split if i.category == "two_object"][: args.two_object_prompts]
    others = [i for c in OTHER_CATEGORIES for i in [j for j in split if j.category == c][: args.other_prompts]]
    return two, others


def image_count(args) -> dict:
    arms = 1 + 2 * len(args.methods)
    return {"tuning": args.tune_budget * len(args.methods),
            "two_object": arms * args.two_object_prompts * args.seeds,
            "others (at most)": arms * args.other_prompts * len(OTHER_CATEGORIES) * args.other_seeds}


def estimate(args) -> None:
    """Time each method (plain and each method's defaults) one image per call, as tuning draws
    them, and ``--seed-batch`` images per call, as the test stage draws them; project the run."""
    import torch

    from contrastive_diffusers.guidance.methods import get_method
    from contrastive_diffusers.models.loading import load_pipeline
    from contrastive_diffusers.runs import generate_images, generation_options

    pipe = load_pipeline(args.model, "cpu", torch.float32, quiet=True)
    pipe.set_progress_bar_config(disable=True)
    options = generation_options(pipe, steps=args.steps)
    prompt = [i for i in shapes_prompts("test") if i.category == "two_object"][0]
    single, batched = {}, {}
    for name in ("none", *args.methods):
        method = None if name == "none" else get_method(name)

        def seconds_per_image(seeds, method=method):
            start = time.perf_counter()
            generate_images(pipe, prompt.prompt, seeds, options, method, prompt.token_groups)
            return (time.perf_counter() - start) / len(seeds)

        seconds_per_image([0])  # warm-up
        single[name] = (seconds_per_image([1]) + seconds_per_image([2])) / 2
        batched[name] = seconds_per_image(list(range(args.seed_batch))) if args.seed_batch > 1 else single[name]
    counts = image_count(args)
    arms = 1 + 2 * len(args.methods)

    def per_arm_image(seconds):  # plain is one arm of 1 + 2 x methods; the tuned arms cost as the defaults
        guided = sum(seconds[m] for m in args.methods) / len(args.methods)
        return seconds["none"] / arms + guided * (arms - 1) / arms

    tuning = counts["tuning"] * sum(single[m] for m in args.methods) / len(args.methods)
    test = (counts["two_object"] + counts["others (at most)"]) * per_arm_image(batched)
    print(f"seconds per image (torch threads: {torch.get_num_threads()}), one per call / {args.seed_batch} per call:",
          ", ".join(f"{k} {single[k]:.2f} / {batched[k]:.2f}" for k in single))
    print("images:", ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"projected: {(tuning + test) / 60:.0f} minutes (tuning {tuning / 60:.0f}, test {test / 60:.0f}; at most: "
          "not-applicable images take no time, and the other categories' fewer seeds batch less)")


def tune_all(args) -> dict[str, Path]:
    """Each method tuned on the train split: ``{method: (its tuned config file, map size, whether
    it kept the paper defaults)}``."""
    files = {}
    for method in args.methods:
        result = run_tuning(TuneConfig(output_dir=args.output_dir / "tune" / method, method=method, model=args.model,
                                       budget=args.tune_budget,
                                       steps=args.steps, device="cpu", confirm=False, progress=False,
                                       seed_batch=args.seed_batch))
        files[method] = (result.method_file, result.attn_res, not result.chosen)
        chosen = next(row for row in result.search if row["status"] == "chosen")
        print(f"tuned {method}: {chosen['label']}", flush=True)
    return files


def public_arm(arm: str) -> str:
    """An arm's name in evidence.json: ``<method>`` or ``<method>:tuned`` (its folder: ``-tuned``)."""
    return arm.replace("-tuned", ":tuned")


def evidence(records: list[dict], arm_names: list[str], n_seeds: int) -> dict:
    """evidence.json: arm names as ``<method>`` and ``<method>:tuned``."""
    tables = arm_tables(records, METRIC, arm_names)
    return {"n_seeds": n_seeds,
            "methods": {public_arm(k): v for k, v in tables["methods"].items()},
            "paired": {public_arm(k): v for k, v in tables["paired"].items()}}


def records_path(results: Path) -> Path:
    return results.with_name(results.stem + "-records.jsonl")


def write_records(path: Path, records: list[dict], arms: list[str], n_seeds: int) -> None:
    """Every test image's arm, prompt, category, seed, status and verdict, one JSON line each
    (a first line holds the arms in the tables' order and ``n_seeds``): what the tables are computed from."""
    lines = [json.dumps({"arms": arms, "n_seeds": n_seeds, "metric": METRIC})]
    for r in records:
        value = (r.get("metrics") or {}).get(METRIC)
        lines.append(json.dumps({"method": r["method"], "prompt_id": r["prompt_id"], "category": r.get("category"),
                                 "seed": r["seed"], "status": r["status"], METRIC: value}))
    write_text_atomic(path, "\n".join(lines) + "\n")


def read_records(path: Path) -> tuple[list[dict], list[str], int]:
    """(records in the bench runner's shape, arm names, n_seeds) from :func:`write_records`' file."""
    if not path.is_file():
        raise SystemExit(f"--from-records: no records file at {path}; run the evidence command once to write it.")
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    head, rows = lines[0], lines[1:]
    records = [{"method": r["method"], "prompt_id": r["prompt_id"], "category": r["category"], "seed": r["seed"],
                "status": r["status"], "metrics": {METRIC: r[METRIC]}} for r in rows]
    return records, head["arms"], head["n_seeds"]


def write_tables(args, data: dict) -> None:
    """evidence.json, .md and the chart."""
    args.results.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.results, data)
    write_text_atomic(args.results.with_suffix(".md"), evidence_markdown(data))
    for suffix in (".svg", ".png"):
        title = "ShapesWorld test split" + (", SD3-format model" if args.model == "embedded-mmdit" else "")
        write_chart(data["methods"], args.results.with_suffix(suffix), title=title, metric="oracle success")


def _short(arm: str) -> str:
    """A grid column title: "A&E", "CONFORM tuned", ..."""
    names = {"none": "plain", "attend_and_excite": "A&E", "conform": "CONFORM", "ebama": "EBAMA", "syngen": "SynGen"}
    base = arm.removesuffix("-tuned")
    return names.get(base, base) + (" tuned" if arm.endswith("-tuned") else "")


def evidence_markdown(data: dict) -> str:
    """The README's tables: success per method and category, and the paired differences."""
    categories = list(next(iter(data["methods"].values())))

    def cell(stat, key):
        if stat.get(key) is None:
            return "-"
        number = "{:+.3f}" if key == "delta" else "{:.3f}"
        interval = "" if stat.get("ci_low") is None else f" [{number.format(stat['ci_low'])}, {number.format(stat['ci_high'])}]"
        prompts = stat.get("n_prompts", stat["n"])
        count = f"{stat['n']}" if prompts == stat["n"] else f"{stat['n']}; {prompts} prompts"
        return f"{number.format(stat[key])}{interval} ({count})"

    lines = ["Oracle success, mean [95% t-interval over prompts] (images; prompts):", "",
             "| method | " + " | ".join(categories) + " |", "|---|" + "---|" * len(categories)]
    lines += [f"| {m} | " + " | ".join(cell(s[c], "mean") for c in categories) + " |" for m, s in data["methods"].items()]
    lines += ["", "Paired difference from `none` (same prompt and seed):", "",
              "| method | " + " | ".join(categories) + " |", "|---|" + "---|" * len(categories)]
    lines += [f"| {m} | " + " | ".join(cell(s[c], "delta") for c in categories) + " |" for m, s in data["paired"].items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.estimate:
        estimate(args)
        return 0
    if args.from_records:
        records, arm_names, n_seeds = read_records(records_path(args.results))
        data = evidence(records, arm_names, n_seeds)
        write_tables(args, data)
        print(evidence_markdown(data))
        print(f"wrote {args.results} from {records_path(args.results)}")
        return 0
    start = time.perf_counter()
    tuned = tune_all(args)
    # A tuned setting that kept the paper defaults draws the defaults arm's images: reused, not drawn again.
    arms = [Arm("none", "none"), *[Arm(m, m) for m in args.methods],
            *[Arm(path.stem, str(path), attn_res, same_as=m if kept else None)
              for m, (path, attn_res, kept) in tuned.items()]]
    for arm in arms:
        if arm.same_as is not None:
            print(f"{arm.name} settled on the paper defaults: its images are {arm.same_as}'s", flush=True)
    bench = dict(model=args.model, steps=args.steps, device="cpu", clip_model=None, heatmaps=False, progress=False,
                 report_max_prompts=20, seed_batch=args.seed_batch)
    two, others = test_items(args)
    records = run_arms(args.output_dir / "test", arms, two, range(args.seeds), bench)
    records += run_arms(args.output_dir / "test", arms, others, range(args.other_seeds), bench)
    data = evidence(records, [a.name for a in arms], args.seeds)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    write_records(records_path(args.results), records, [a.name for a in arms], args.seeds)
    write_tables(args, data)
    grid = args.results.with_name(args.results.stem + "-grid.png")
    comparison_png(records, [a.name for a in arms], grid_sample(records, GRID_PROMPTS), args.output_dir / "test", grid,
                   labels={a.name: _short(a.name) for a in arms}, cell=64)
    print(evidence_markdown(data))
    print(f"wrote {args.results} in {(time.perf_counter() - start) / 60:.1f} minutes")
    print(json.dumps({k: v for k, v in image_count(args).items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
