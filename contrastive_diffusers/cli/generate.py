"""The ``generate`` command: images for prompts x seeds x guidance methods, with attention
heatmaps and a ``settings.json`` describing the run (updated after every image)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ..atomic_io import write_json_atomic
from ..models.loading import load_pipeline, resolve_device, resolve_dtype
from ..models.schedulers import use_scheduler
from ..records import versions
from ..runs import (
    ImageRun,
    build_methods,
    check_map_settings,
    generation_options,
    groups_record,
    inapplicable_methods,
    make_image,
    resolve_token_groups,
)
from .common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_run_arguments,
    check_writable,
    default_output_dir,
    normalize_run_args,
    output_folder,
)

# ============================================================================ generate: options

GENERATE_EPILOG = """\
token groups (--token-groups):
  auto                        one group per object, its attribute words then its noun,
                              found by the built-in noun-phrase parser (default)
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
  embedded-mmdit                 the same world drawn by an SD3-format (MMDiT) pipeline
  tiny-sd1, tiny-sd2, tiny-sdxl, offline tiny pipelines with RANDOM weights: they draw
  tiny-sd3, tiny-sd35,           noise and only exercise the machinery (tests, demos).
  tiny-flux, tiny-flux-schnell
  a hub id or a local folder     loaded with diffusers' DiffusionPipeline.from_pretrained;
                                 Stable Diffusion 1.x/2.x, SDXL, SD3/3.5 and Flux.1
                                 pipelines are supported.

outputs (--output-dir):
  <method>/<prompt-index>-<seed>.png              the image (prompt index from 0)
  <method>/<prompt-index>-<seed>-attention.png    last guided step's maps, one tile per word
  settings.json                                   the run's settings and per-image results

Put the options after the prompts: --seeds takes every number that follows it (or
end a --seeds list with --, and put only prompts after that --).

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
    add_run_arguments(p, named_methods_refuse=True)
    p.add_argument(
        "--output-dir",
        type=output_folder,
        metavar="DIR",
        help="where images and settings.json go: a new folder, or one without an earlier run's images. "
        "Default: outputs/generate-<timestamp>",
    )
    # after "--" every word is a prompt: an option there would be drawn as one (check_prompts)
    p.set_defaults(run=run_generate, option_strings=frozenset(s for a in p._actions for s in a.option_strings))
    return p


# ============================================================================ generate: setup


@dataclass(frozen=True)
class Job:
    """One image to make."""

    method: str  # canonical name, "none" for plain generation
    prompt_index: int
    prompt: str
    seed: int
    token_groups: object  # the prompt's resolved TokenGroups (None for plain generation)

    @property
    def stem(self) -> str:
        return f"{self.method}/{self.prompt_index}-{self.seed}"


def parse_token_groups(spec: str, num_prompts: int) -> list:
    """``--token-groups`` as one group spec per prompt, in the form the pipelines accept."""
    spec = spec.strip()
    if spec.lower() in ("auto", '"auto"'):  # also as JSON
        return ["auto"] * num_prompts
    if spec.startswith("["):
        return _json_token_groups(spec, num_prompts)
    groups = [[_word_or_position(word) for word in part.split()] for part in spec.split("|")]
    if any(not group for group in groups):
        raise CliError(f"--token-groups {spec!r} has an empty group (check the '|' separators)")
    return [groups] * num_prompts


def _json_token_groups(spec: str, num_prompts: int) -> list:
    from ..guidance.tokens import is_per_prompt  # the library's rule; imported here to keep --help free of torch

    try:
        value = json.loads(spec)
    except json.JSONDecodeError as err:
        raise CliError(f"--token-groups is not valid JSON ({err.msg} at character {err.pos}): {spec}") from None
    if not isinstance(value, list) or not value:
        raise CliError("--token-groups JSON must be a non-empty list of groups, or one list per prompt")
    if not is_per_prompt(value):
        return [value] * num_prompts
    if len(value) != num_prompts:
        raise CliError(f"--token-groups JSON gives {len(value)} group lists for {num_prompts} prompt(s)")
    return value


def _word_or_position(word: str):
    return int(word) if re.fullmatch(r"[+-]?\d+", word) else word


