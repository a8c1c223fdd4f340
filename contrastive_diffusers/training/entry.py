"""The body of every method's entry point (``python -m contrastive_diffusers.training.<method>``,
``accelerate launch -m ...``, ``contrastive-diffusers train <method>``)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from .args import parse_method_args
from .data import DataError
from .interrupt import TrainingInterrupted
from .loop import train
from .method import TrainingMethod


def run_main(method: TrainingMethod, argv: Sequence[str] | None, prog: str) -> int:
    """Parse, train, print where the output is. Data, model and checkpoint problems exit with
    code 2 and one ``error:`` line; a stop requested with Ctrl-C or SIGTERM saves a checkpoint
    and exits with the shell's code for the signal (130, 143)."""
    args = parse_method_args(method, argv, prog)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    try:
        result = train(args, method)
    except (DataError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrainingInterrupted as stopped:
        print(f"interrupted: {stopped}", file=sys.stderr)
        return stopped.exit_code
    except KeyboardInterrupt:
        print(
            "interrupted at once, without saving: --resume_from_checkpoint latest goes on from the last "
            "checkpoint, if there is one",
            file=sys.stderr,
        )
        return 130
    if result.files:
        print(method.result_message(result))
    return 0
