"""The ``bench`` and ``score`` commands: a scripted benchmark over a prompt set, and scoring of
an existing benchmark folder (see :mod:`contrastive_diffusers.eval.bench`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..distributed import is_main_launched_process, launched_processes
from ..models.names import DEFAULT_CLIP_MODEL
from .common import (
    EXIT_FAILURES,
    EXIT_OK,
    CliError,
    add_run_arguments,
    check_writable,
    default_output_dir,
    device_name,
    interrupted,
    normalize_run_args,
    output_folder,
    positive_int,
)

BENCH_EPILOG = """\
prompt sets (--prompts):
  shapes                          ShapesWorld's test split, 289 prompts in 7 categories, each
                                  checked by the world's exact oracle (default with the
                                  embedded model); shapes:sample = 2 per category,
                                  shapes:train = the 575 training prompts (for tuning)
  attend_and_excite               the Attend-and-Excite benchmark, 276 prompts (built in)
  attend_and_excite:animals       one subset: animals, animal_object, object_object
  geneval                         GenEval's 553 prompts (built in); geneval:colors = one task:
                                  single_object, two_object, counting, colors, position,
                                  color_attr
  FILE.txt                        one prompt per line; T2I-CompBench's names (color_val.txt,
                                  complex_val_spatial.txt, ...) give their category
  evaluation_metadata.jsonl       GenEval metadata;  FILE.jsonl: rows with "prompt"
  PartiPrompts.tsv                PartiPrompts;      FILE.json: A&E-style {subset: [prompts]}

outputs (--output-dir):
  <method>/<prompt-id>/<seed>.png   the image; <seed>-attention.png the guided maps
  <method>/<prompt-id>/<seed>.json  its record: generation, metrics, failure if any
  metrics.jsonl                     every record, one per line
  summary.md, summary.json          mean +- 95% CI per metric and method, deltas vs "none"
  report.html                       one self-contained page: tables, image grids, heatmaps
  bench.json                        the run's settings

Re-running the same command with the same --output-dir resumes: finished images and
metrics are kept (a stopped run names its folder). Several
processes share the work (--output-dir required):
  accelerate launch --multi_gpu --num_processes N -m contrastive_diffusers bench ...
  torchrun --nproc_per_node N -m contrastive_diffusers bench ...