def resolve_prompt_groups(pipe, prompts: list[str], specs: list, methods: dict,
                          skipped: dict | None = None, text_sequence: str | None = None) -> list | None:
    """Each prompt's resolved TokenGroups, checked against every guided method up front so
    that a bad group fails (``ValueError``) before any image is made. ``None`` when nothing
    is guided. With a ``skipped`` dict, a method that cannot guide a prompt (CONFORM with one
    object) is noted there as ``{(method, prompt index): why}`` instead of refusing the run."""
    from ..guidance.tokens import NoObjectsError  # here: the guidance package imports torch (--help stays fast)

    if all(m is None for m in methods.values()):
        if any(spec != "auto" for spec in specs):
            raise ValueError("--token-groups are read only by guided methods, and no method here guides; "
                             "drop them, or add a method (--method none,conform).")
        return None
    resolved = []
    for index, (prompt, spec) in enumerate(zip(prompts, specs, strict=True)):
        try:
            groups = resolve_token_groups(pipe, prompt, spec, text_sequence)
        except NoObjectsError as err:
            if skipped is None:  # methods the user named refuse it
                raise
            # the parser found nothing to guide: the default methods draw the prompt plainly
            skipped.update({(name, index): str(err) for name, method in methods.items() if method is not None})
            resolved.append(None)
            continue
        problems = inapplicable_methods(groups, prompt, methods, spec)
        if problems and skipped is None:
            raise ValueError(next(iter(problems.values())))
        for name, why in problems.items():
            skipped[(name, index)] = why
        resolved.append(groups)
    return resolved


# ============================================================================ generate: one image


def run_job(run: ImageRun, job: Job) -> dict:
    """Generate, save and describe one image."""
    made = make_image(run, job.method, job.prompt, job.seed, job.token_groups, job.stem)
    return {
        "method": job.method,
        "prompt_index": job.prompt_index,
        "prompt": job.prompt,
        "seed": job.seed,
        "image": made.image,
        "attention": made.attention,
        "seconds": made.seconds,
        "nsfw_content_detected": made.nsfw_content_detected,
        "guidance": made.guidance,
        "nonfinite": made.nonfinite,
    }


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


def initial_settings(args, run: ImageRun, device: str, dtype_name: str, specs: list, resolved) -> dict:
    return {
        "argv": args.argv,
        "args": {k: v for k, v in vars(args).items() if k not in ("run", "argv", "option_strings")},
        "model": args.model,
        "pipeline": type(run.pipe).__name__,
        "scheduler": type(run.pipe.scheduler).__name__,
        "device": device,
        "dtype": dtype_name,
        "output_dir": str(run.out_dir.resolve()),
        "versions": versions(),
        "generation": {**run.options, "attn_res": run.attn_res},
        "methods": {name: (m.config() if m is not None else None) for name, m in run.methods.items()},
        "prompts": list(args.prompt),
        "seeds": args.seeds,
        "token_group_specs": specs,
        # per prompt; None where nothing guides it (a prompt the default methods draw plainly)
        "token_groups": None if resolved is None else [g and groups_record(g) for g in resolved],
        "status": "running",
        "skipped": [],  # (method, prompt) pairs the default methods could not guide
        "images": [],
    }


def run_jobs(run: ImageRun, jobs: list[Job], settings: dict, settings_path: Path) -> int:
    """Make every image, recording each in settings.json as soon as it exists."""
    status = EXIT_USAGE
    unguided: set[str] = set()  # methods already warned about
    try:
        for job in jobs:
            settings["images"].append(record := run_job(run, job))
            write_json_atomic(settings_path, settings)  # an interrupted run keeps what finished
            if record["nonfinite"]:
                print(f"warning: {record['image']} decoded to NaN or infinite pixels and was written black; in float16 "
                      "try --dtype bfloat16 or float32, with guidance a smaller step size.", file=sys.stderr)
            if record["guidance"] is not None and not record["guidance"]["guided_steps"] and job.method not in unguided:
                unguided.add(job.method)
                print(f"warning: {job.method} guided no step at {run.options['num_inference_steps']} steps (its "
                      "schedule ends before the first one): its images equal plain generation; raise --steps.",
                      file=sys.stderr)
        settings["status"], status = "finished", EXIT_OK
    except KeyboardInterrupt:
        settings["status"], status = "interrupted", EXIT_INTERRUPTED
        print(f"interrupted after {len(settings['images'])} of {len(jobs)} images", file=sys.stderr)
    except ValueError as err:  # the pipeline rejecting the user's input (size, attn_res, ...)
        settings["error"] = str(err)
        print(f"error: {err}", file=sys.stderr)
    except OSError as err:  # the output folder (not writable, a file in the way, the disk full) or a file read
        settings["error"] = f"{err.filename or run.out_dir}: {err.strerror or err}"
        print(f"error: {settings['error']}", file=sys.stderr)
    finally:  # also on unexpected errors, whose traceback then follows
        if settings["status"] == "running":
            settings["status"] = "failed"
        try:
            write_json_atomic(settings_path, settings)
        except OSError as err:  # the disk full or the folder gone: the images written stay
            print(f"error: cannot update {settings_path}: {err.strerror or err}", file=sys.stderr)
            status = EXIT_USAGE if status == EXIT_OK else status
    return status


