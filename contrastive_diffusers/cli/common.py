"""What the subcommands share: exit codes, the user-error exception, argument types, the
options of a run (model, methods, seeds, sampling, device) and the default output folder.

torch and diffusers are imported inside the functions that need them, so that ``--help``
and ``--version`` answer at once.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from ..models.loading import DEVICE_PATTERN

PROG = "contrastive-diffusers"
DEFAULT_METHODS = ("none", "conform")
DTYPES = ("float32", "float16", "bfloat16")

EXIT_OK, EXIT_USAGE, EXIT_INTERRUPTED = 0, 2, 130
EXIT_FAILURES = 1  # a bench / score run finished, but some images failed (listed in the reports)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@contextmanager
def sigterm_as_interrupt():
    """SIGTERM (``kill``, ``timeout``, a batch scheduler) stops a command as Ctrl-C does, so
    that its run folder says "interrupted" and keeps what finished instead of "running"
    forever. Only in the main thread, where Python runs signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class CliError(Exception):
    """A problem with the user's input: printed as ``error: <message>``, exit code 2."""


def check_writable(folder, flag: str = "--output-dir") -> None:
    """Refuse an output folder that cannot be written, before any model loads."""
    from ..atomic_io import unwritable_folder_problem

    problem = unwritable_folder_problem(folder)
    if problem:
        raise CliError(f"cannot write to {flag} {folder}: {problem}")


def interrupted(what: str, output_dir, given: bool = True) -> int:
    """Say what a stopped command keeps and how to go on (naming the folder it chose, since the
    same command again would choose a new one); the exit code."""
    again = "run the same command again" if given else f"run the same command with --output-dir {output_dir}"
    print(f"interrupted: {what} are kept in {output_dir}; {again} to go on", file=sys.stderr)
    return EXIT_INTERRUPTED


# ============================================================================ argument types


def method_list(text: str) -> list[str]:
    """``--method`` value: comma-separated method names, canonicalised (``ae`` -> ``attend_and_excite``)."""
    from ..guidance.methods import ALIASES, METHODS

    from ..runs import is_method_file, load_method_file

    choices = ("none", *METHODS)
    names = []
    for raw in text.split(","):
        name = raw.strip().lower()
        if not name:
            continue
        if is_method_file(name):  # a method config file (tune's output): named by its stem in run folders
            try:
                load_method_file(raw.strip())
            except ValueError as err:
                raise argparse.ArgumentTypeError(str(err)) from None
            names.append(raw.strip())
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


#: The most seeds one ``A-B`` range may name.
MAX_SEED_RANGE = 100_000


def int_list(text: str) -> list[int]:
    """``--seeds`` value: one integer, several separated by commas, or an inclusive range ``A-B``
    (``42-51``: the ten seeds a benchmark's protocol names)."""
    values = []
    try:
        for part in (p.strip() for p in text.split(",")):
            first, dash, last = part.partition("-")
            if dash and first:  # "A-B"; a leading "-" is a negative number
                if int(last) < int(first):
                    raise argparse.ArgumentTypeError(f"seed range {part!r} runs backwards; write it low-high")
                if int(last) - int(first) >= MAX_SEED_RANGE:  # a typo (0-100000000) would fill the memory first
                    raise argparse.ArgumentTypeError(
                        f"seed range {part!r} names {int(last) - int(first) + 1:,} seeds; at most {MAX_SEED_RANGE:,} "
                        "per range (one image each per method and prompt)")
                values.extend(range(int(first), int(last) + 1))
            elif part:
                values.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be integers or ranges such as 0-9, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"no seed in {text!r}; give integers or ranges such as 0-9")
    outside = [v for v in values if not -(2**63) <= v < 2**64]  # what torch.Generator.manual_seed takes
    if outside:
        raise argparse.ArgumentTypeError(f"seed {outside[0]} is out of range; seeds lie in [-2**63, 2**64)")
    return values


def output_folder(text: str) -> Path:
    """``--output-dir`` value: a folder, or one that can be made (no file in the way)."""
    from ..atomic_io import folder_problem

    problem = folder_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(f"{problem}; give a folder")
    return Path(text)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def device_name(text: str) -> str:
    if not DEVICE_PATTERN.match(text):
        raise argparse.ArgumentTypeError(f"device must be auto, cpu, cuda, cuda:N or mps, got {text!r}")
    return text