scoring (--clip-model): embedded-clip (the world's CLIP) for the embedded model, else
""" + DEFAULT_CLIP_MODEL + """ (the A&E protocol's choice); openai/clip-vit-large-patch14 is
CLIPScore's; any CLIP hub id or folder; tiny-clip (random, offline, machinery only); none
(no scoring).

benchmarks' own judges (--judge, repeatable or a comma list), beside the CLIP metrics:
  t2i-compbench   T2I-CompBench: B-VQA (BLIP VQA, --vqa-model; default
                  Salesforce/blip-vqa-capfilt-large, the official checkpoint) for color, shape,
                  texture and prompts of other sets; CLIP ViT-B/32 (--judge-clip-model) for
                  non_spatial; spatial, numeracy, complex are not covered (UniDet)
  geneval         GenEval's detector protocol (--detector, --judge-clip-model)

example:
  contrastive-diffusers bench --model stabilityai/stable-diffusion-2-1-base \\
      --prompts attend_and_excite:animals --method none,conform --seeds 0 1 2 3
"""


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench",
        help="benchmark guidance methods on a prompt set (images, CLIP metrics, benchmark judges, reports)",
        description="Generate every prompt of a set with every method and seed, score the images with\n"
        "CLIP, and write per-image metrics and summary reports. Resumable and shardable.",
        epilog=BENCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--prompts", metavar="SET_OR_FILE",
                   help="a built-in prompt set or a prompt file (see below). Default: shapes with the "
                   "embedded model, attend_and_excite otherwise")
    p.add_argument("--num-prompts", type=positive_int, metavar="N", help="use the first N prompts of the set")
    add_run_arguments(p)
    add_scoring_arguments(p)
    p.add_argument("--no-contrast", action="store_true",
                   help="no contrast captions (binding accuracy) for two-object prompts")
    p.add_argument("--seed-batch", type=positive_int, default=1, metavar="N",
                   help="draw up to N seeds of a method and prompt in one pipeline call (each image from its own "
                   "seeded generator; faster where per-call overhead dominates, e.g. the 32 px embedded model on "
                   "a CPU; N times the memory). Default: %(default)s")
    p.add_argument("--output-dir", type=output_folder, metavar="DIR",
                   help="the run folder (re-use it to resume). Default: outputs/bench-<timestamp>")
    p.set_defaults(run=run_bench)
    return p


def add_score_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "score",
        help="score the images of a bench folder and rewrite its reports",
        description="Score (or with --force re-score, e.g. with another CLIP model) the images of an\n"
        "existing bench folder, then rewrite metrics.jsonl and the reports. Generates nothing;\n"
        "an image that cannot be read is recorded as a failure and listed in the reports.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the output folder of a bench run")
    add_scoring_arguments(p)
    p.add_argument("--force", action="store_true", help="re-score images that already have metrics")
    p.add_argument("--device", default="auto", type=device_name, metavar="{auto,cpu,cuda,cuda:N,mps}",
                   help="Default: %(default)s")
    p.add_argument("--quiet", action="store_true", help="no progress bars or summary table")
    p.set_defaults(run=run_score)
    return p


def add_scoring_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clip-model", default="auto", metavar="ID_OR_DIR",
                   help="CLIP model for the metrics, or none. Default (auto): score keeps the one the folder "
                   "was scored with; else the world's CLIP "
                   f"(embedded-clip) for the embedded model, {DEFAULT_CLIP_MODEL} otherwise")
    p.add_argument("--captioner", metavar="ID_OR_DIR",
                   help="a BLIP captioning model (e.g. Salesforce/blip-image-captioning-base) for the "
                   "prompt-caption text similarity. Default: none")
    p.add_argument("--judge", action="append", default=[], metavar="NAME[,NAME]",
                   help="a benchmark's own judge: t2i-compbench, geneval (repeatable or a comma list)")
    p.add_argument("--vqa-model", metavar="ID_OR_DIR",
                   help="the BLIP VQA model of --judge t2i-compbench. Default: Salesforce/blip-vqa-capfilt-large")
    p.add_argument("--detector", metavar="ID_OR_DIR",
                   help="the object detector of --judge geneval. Default: facebook/mask2former-swin-small-coco-instance")
    p.add_argument("--judge-clip-model", metavar="ID_OR_DIR",
                   help="the CLIP model of the judges that use one (t2i-compbench: non-spatial, default "
                   "openai/clip-vit-base-patch32; geneval: colours, default openai/clip-vit-large-patch14). "
                   "Not the --clip-model of the CLIP metrics")
    p.add_argument("--report-max-prompts", type=positive_int, default=100, metavar="N",
                   help="prompts shown with images in report.html. Default: %(default)s")
    p.add_argument("--baseline", metavar="METHOD",
                   help="the method the reports compare every other with, paired by prompt and seed. "
                   "Default: none (plain generation) when the folder has it, else the first method it ran")


def judge_arguments(args: argparse.Namespace) -> tuple[list[str], dict]:
    """The judges (``--judge a --judge b,c``, each named once) and their model options."""
    names = [n.strip() for value in args.judge for n in value.split(",") if n.strip()]
    options = {"vqa_model": args.vqa_model, "detector": args.detector, "clip_model": args.judge_clip_model}
    return list(dict.fromkeys(names)), options


def _optional_model(name: str | None):
    """``none`` (any case) means no model."""
    return None if name is None or name.lower() == "none" else name


def run_bench(args: argparse.Namespace) -> int:
    from ..eval.bench import BenchConfig, run_benchmark

    normalize_run_args(args)
    if args.output_dir is None and launched_processes() > 1:
        raise CliError("--output-dir is required with several processes: every process must write to the same folder")
    output_dir = args.output_dir or default_output_dir("bench")
    if is_main_launched_process():  # one process tries the folder: several would race making and removing it
        check_writable(output_dir)
    try:
        judges, judge_options = judge_arguments(args)
        config = BenchConfig(
            judges=judges,
            judge_options=judge_options,
            output_dir=output_dir,
            model=args.model,
            methods=args.method,
            prompt_set=args.prompts,
            seeds=args.seeds,
            num_prompts=args.num_prompts,
            steps=args.steps,
            guidance_scale=args.guidance_scale,
            height=args.height,
            width=args.width,
            attn_res=tuple(args.attn_res) if args.attn_res else None,
            negative_prompt=args.negative_prompt,
            true_cfg_scale=args.true_cfg_scale,
            text_sequence=args.text_sequence,
            scheduler=args.scheduler,
            device=args.device,
            dtype=args.dtype,
            clip_model=_optional_model(args.clip_model),
            captioner=_optional_model(args.captioner),
            contrast=not args.no_contrast,
            heatmaps=not args.no_heatmaps,
            report_max_prompts=args.report_max_prompts,
            baseline=args.baseline,
            progress=not args.quiet,
            seed_batch=args.seed_batch,
        )
        result = run_benchmark(config)
        if not args.quiet and result.summary is not None:
            who = "this process" if launched_processes() > 1 else "this run"
            print(f"{who} generated {result.generated} image(s) and scored {result.scored}; "
                  f"the folder holds {len(result.records)} record(s)")
        return _outcome(result, config.output_dir)
    except KeyboardInterrupt:
        return interrupted("finished images and metrics", output_dir, given=args.output_dir is not None)
    except ValueError as err:  # BenchInputError, LoadError: named problem and fix
        raise CliError(str(err)) from None


def run_score(args: argparse.Namespace) -> int:
    from ..eval.bench import score_run

    clip_model = _optional_model(args.clip_model)
    if clip_model is None:
        raise CliError("score needs a CLIP model; --clip-model none only makes sense for bench")
    check_writable(args.run_dir, "the run folder")
    try:
        judges, judge_options = judge_arguments(args)
        result = score_run(args.run_dir, clip_model, _optional_model(args.captioner), force=args.force,
                           device=args.device, progress=not args.quiet, report_max_prompts=args.report_max_prompts,
                           baseline=args.baseline, judges=judges, judge_options=judge_options)
    except KeyboardInterrupt:
        return interrupted("the metrics written so far", args.run_dir)
    except ValueError as err:
        raise CliError(str(err)) from None
    return _outcome(result, args.run_dir)


def _outcome(result, run_dir) -> int:
    if result.summary is None:  # not the main process
        return EXIT_OK
    if result.failed:
        print(f"{result.failed} image(s) failed; see {Path(run_dir) / 'summary.md'}", file=sys.stderr)
        return EXIT_FAILURES
    return EXIT_OK
