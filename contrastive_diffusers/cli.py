"""Command-line interface: ``contrastive-diffusers`` / ``cdiff`` / ``python -m contrastive_diffusers``.

Subcommands (each is a ``add_<name>_parser`` function that builds its options and a
``run_<name>`` function that does the work, so ``train``, ``bench`` and ``score`` can join
the same way):

- ``generate``: images for prompts x seeds x guidance methods, plus attention heatmaps and
  a ``settings.json`` describing the run.
- ``bench`` / ``score`` (in :mod:`.cli_bench`): a benchmark over a prompt set with CLIP
  metrics and reports, and scoring of an existing benchmark folder.
- ``train <method>`` (in :mod:`.training.cli`): contrastive prompt learning (ReVersion, MCPL,
  textual inversion); the method's own options follow.

Exit codes: 0 success, 1 a bench/score run finished with failed images, 2 bad input (unknown method, word not in the prompt, model not
found, ...), 130 interrupted.

torch and diffusers are imported inside the functions that need them, so that ``--help``
and ``--version`` answer at once.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .atomic_io import jsonable, write_json_atomic  # noqa: F401 (jsonable: part of the CLI module's API)
from . import runs
from .loading import LoadError, load_pipeline, resolve_device, resolve_dtype
from .runs import build_methods, guidance_summary, versions

PROG = "contrastive-diffusers"
DEFAULT_METHODS = ("none", "conform")
DTYPES = ("float32", "float16", "bfloat16")
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")

EXIT_OK, EXIT_USAGE, EXIT_INTERRUPTED = 0, 2, 130


class CliError(Exception):
    """A problem with the user's input: printed as ``error: <message>``, exit code 2."""