def check_output_dir(out_dir: Path | None) -> None:
    """A given ``--output-dir`` must be new or hold no earlier run's images: they are named by
    prompt index and seed, so a second run there would overwrite the first one's. A file is
    written there (and the folders made for it removed again) before the model loads, so that
    a folder that cannot be written fails at once."""
    if out_dir is None:
        return
    out_dir = Path(os.path.normpath(os.path.abspath(out_dir)))  # "new/../out": the folders made are removed
    # here: eval's package imports torch (--help stays fast)
    from ..eval.run_folder import holds_no_images, is_generate_settings, other_command_in

    problem = other_command_in(out_dir, "generate")
    if problem:
        raise CliError(problem)
    if (out_dir / "settings.json").exists() and not holds_no_images(out_dir / "settings.json"):
        held = ("a generate run (settings.json), whose images this run would overwrite"
                if is_generate_settings(out_dir / "settings.json")
                else "a settings.json that is not a generate run's, which this run would overwrite")
        raise CliError(
            f"--output-dir {out_dir} already holds {held}; give another folder, or leave --output-dir out for a "
            "fresh outputs/generate-<time>."
        )
    check_writable(out_dir)


def check_prompts(prompts: list[str], option_strings) -> None:
    """A usage error for a prompt that is one of the command's options, e.g. ``--output-dir``
    after ``--``, which argparse hands over as a prompt."""
    for prompt in prompts:
        word = (prompt.split() or [""])[0].split("=")[0]
        # argparse also takes a long option's unique prefix (--output for --output-dir)
        if word in option_strings or (word.startswith("--") and len(word) > 2
                                      and any(o.startswith(word) for o in option_strings)):
            raise CliError(
                f"the prompt {prompt!r} is an option of this command: after '--' every word is a prompt; put the "
                "options before the '--' (e.g. --output-dir DIR --seeds 0 1 -- \"a red car\")"
            )


def run_generate(args: argparse.Namespace) -> int:
    normalize_run_args(args)
    prompts = list(args.prompt)
    check_prompts(prompts, getattr(args, "option_strings", ()))
    device = resolve_device(args.device)
    dtype, dtype_name = resolve_dtype(args.dtype, device)
    try:  # two method files with one name: a usage error, before the model loads
        methods = build_methods(args.method)
    except ValueError as err:
        raise CliError(str(err)) from None
    specs = parse_token_groups(args.token_groups, len(prompts))
    check_output_dir(args.output_dir)
    pipe = load_pipeline(args.model, device, dtype, args.quiet)
    try:  # a bad scheduler, bad groups or an unused negative prompt fail here, before the output folder exists
        use_scheduler(pipe, args.scheduler, guided=any(method is not None for method in methods.values()))
        # the default methods skip a prompt they cannot guide; methods the user named refuse it
        skipped = {} if args.default_methods else None
        options = generation_options(pipe, args.height, args.width, args.steps, args.guidance_scale,
                                     args.negative_prompt, args.true_cfg_scale, args.text_sequence)
        resolved = resolve_prompt_groups(pipe, prompts, specs, methods, skipped, args.text_sequence)
        check_map_settings(pipe, options, args.attn_res, methods)
    except ValueError as err:
        raise CliError(str(err)) from None

    run = ImageRun(
        pipe=pipe,
        methods=methods,
        options=options,
        attn_res=tuple(args.attn_res) if args.attn_res else None,
        heatmaps=not args.no_heatmaps,
        out_dir=args.output_dir or default_output_dir(),
    )
    settings_path = run.out_dir / "settings.json"
    settings = initial_settings(args, run, device, dtype_name, specs, resolved)
    try:
        run.out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(settings_path, settings)
    except OSError as err:
        raise CliError(f"cannot write to the output folder {run.out_dir}: {err.strerror or err}") from None

    for (name, index), why in (skipped or {}).items():
        settings["skipped"].append({"method": name, "prompt_index": index, "reason": why})
        print(f"{name} skipped for prompt {index} ({_shorten(prompts[index], 32)!r}): {why}", file=sys.stderr)
    jobs = [
        Job(name, i, prompt, seed, resolved[i] if resolved is not None else None)
        for name in methods
        for i, prompt in enumerate(prompts)
        for seed in args.seeds
        if (name, i) not in (skipped or {})
    ]
    status = run_jobs(run, jobs, settings, settings_path)
    if not args.quiet and settings["images"]:
        print_summary(settings["images"], run.out_dir)
    return status
