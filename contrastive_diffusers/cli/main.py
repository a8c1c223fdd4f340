"""The entry point: ``contrastive-diffusers`` / ``cdiff`` / ``python -m contrastive_diffusers``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from .. import __version__
from ..distributed import is_main_launched_process
from ..models.loading import LoadError
from ..training.args import nonfinite_options
from ..training.cli import add_train_parser
from .bench import add_bench_parser, add_score_parser
from .common import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, PROG, CliError, sigterm_as_interrupt
from .generate import add_generate_parser
from .tune import add_tune_parser


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
    nonfinite = nonfinite_options(args, separator="-")
    if nonfinite:
        print(f"error: {', '.join(nonfinite)}: give finite numbers", file=sys.stderr)
        return EXIT_USAGE
    args.argv = argv
    try:
        with sigterm_as_interrupt():
            return args.run(args)
    except (CliError, LoadError) as err:
        if is_main_launched_process():  # every process of a launch refuses the same input: say it once
            print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # before any image (a run in progress handles its own)
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_prog_name(),
        description="Attention-map guidance (Attend-and-Excite, CONFORM, EBAMA, SynGen) for "
        "Stable Diffusion 1.x/2.x, SDXL, SD3/3.5 and FLUX.1, with benchmarks, tuning and training.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    add_generate_parser(subparsers)
    add_bench_parser(subparsers)
    add_score_parser(subparsers)
    add_tune_parser(subparsers)
    add_train_parser(subparsers)
    return parser


def _prog_name() -> str:
    """The command as invoked, for usage lines; the package's command name when run from Python."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    if name == "__main__.py":
        return "python -m contrastive_diffusers"
    return name if name in ("cdiff", PROG) else PROG