# ============================================================================ entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors: return the code instead of exiting
        return EXIT_OK if exit_.code is None else exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    if getattr(args, "run", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    args.argv = argv
    try:
        return args.run(args)
    except (CliError, LoadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # before any image (a run in progress handles its own)
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_prog_name(),
        description="Attention-map guidance (Attend-and-Excite, CONFORM, EBAMA, SynGen) for "
        "Stable Diffusion and SDXL.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    add_generate_parser(subparsers)
    from .cli_bench import add_bench_parser, add_score_parser  # it builds on this module
    from .training.cli import add_train_parser

    add_bench_parser(subparsers)
    add_score_parser(subparsers)
    add_train_parser(subparsers)
    return parser


def _prog_name() -> str:
    """The command as invoked, for usage lines; the package's command name when run from Python."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    if name == "__main__.py":
        return "python -m contrastive_diffusers"
    return name if name in ("cdiff", PROG) else PROG


# ============================================================================ argument types


def _method_list(text: str) -> list[str]:
    """``--method`` value: comma-separated method names, canonicalised (``ae`` -> ``attend_and_excite``)."""
    from .guidance.methods import ALIASES, METHODS

    choices = ("none", *METHODS)
    names = []
    for raw in text.split(","):
        name = raw.strip().lower()
        if not name:
            continue
        name = ALIASES.get(name, name)
        if name not in choices:
            raise argparse.ArgumentTypeError(
                f"unknown method {raw.strip()!r}; choose from {', '.join(choices)} (or 'ae')"
            )
        names.append(name)
    if not names:
        raise argparse.ArgumentTypeError("no method given")
    return names


def _int_list(text: str) -> list[int]:
    """``--seeds`` value: one integer, or several separated by commas."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be integers, got {text!r}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _device_name(text: str) -> str:
    if not _DEVICE_PATTERN.match(text):
        raise argparse.ArgumentTypeError(f"device must be auto, cpu, cuda, cuda:N or mps, got {text!r}")
    return text


# ============================================================================ generate: options

GENERATE_EPILOG = """\
token groups (--token-groups):
  auto                        split each prompt at "and", ",", "with", ... (default)
  "red car|blue bench"        groups separated by |, words by spaces; the noun comes last
  "2 3|blue bench"            integer words are token positions (1 = first prompt token)
  '[["red","car"],["blue","bench"]]'        the same as JSON
  '[[["red","car"]], "auto"]' JSON with one group list per prompt
  One spec applies to every prompt unless the JSON gives one list per prompt.

models (--model):
  embedded                       the default: a tiny pipeline trained on ShapesWorld (flat
                                 coloured circles, squares, triangles, diamonds, crosses;
                                 32 px), shipped with the package; prompts like
                                 "a red circle and a blue triangle"
  tiny-sd1, tiny-sd2, tiny-sdxl  offline tiny pipelines with RANDOM weights: they draw
                                 noise and only exercise the machinery (tests, demos).
  a hub id or a local folder     loaded with diffusers' DiffusionPipeline.from_pretrained;
                                 Stable Diffusion 1.x/2.x and SDXL pipelines are supported.

outputs (--output-dir):
  <method>/<prompt-index>-<seed>.png              the image (prompt index from 0)
  <method>/<prompt-index>-<seed>-attention.png    last guided step's maps, one tile per word
  settings.json                                   the run's settings and per-image results

Put the options after the prompts (or end a --seeds list with --): --seeds takes
every number that follows it.

example:
  contrastive-diffusers generate "a red car and a blue bench" --model stabilityai/stable-diffusion-2-1-base \\
      --method none,conform --seeds 0 1 2
"""


def add_generate_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "generate",
        help="generate images with and without attention-map guidance",
        description="Generate one image per prompt, seed and guidance method (the same seeds for\n"
        "every method, so plain and guided images compare directly), with attention heatmaps\n"
        "and a settings.json.",
        epilog=GENERATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("prompt", nargs="+", help="one or more prompts (quote each)")
    p.add_argument(
        "--token-groups",
        default="auto",
        metavar="SPEC",
        help='objects to guide: auto, "red car|blue bench", or JSON (see below). Default: auto',
    )
    add_run_arguments(p)
    p.add_argument(
        "--output-dir",
        type=Path,
        metavar="DIR",
        help="where images and settings.json go. Default: outputs/generate-<timestamp>",
    )
    p.set_defaults(run=run_generate)
    return p


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by ``generate`` and ``bench``: model, methods, seeds, sampling, device, output."""
    p.add_argument(
        "--model",
        default="embedded",
        metavar="MODEL",
        help="embedded (the shipped ShapesWorld model: coloured shapes, 32 px), a hub id or local "
        "pipeline folder, or tiny-sd1 / tiny-sd2 / tiny-sdxl (random weights, offline; they draw noise "
        "and only exercise the machinery). Default: %(default)s",
    )
    p.add_argument(
        "--method",
        action="extend",
        type=_method_list,
        metavar="NAME[,NAME...]",
        help="guidance methods, comma-separated or repeated: none, attend_and_excite (ae), conform, "
        f"ebama, syngen. Default: {','.join(DEFAULT_METHODS)}",
    )
    p.add_argument(
        "--seeds",
        nargs="+",
        action="extend",
        type=_int_list,
        metavar="SEED",
        help="random seeds (space- or comma-separated). Default: 0",
    )
    p.add_argument("--steps", type=_positive_int, default=50, metavar="N", help="denoising steps. Default: %(default)s")
    p.add_argument(
        "--guidance-scale",
        type=float,
        metavar="SCALE",
        help="classifier-free guidance scale. Default: 7.5 for SD, 5.0 for SDXL",
    )
    for side in ("height", "width"):
        p.add_argument(f"--{side}", type=_positive_int, metavar="PX", help=f"image {side} in pixels. Default: the model's")
    p.add_argument(
        "--attn-res",
        nargs=2,
        type=_positive_int,
        metavar=("H", "W"),
        help="size of the attention maps the guidance loss reads. Default: latent size / 4 (image / 32 on SD)",
    )
    p.add_argument("--negative-prompt", metavar="TEXT", help="negative prompt, used for every prompt")
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        help="weights' dtype. Default: float16 on cuda, float32 otherwise",
    )
    p.add_argument(
        "--device",
        type=_device_name,
        default="auto",
        metavar="{auto,cpu,cuda,cuda:N,mps}",
        help="where to run; auto picks cuda when available, else cpu. Default: %(default)s",
    )
    p.add_argument("--no-heatmaps", action="store_true", help="do not save attention heatmaps")
    p.add_argument("--quiet", action="store_true", help="no progress bars or summary table")


# ============================================================================ generate: setup


@dataclass(frozen=True)
class Job:
    """One image to make."""

    method: str  # canonical name, "none" for plain generation
    prompt_index: int
    prompt: str
    seed: int

    @property
    def stem(self) -> str:
        return f"{self.method}/{self.prompt_index}-{self.seed}"


def parse_token_groups(spec: str, num_prompts: int) -> list:
    """``--token-groups`` as one group spec per prompt, in the form the pipelines accept."""
    spec = spec.strip()
    if spec == "auto":
        return ["auto"] * num_prompts
    if spec.startswith("["):
        return _json_token_groups(spec, num_prompts)
    groups = [[_word_or_position(word) for word in part.split()] for part in spec.split("|")]
    if any(not group for group in groups):
        raise CliError(f"--token-groups {spec!r} has an empty group (check the '|' separators)")
    return [groups] * num_prompts


def _json_token_groups(spec: str, num_prompts: int) -> list:
    try:
        value = json.loads(spec)
    except json.JSONDecodeError as err:
        raise CliError(f"--token-groups is not valid JSON ({err.msg} at character {err.pos}): {spec}") from None
    if not isinstance(value, list) or not value:
        raise CliError("--token-groups JSON must be a non-empty list of groups, or one list per prompt")
    if not _is_per_prompt(value):
        return [value] * num_prompts
    if len(value) != num_prompts:
        raise CliError(f"--token-groups JSON gives {len(value)} group lists for {num_prompts} prompt(s)")
    return value


def _is_per_prompt(value: list) -> bool:
    # The library's rule (tokens.resolve_batch_groups): one list per prompt nests a level
    # deeper than a group list, or holds "auto" entries.
    return any(
        entry == "auto" or (isinstance(entry, list) and entry and isinstance(entry[0], list)) for entry in value
    )


def _word_or_position(word: str):
    return int(word) if re.fullmatch(r"[+-]?\d+", word) else word


def resolve_prompt_groups(pipe, prompts: list[str], specs: list, methods: dict) -> list | None:
    """Each prompt's resolved TokenGroups, checked against every guided method up front so
    that a bad group fails before any image is made. ``None`` when nothing is guided."""
    from .guidance.tokens import resolve_groups

    guided = [m for m in methods.values() if m is not None]
    if not guided:
        return None
    tokenizer = getattr(pipe, "tokenizer", None) or getattr(pipe, "tokenizer_2", None)
    resolved = []
    for prompt, spec in zip(prompts, specs, strict=True):
        groups = resolve_groups(tokenizer, prompt, spec)
        for method in guided:
            method.validate_groups(groups, prompt)
        resolved.append(groups)
    return resolved


def default_output_dir(command: str = "generate") -> Path:
    """``outputs/<command>-<timestamp>``, with a suffix if a run in the same second took it."""
    base = Path("outputs") / time.strftime(f"{command}-%Y%m%d-%H%M%S")
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


# ============================================================================ generate: one image


@dataclass
class Run:
    """What every image of a ``generate`` run shares."""

    pipe: Any
    methods: dict  # name -> GuidanceMethod, or None for "none"
    specs: list  # token group spec per prompt
    options: dict  # pipeline arguments common to all methods
    attn_res: tuple[int, int] | None
    heatmaps: bool
    out_dir: Path


def generate_image(run: Run, job: Job):
    """The pipeline's output for one job."""
    method = run.methods[job.method]
    return runs.generate_image(
        run.pipe, job.prompt, job.seed, run.options, method, run.specs[job.prompt_index], run.attn_res, run.heatmaps
    )


def save_heatmaps(output, path: Path) -> bool:
    """Heatmaps of the last guided step; False when there are none (no step was guided)."""
    from .guidance.visualize import save_output_heatmaps

    if not output.attention_maps:
        return False
    save_output_heatmaps(output, path)
    return True


def run_job(run: Run, job: Job) -> dict:
    """Generate, save and describe one image."""
    guided = run.methods[job.method] is not None
    start = time.perf_counter()
    output = generate_image(run, job)
    seconds = time.perf_counter() - start
    image = output.images[0]
    image_path = run.out_dir / f"{job.stem}.png"
    image_path.parent.mkdir(parents=True, exist_ok=True)
    image.save(image_path)
    attention_path = run.out_dir / f"{job.stem}-attention.png"
    has_heatmap = guided and run.heatmaps and save_heatmaps(output, attention_path)
    nsfw = output.nsfw_content_detected
    return {
        "method": job.method,
        "prompt_index": job.prompt_index,
        "prompt": job.prompt,
        "seed": job.seed,
        "image": image_path.relative_to(run.out_dir).as_posix(),
        "attention": attention_path.relative_to(run.out_dir).as_posix() if has_heatmap else None,
        "seconds": round(seconds, 3),
        "nsfw_content_detected": bool(nsfw[0]) if nsfw else None,
        "guidance": guidance_summary(output.guidance_records or []) if guided else None,
    }


# ============================================================================ generate: settings.json


def groups_record(groups) -> list[dict]:
    return [
        {"words": list(g.words), "word_positions": [list(p) for p in g.word_positions], "positions": list(g.positions)}
        for g in groups
    ]


# ============================================================================ generate: output


def print_summary(records: list[dict], out_dir: Path) -> None:
    header = ("method", "prompt", "seed", "seconds", "file")
    rows = [
        (r["method"], _shorten(r["prompt"], 32), str(r["seed"]), f"{r['seconds']:.1f}", r["image"]) for r in records
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print(f"outputs in {out_dir} (settings.json describes the run)")


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


# ============================================================================ generate: the command


def normalize_generate_args(args: argparse.Namespace) -> None:
    """Fill in list defaults here: argparse's "extend" would add the user's values to a default list."""
    args.method = list(dict.fromkeys(args.method or DEFAULT_METHODS))
    # --seeds collects one list per value ("0 1" and "0,1" both work); flatten, keep order.
    args.seeds = list(dict.fromkeys(seed for values in (args.seeds or [[0]]) for seed in values))


def generation_options(args: argparse.Namespace, pipe) -> dict:
    return runs.generation_options(pipe, args.height, args.width, args.steps, args.guidance_scale, args.negative_prompt)


def initial_settings(args, run: Run, device: str, dtype_name: str, resolved) -> dict:
    return {
        "argv": args.argv,
        "args": {k: v for k, v in vars(args).items() if k not in ("run", "argv")},
        "model": args.model,
        "pipeline": type(run.pipe).__name__,
        "device": device,
        "dtype": dtype_name,
        "output_dir": str(run.out_dir.resolve()),
        "versions": versions(),
        "generation": {**run.options, "attn_res": run.attn_res},
        "methods": {name: (m.config() if m is not None else None) for name, m in run.methods.items()},
        "prompts": list(args.prompt),
        "seeds": args.seeds,
        "token_group_specs": run.specs,
        "token_groups": [groups_record(g) for g in resolved] if resolved is not None else None,
        "status": "running",
        "images": [],
    }


def run_jobs(run: Run, jobs: list[Job], settings: dict, settings_path: Path) -> int:
    """Make every image, recording each in settings.json as soon as it exists."""
    status = EXIT_USAGE
    try:
        for job in jobs:
            settings["images"].append(run_job(run, job))
            write_json_atomic(settings_path, settings)  # an interrupted run keeps what finished
        settings["status"], status = "finished", EXIT_OK
    except KeyboardInterrupt:
        settings["status"], status = "interrupted", EXIT_INTERRUPTED
        print(f"interrupted after {len(settings['images'])} of {len(jobs)} images", file=sys.stderr)
    except ValueError as err:  # the pipeline rejecting the user's input (size, attn_res, ...)
        settings["error"] = str(err)
        print(f"error: {err}", file=sys.stderr)
    finally:  # also on unexpected errors, whose traceback then follows
        if settings["status"] == "running":
            settings["status"] = "failed"
        write_json_atomic(settings_path, settings)
    return status


def run_generate(args: argparse.Namespace) -> int:
    normalize_generate_args(args)
    prompts = list(args.prompt)
    device = resolve_device(args.device)
    dtype, dtype_name = resolve_dtype(args.dtype, device)
    methods = build_methods(args.method)
    specs = parse_token_groups(args.token_groups, len(prompts))
    pipe = load_pipeline(args.model, device, dtype, args.quiet)
    try:  # bad groups fail here, before the output folder exists
        resolved = resolve_prompt_groups(pipe, prompts, specs, methods)
    except ValueError as err:
        raise CliError(str(err)) from None

    run = Run(
        pipe=pipe,
        methods=methods,
        specs=specs,
        options=generation_options(args, pipe),
        attn_res=tuple(args.attn_res) if args.attn_res else None,
        heatmaps=not args.no_heatmaps,
        out_dir=args.output_dir or default_output_dir(),
    )
    run.out_dir.mkdir(parents=True, exist_ok=True)
    settings_path = run.out_dir / "settings.json"
    settings = initial_settings(args, run, device, dtype_name, resolved)
    write_json_atomic(settings_path, settings)

    jobs = [Job(name, i, prompt, seed) for name in methods for i, prompt in enumerate(prompts) for seed in args.seeds]
    status = run_jobs(run, jobs, settings, settings_path)
    if not args.quiet and settings["images"]:
        print_summary(settings["images"], run.out_dir)
    return status
