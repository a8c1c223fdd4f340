"""Does the training help? ReVersion, MCPL, EvoGen and DCO trained from the embedded ShapesWorld
model and measured with the oracle against their papers' baselines (issue 16).

    python benchmarks/shapes_training_evidence.py --output-dir DIR [--smoke] [--only reversion,mcpl,evogen,dco]

Resumable: run the same command again after an interruption; finished training runs and
judged images are kept in DIR. Writes ``training.json`` (schema of the issue), ``training.md``,
``training-<experiment>.png`` charts and ``training-<experiment>-examples.png`` grids into
``--results-dir`` (default ``benchmarks/results/shapesworld``; ``--smoke`` runs tiny sizes and
writes into ``DIR/results`` unless given). The experiments: :mod:`contrastive_diffusers.eval.train_experiments`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from contrastive_diffusers.atomic_io import write_json_atomic
from contrastive_diffusers.eval.train_evidence import RecipeError
from contrastive_diffusers.eval.train_experiments import (
    EXPERIMENTS,
    FULL,
    SMOKE,
    run_experiment,
    sizes_of,
    with_overrides,
)
from contrastive_diffusers.eval.train_report import (
    format_stat,
    merge_results,
    write_report,
)

DEFAULT_RESULTS = Path(__file__).resolve().parent / "results" / "shapesworld"


def _experiments(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"--only takes names from {', '.join(EXPERIMENTS)}, got {text!r}")
    return names


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", required=True, type=Path, help="Work folder (data, runs, records); reused on resume.")
    parser.add_argument("--smoke", action="store_true", help="Tiny steps and prompts: checks the code path in minutes.")
    parser.add_argument("--only", type=_experiments, default=list(EXPERIMENTS), help="Comma-separated experiments.")
    parser.add_argument("--results-dir", type=Path, default=None, help="Where training.json and the report go.")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="Change one size of the recipe (e.g. mcpl_steps=120, dco_lr=1e-4, seeds=0,1,2,3); "
                        "repeat for several. Use a new --output-dir and --results-dir per recipe.")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")),
                        help="torch CPU threads.")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    try:
        sizes = with_overrides(SMOKE if args.smoke else FULL, args.overrides)
    except ValueError as error:
        parser.error(str(error))
    results_dir = args.results_dir or (args.output_dir / "results" if args.smoke else DEFAULT_RESULTS)
    # each experiment says what it ran with and where: results carried over from earlier calls keep theirs
    call = {"command": " ".join(["python benchmarks/shapes_training_evidence.py --output-dir DIR",
                                 *(["--smoke"] if args.smoke else []), *(f"--set {o}" for o in args.overrides)]),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {args.threads} torch threads",
            "date": time.strftime("%Y-%m-%d")}
    new, status = {}, 0
    for name in args.only:
        started = time.perf_counter()
        try:
            entry, detail = run_experiment(name, args.output_dir, sizes)
        except RecipeError as error:  # e.g. a run of another recipe in the folder: say which arguments differ
            print(f"error: {error}", file=sys.stderr)
            status = 2
            break  # the experiments finished before it still reach the report
        write_json_atomic(args.output_dir / name / "details.json", detail)
        new[name] = {**entry, "sizes": sizes_of(name, sizes), "last_call": call}
        print(f"{name}: {entry['metric']}: method {format_stat(entry['method'])}; "
              + "; ".join(f"{b} {format_stat(s)}" for b, s in entry["baselines"].items())
              + f" ({(time.perf_counter() - started) / 60:.1f} min this call)", flush=True)
    if not new:
        return status
    results = merge_results(results_dir / "training.json", new)
    details = {}
    for name in results:
        path = args.output_dir / name / "details.json"
        if path.exists():
            details[name] = json.loads(path.read_text())
    header = ("Each experiment's sizes (`--set` changes them) and the call that last added to it "
              "(`last_call`: command, machine, date) are in its section.")
    for path in write_report(results, details, args.output_dir, results_dir, header):
        print(path)
    return status


if __name__ == "__main__":
    sys.exit(main())
