"""Command-line interface: ``contrastive-diffusers`` / ``cdiff`` / ``python -m contrastive_diffusers``.

Subcommands (each is a ``add_<name>_parser`` function that builds its options and a
``run_<name>`` function that does the work, so ``train``, ``bench`` and ``score`` can join
the same way):

- ``generate``: images for prompts x seeds x guidance methods, plus attention heatmaps and
  a ``settings.json`` describing the run.

Exit codes: 0 success, 2 bad input (unknown method, word not in the prompt, model not
found, ...), 130 interrupted.

torch and diffusers are imported inside the functions that need them, so that ``--help``
and ``--version`` answer at once.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from ._compat import dtype_kwarg

PROG = "contrastive-diffusers"
TINY_MODELS = {"tiny-sd1": "sd1", "tiny-sd2": "sd2", "tiny-sdxl": "sdxl"}
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
    except CliError as err:
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
        "--model",
        default="tiny-sd1",
        metavar="MODEL",
        help="hub id or local pipeline folder, or tiny-sd1 / tiny-sd2 / tiny-sdxl (random weights, "
        "offline; they draw noise and only exercise the machinery). Default: %(default)s",
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
        "--token-groups",
        default="auto",
        metavar="SPEC",
        help='objects to guide: auto, "red car|blue bench", or JSON (see below). Default: auto',
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
        help="size of the attention maps the guidance loss reads. Default: image size / 32",
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
    p.add_argument(
        "--output-dir",
        type=Path,
        metavar="DIR",
        help="where images and settings.json go. Default: outputs/generate-<timestamp>",
    )
    p.add_argument("--no-heatmaps", action="store_true", help="do not save attention heatmaps")
    p.add_argument("--quiet", action="store_true", help="no progress bars or summary table")
    p.set_defaults(run=run_generate)
    return p


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


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CliError(f"--device {name}: CUDA is not available here (torch {torch.__version__}); use --device cpu")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise CliError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
    if name == "mps" and not torch.backends.mps.is_available():
        raise CliError("--device mps: MPS is not available here; use --device cpu")
    return name


def resolve_dtype(name: str | None, device: str):
    """(torch dtype, its name); half precision by default only on CUDA, where it is fast and safe."""
    import torch

    name = name or ("float16" if device.startswith("cuda") else "float32")
    return getattr(torch, name), name


def _looks_like_path(model: str) -> bool:
    # Hub ids are "name" or "namespace/name"; anything else is meant as a folder.
    return os.path.isabs(model) or model.startswith((".", "~")) or "\\" in model or model.count("/") > 1


@contextmanager
def _diffusers_errors_only():
    """Silence diffusers' warnings for a moment: ``from_pipe`` casts every model, and each cast
    warns about "modules that should be kept in float32: []" even when there are none."""
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(level)


def load_pretrained(model: str, dtype):
    """A stock diffusers pipeline from the hub or a folder; CliError when it cannot be found."""
    from diffusers import DiffusionPipeline

    folder = os.path.expanduser(model)
    if _looks_like_path(model) and not os.path.isdir(folder):
        raise CliError(f"model folder {model!r} does not exist")
    source = folder if os.path.isdir(folder) else model
    try:
        return DiffusionPipeline.from_pretrained(source, **dtype_kwarg(dtype))
    except (OSError, ValueError) as err:  # missing files, unknown or malformed hub id
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CliError(f"cannot load model {model!r}: {first_line}") from None


def to_guided(pipe, dtype):
    """The guided pipeline sharing ``pipe``'s components, in ``dtype``."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from .pipelines import GuidedStableDiffusionPipeline, GuidedStableDiffusionXLPipeline

    if isinstance(pipe, StableDiffusionXLPipeline):
        guided_class = GuidedStableDiffusionXLPipeline
    elif isinstance(pipe, StableDiffusionPipeline):
        guided_class = GuidedStableDiffusionPipeline
    else:
        raise CliError(
            f"the model loads as {type(pipe).__name__}; guidance supports StableDiffusionPipeline "
            "(SD 1.x / 2.x) and StableDiffusionXLPipeline models"
        )
    # The dtype must be passed: without it diffusers 0.42's from_pipe casts everything to float32.
    with _diffusers_errors_only():
        return guided_class.from_pipe(pipe, **dtype_kwarg(dtype))