def add_run_arguments(p: argparse.ArgumentParser, named_methods_refuse: bool = False) -> None:
    """Options shared by ``generate`` and ``bench``: model, methods, seeds, sampling, device, output.
    ``named_methods_refuse``: a method named with --method refuses a prompt it cannot guide
    (generate); else the help says it is recorded as not applicable (bench)."""
    p.add_argument(
        "--model",
        default="embedded",
        metavar="MODEL",
        help="embedded (the shipped ShapesWorld model: coloured shapes, 32 px), embedded-mmdit (its SD3-format "
        "sibling), a hub id or local "
        "pipeline folder, or tiny-sd1 / -sd2 / -sdxl / -sd3 / -sd35 / -flux / -flux-schnell (random weights, offline; they draw noise "
        "and only exercise the machinery). Default: %(default)s",
    )
    p.add_argument(
        "--method",
        action="extend",
        type=method_list,
        metavar="NAME[,NAME...]",
        help="guidance methods, comma-separated or repeated: none, attend_and_excite (ae), conform, "
        "ebama, syngen, or a method config FILE.json (as `tune` writes it; named by the file's stem in "
        f"the output folder). Default: {','.join(DEFAULT_METHODS)}. "
        + ("A default method skips a prompt it cannot guide (CONFORM needs two objects); methods given here "
           "refuse such a prompt instead" if named_methods_refuse else
           "A method records a prompt it cannot guide (CONFORM needs two objects) as not applicable"),
    )
    p.add_argument(
        "--seeds",
        nargs="+",
        action="extend",
        type=int_list,
        metavar="SEED",
        help="random seeds (space- or comma-separated, or ranges such as 0-9). Default: 0",
    )
    p.add_argument("--steps", type=positive_int, default=50, metavar="N", help="denoising steps. Default: %(default)s")
    p.add_argument(
        "--guidance-scale",
        type=float,
        metavar="SCALE",
        help="classifier-free guidance scale (Flux: its distilled guidance). Default: the stock pipeline's "
        "(SD 1.x/2.x 7.5, SDXL 5.0, SD3 7.0, Flux 3.5)",
    )
    for side in ("height", "width"):
        p.add_argument(f"--{side}", type=positive_int, metavar="PX", help=f"image {side} in pixels. Default: the model's")
    p.add_argument(
        "--attn-res",
        nargs=2,
        type=positive_int,
        metavar=("H", "W"),
        help="size of the attention maps the guidance loss reads. Default: latent size / 4 (image / 32 on SD)",
    )
    p.add_argument("--negative-prompt", metavar="TEXT", help="negative prompt, used for every prompt (Flux: with --true-cfg-scale)")
    p.add_argument(
        "--true-cfg-scale",
        type=float,
        metavar="SCALE",
        help="FLUX.1 only: true classifier-free guidance against --negative-prompt at this scale (> 1; two "
        "transformer passes per step), diffusers' true_cfg_scale. Default: off",
    )
    p.add_argument(
        "--text-sequence",
        choices=("clip", "t5"),
        help="SD3 / SD3.5 only: the part of the joint text the guidance loss reads, CLIP's tokens or T5's "
        "(prompts longer than CLIP's 75 tokens need t5). Default: clip",
    )
    p.add_argument("--scheduler", metavar="CLASS",
                   help="a diffusers scheduler class to sample with instead of the model's own, built from its "
                   "config (e.g. DDIMScheduler, as T2I-CompBench draws). Default: the model's")
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        help="weights' dtype. Default: float16 on cuda, float32 otherwise",
    )
    p.add_argument(
        "--device",
        type=device_name,
        default="auto",
        metavar="{auto,cpu,cuda,cuda:N,mps}",
        help="where to run; auto picks cuda when available, else cpu. Default: %(default)s",
    )
    p.add_argument("--no-heatmaps", action="store_true", help="do not save attention heatmaps")
    p.add_argument("--quiet", action="store_true", help="no progress bars or summary table")


def normalize_run_args(args: argparse.Namespace) -> None:
    """Fill in list defaults here: argparse's "extend" would add the user's values to a default list."""
    args.default_methods = not args.method
    args.method = list(dict.fromkeys(args.method or DEFAULT_METHODS))
    # --seeds collects one list per value ("0 1" and "0,1" both work); flatten, keep order.
    args.seeds = list(dict.fromkeys(seed for values in (args.seeds or [[0]]) for seed in values))


def default_output_dir(command: str = "generate") -> Path:
    """``outputs/<command>-<timestamp>``, with a suffix if a run in the same second took it."""
    base = Path("outputs") / time.strftime(f"{command}-%Y%m%d-%H%M%S")
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path

