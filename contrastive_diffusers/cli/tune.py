"""The ``tune`` command: calibrate a guidance method for a model (see
:mod:`contrastive_diffusers.eval.tune`)."""

from __future__ import annotations

import argparse

from .common import (EXIT_OK, CliError, check_writable, default_output_dir, device_name,
                     int_list, interrupted, output_folder, positive_int)

TUNE_EPILOG = """\
what it does:
  1. splits the prompt set into train and test prompts (ShapesWorld: the world's own
     splits; other sets: by a hash of each prompt id), keeping the prompts the method
     applies to (CONFORM: two objects or more);
  2. searches the method's settings on the train prompts by successive halving (rate 2):
     step size (x0.25 .. x2 of the paper's), last guided step (a fraction of the
     trajectory), refinement on/off, the method's own weight (CONFORM's temperature,
     EBAMA's intensity weight) and the map size where the model has several (a setting
     that guides exactly as an earlier one at --steps is searched once); each round
     keeps the better half and gives it twice the prompts;
  3. runs plain generation, the paper defaults and the chosen setting on the test prompts,
     paired by prompt and seed, with 95% intervals.
  --budget counts images: a third for step 3, the rest for step 2 (every rung counted in
  full; survivors reuse their earlier images, so fewer are drawn: tune.json's plan says how many).

metrics (--metric): oracle_success (the ShapesWorld oracle; embedded model, default there),
  min_object_similarity (default elsewhere), binding_accuracy, binding_text_score, clip_score.

outputs (--output-dir):
  <method>-tuned.json      the chosen setting: --method FILE.json in generate / bench
  report.md, report.html   the search table, the confirmation tables, the images side by side
  tune.json                the settings, the plan, both tables
  search/, confirm/        bench folders of every image (re-running the command resumes)

example:
  contrastive-diffusers tune --method conform --budget 200 --output-dir outputs/tune-conform
  contrastive-diffusers bench --method none,conform,outputs/tune-conform/conform-tuned.json
"""


def add_tune_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "tune",
        help="calibrate a guidance method's settings for a model on a prompt set",
        description="Search a guidance method's settings on the train split of a prompt set, then\n"
        "confirm the choice on the test split against plain generation and the paper defaults.",
        epilog=TUNE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default="embedded", metavar="MODEL",
                   help="embedded (default), embedded-mmdit, a hub id or pipeline folder, or a tiny-* test model (tiny-sd1, tiny-sdxl, tiny-sd3, tiny-flux, ...)")
    p.add_argument("--method", required=True, metavar="NAME",
                   help="attend_and_excite (ae), conform, ebama or syngen")
    p.add_argument("--prompts", metavar="SET_OR_FILE",
                   help="a built-in prompt set or a prompt file. Default: shapes (embedded), else attend_and_excite")
    p.add_argument("--metric", metavar="NAME", help="what to maximise (see below)")
    p.add_argument("--budget", type=positive_int, default=120, metavar="IMAGES",
                   help="images in all, search and confirmation. Default: %(default)s")
    p.add_argument("--seeds", nargs="+", action="extend", type=int_list, metavar="SEED",
                   help="seeds of every prompt. Default: 0")
    p.add_argument("--categories", nargs="+", metavar="CATEGORY",
                   help="only prompts of these categories. Default: all (ShapesWorld: two_object relation single)")
    p.add_argument("--steps", type=positive_int, default=50, metavar="N", help="denoising steps. Default: %(default)s")
    p.add_argument("--clip-model", default="auto", metavar="ID_OR_DIR",
                   help="CLIP for the CLIP metrics. Default: the world's CLIP for the embedded model, else the A&E protocol's")
    p.add_argument("--device", type=device_name, default="auto", metavar="{auto,cpu,cuda,cuda:N,mps}")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"))
    p.add_argument("--text-sequence", choices=("clip", "t5"),
                   help="SD3 / SD3.5 only: the part of the joint text the guidance loss reads, CLIP's tokens or T5's "
                   "(prompts longer than CLIP's 75 tokens need t5). Default: clip")
    p.add_argument("--no-confirm", action="store_true", help="stop after the search (no test-split run)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars and no report on the terminal (the chosen setting's file is still named)")
    p.add_argument("--output-dir", type=output_folder, metavar="DIR",
                   help="the tune folder (re-use it to resume). Default: outputs/tune-<timestamp>")
    p.set_defaults(run=run_tune)
    return p


def run_tune(args: argparse.Namespace) -> int:
    from ..eval.tune import TuneConfig, run_tuning

    seeds = list(dict.fromkeys(s for values in (args.seeds or [[0]]) for s in values))
    output_dir = args.output_dir or default_output_dir("tune")
    check_writable(output_dir)
    try:
        config = TuneConfig(
            output_dir=output_dir,
            method=args.method,
            model=args.model,
            prompt_set=args.prompts,
            metric=args.metric,
            budget=args.budget,
            seeds=seeds,
            steps=args.steps,
            categories=args.categories,
            clip_model=None if args.clip_model.lower() == "none" else args.clip_model,
            device=args.device,
            dtype=args.dtype,
            confirm=not args.no_confirm,
            text_sequence=args.text_sequence,
            progress=not args.quiet,
        )
        result = run_tuning(config)
    except KeyboardInterrupt:
        return interrupted("the images made so far", output_dir, given=args.output_dir is not None)
    except ValueError as err:
        raise CliError(str(err)) from None
    if not args.quiet:
        print((result.output_dir / "report.md").read_text(encoding="utf-8"))
    # the map size and the text read are call arguments, not part of the method file: say them where the file is named
    calls = [f"--attn-res {result.attn_res[0]} {result.attn_res[1]}"] if result.attn_res else []
    calls += ["--text-sequence t5"] if args.text_sequence == "t5" else []
    with_calls = f", with {' '.join(calls)}" if calls else ""
    print(f"chosen setting: {result.method_file}{with_calls} (report: {result.files.get('html')})")
    return EXIT_OK