def load_pipeline(model: str, device: str, dtype, quiet: bool):
    """The guided pipeline for ``model`` (a tiny kind, a hub id or a folder) on ``device``."""
    if model in TINY_MODELS:
        from .testing import tiny_pipeline

        stock = tiny_pipeline(TINY_MODELS[model])  # float32; to_guided casts it
    else:
        stock = load_pretrained(model, dtype)
    # Cast before moving, so a half-precision model never sits on the device in float32.
    pipe = to_guided(stock, dtype).to(device)
    pipe.set_progress_bar_config(disable=quiet)
    return pipe


def is_sdxl(pipe) -> bool:
    from diffusers import StableDiffusionXLPipeline

    return isinstance(pipe, StableDiffusionXLPipeline)


def default_size(pipe) -> tuple[int, int]:
    """The pipeline's own default (height, width), as its ``__call__`` would pick."""
    if is_sdxl(pipe):
        side = pipe.default_sample_size * pipe.vae_scale_factor
    else:
        side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    return side, side


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


def build_methods(names: Sequence[str]) -> dict:
    """``{name: GuidanceMethod or None}`` in the given order, duplicates dropped."""
    from .guidance.methods import get_method

    return {name: (None if name == "none" else get_method(name)) for name in dict.fromkeys(names)}


def default_output_dir() -> Path:
    """``outputs/generate-<timestamp>``, with a suffix if a run in the same second took it."""
    base = Path("outputs") / time.strftime("generate-%Y%m%d-%H%M%S")
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
    import torch

    method = run.methods[job.method]
    # A CPU generator draws the same initial noise on every device, so a seed means one image.
    generator = torch.Generator(device="cpu").manual_seed(job.seed)
    kwargs = dict(run.options, generator=generator, output_type="pil")
    negative = kwargs.pop("negative_prompt")
    if method is not None:
        kwargs.update(
            guidance=method,
            token_groups=run.specs[job.prompt_index],
            attn_res=run.attn_res,
            return_attention_maps=run.heatmaps,
        )
    # Prompt and negative prompt as one-item lists: diffusers wants both of the same type, and
    # the guided path turns the prompt into a list.
    return run.pipe([job.prompt], negative_prompt=[negative] if negative is not None else None, **kwargs)


def save_heatmaps(output, path: Path) -> bool:
    """Heatmaps of the last guided step; False when there are none (no step was guided)."""
    from .guidance.visualize import save_output_heatmaps

    if not output.attention_maps:
        return False
    save_output_heatmaps(output, path)
    return True


def guidance_summary(records) -> dict:
    """Totals of what guidance did for one image (a batch of one)."""
    return {
        "guided_steps": len(records),
        "updates": int(sum(sum(r.updated) for r in records)),
        "refinement_iterations": int(sum(sum(r.refinement_iterations) for r in records)),
        "skipped_nonfinite": int(sum(sum(r.skipped_nonfinite) for r in records)),
        "first_step_loss": float(records[0].loss[0]) if records else None,
    }


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


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: tuples to lists, dict keys to str, scalars to Python."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/Infinity
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Path):
        return value.as_posix()
    if hasattr(value, "item"):  # numpy / torch scalars
        try:
            return jsonable(value.item())
        except (TypeError, ValueError, RuntimeError):
            pass
    return str(value)


def groups_record(groups) -> list[dict]:
    return [
        {"words": list(g.words), "word_positions": [list(p) for p in g.word_positions], "positions": list(g.positions)}
        for g in groups
    ]


def versions() -> dict:
    import diffusers
    import torch
    import transformers

    return {
        "contrastive_diffusers": __version__,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
    }


def write_json_atomic(path: Path, data: dict) -> None:
    """Write then rename, so a reader or an interruption never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(jsonable(data), f, indent=2, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    """Pipeline arguments shared by every method, with the model's defaults resolved."""
    default_h, default_w = default_size(pipe)
    scale = args.guidance_scale
    return {
        "height": args.height or default_h,
        "width": args.width or default_w,
        "num_inference_steps": args.steps,
        "guidance_scale": scale if scale is not None else (5.0 if is_sdxl(pipe) else 7.5),
        "negative_prompt": args.negative_prompt,
    }


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
