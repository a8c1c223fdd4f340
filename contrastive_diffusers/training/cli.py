"""The ``train`` subcommand: ``contrastive-diffusers train <method> [options]``.

``add_train_parser(subparsers)`` registers it on the package CLI; everything after the method
name is handed to that method's ``main`` (the same options as
``accelerate launch -m contrastive_diffusers.training.<method>``). The subcommand trains in
the current process; use ``accelerate launch -m ...`` for several processes or GPUs.
"""

from __future__ import annotations

import argparse
import importlib

#: Method name -> module under ``contrastive_diffusers.training``.
METHODS = {
    "reversion": "reversion",
    "mcpl": "mcpl",
    "textual_inversion": "textual_inversion",
    "evogen": "evogen",
    "dco": "dco",
}

EPILOG = """\
methods:
  reversion           a relation token <R> from exemplar images (ReVersion)
  mcpl                several concept tokens at once (MCPL: AttnMask, PromptCL, bind adjective)
  textual_inversion   plain textual inversion (the baseline)
  evogen              contrastive LoRA on positive / hard-negative pairs, staged (EvoGen)
  dco                 LoRA personalization against the frozen model (DCO)

  contrastive-diffusers train reversion --help     lists a method's options

example:
  contrastive-diffusers train reversion --pretrained_model_name_or_path stable-diffusion-v1-5/stable-diffusion-v1-5 \\
      --train_data_dir reversion_benchmark/painted_on --output_dir out/painted_on
"""


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="learn new tokens (ReVersion, MCPL, textual inversion) or LoRA weights (EvoGen, DCO) from images",
        description="Learn new token embeddings from a folder of captioned images (output loads with stock "
        "diffusers' pipe.load_textual_inversion), or LoRA weights (evogen, dco; pipe.load_lora_weights).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("method", choices=sorted(METHODS), help="training method")
    p.add_argument("method_args", nargs=argparse.REMAINDER, help="the method's options (see train METHOD --help)")
    p.set_defaults(run=run_train, train_prog=p.prog)  # "contrastive-diffusers train", or as invoked (cdiff)
    return p


def run_train(args: argparse.Namespace) -> int:
    """Forward to the method's ``main``; returns its exit code (0 after ``--help``)."""
    module = importlib.import_module(f"{__package__}.{METHODS[args.method]}")
    prog = f"{getattr(args, 'train_prog', 'contrastive-diffusers train')} {args.method}"
    try:
        return module.main(list(args.method_args), prog=prog)
    except SystemExit as exit_:  # --help and usage errors of the method's parser
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
