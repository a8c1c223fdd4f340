"""The command line shared by the training methods, with diffusers' training-example names.

``build_parser(prog, description)`` returns the common parser; :func:`parse_method_args` adds
a method's own options and defaults (``parser.set_defaults``), parses and validates.
Validation errors are ``argparse`` usage errors (exit code 2) naming the bad value.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..atomic_io import folder_problem

if TYPE_CHECKING:
    from .method import TrainingMethod

SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")


def comma_list(text: str) -> list[str]:
    """``"a, b,c"`` -> ``["a", "b", "c"]``."""
    return [part.strip() for part in text.split(",") if part.strip()]


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in the help, except beside a ``--no_X`` switch: its default is X's
    (``--no_scale_lr (default: True)`` would read as if the switch were on)."""

    def _get_help_string(self, action):
        if isinstance(action, argparse._StoreFalseAction):
            return action.help
        return super()._get_help_string(action)


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description, formatter_class=_HelpFormatter)

    g = p.add_argument_group("model and data")
    g.add_argument(
        "--pretrained_model_name_or_path",
        required=True,
        help="Stable Diffusion 1.x/2.x or SDXL pipeline: hub id or local folder (diffusers layout).",
    )
    g.add_argument("--revision", default=None, help="Model revision (branch, tag or commit).")
    g.add_argument("--variant", default=None, help="Weights variant, e.g. fp16.")
    g.add_argument(
        "--train_data_dir",
        required=True,
        help="Folder of images with metadata.jsonl (file_name, text) or a ReVersion text.json.",
    )
    g.add_argument("--output_dir", default=None, help="Where embeddings, checkpoints and the run JSON go.")
    g.add_argument("--placeholder_token", default=None, help="The token to learn, e.g. '<R>'.")
    g.add_argument(
        "--placeholder_tokens",
        type=comma_list,
        default=None,
        help="Several tokens to learn, comma-separated: '<c1>,<c2>'.",
    )
    g.add_argument(
        "--initializer_token",
        default=None,
        help="Word the token starts from (a word split into pieces starts from their mean).",
    )
    g.add_argument(
        "--initializer_tokens",
        type=comma_list,
        default=None,
        help="One initializer word per placeholder token, comma-separated: 'circle,square'.",
    )
    g.add_argument("--resolution", type=int, default=512, help="Training image size (square).")
    g.add_argument("--center_crop", action="store_true", help="Center-crop instead of random-crop after resizing.")
    g.add_argument(
        "--image_fit",
        choices=("crop", "squash"),
        default="crop",
        help="crop: resize the short side to --resolution, then a random (--center_crop: centred) square; "
        "squash: resize the whole image to the square (--center_crop: its centre square), as textual "
        "inversion's, ReVersion's and MCPL's own data loaders do (their default here).",
    )
    g.add_argument("--flip_p", type=float, default=0.0, help="Probability of a horizontal flip.")

    g = p.add_argument_group("optimisation")
    g.add_argument("--train_batch_size", type=int, default=1, help="Batch size per process.")
    g.add_argument("--gradient_accumulation_steps", type=int, default=1)
    g.add_argument("--max_train_steps", type=int, default=3000, help="Optimizer steps.")
    g.add_argument("--learning_rate", type=float, default=5e-4)
    g.add_argument(
        "--scale_lr",
        dest="scale_lr",
        action="store_true",
        default=False,
        help="Multiply the learning rate by batch size x accumulation x processes.",
    )
    g.add_argument("--no_scale_lr", dest="scale_lr", action="store_false", help="Use --learning_rate as given.")
    g.add_argument("--lr_scheduler", default="constant", choices=SCHEDULERS)
    g.add_argument("--lr_warmup_steps", type=int, default=0)
    g.add_argument("--adam_beta1", type=float, default=0.9)
    g.add_argument("--adam_beta2", type=float, default=0.999)
    g.add_argument("--adam_weight_decay", type=float, default=1e-2)
    g.add_argument("--adam_epsilon", type=float, default=1e-8)
    g.add_argument("--max_grad_norm", type=float, default=1.0, help="Gradient clipping norm (0 disables).")
    g.add_argument(
        "--seed",
        type=int,
        default=None,
        help="Seed of data order, noise and timesteps; None: drawn and recorded in the run JSON.",
    )
    g.add_argument(
        "--mixed_precision",
        default=None,
        choices=("no", "fp16", "bf16"),
        help="Frozen models in this dtype, learned rows in float32; None: accelerate's config.",
    )
    g.add_argument(
        "--gradient_checkpointing", action="store_true", help="Trade compute for memory in UNet and text encoders."
    )
    g.add_argument("--enable_xformers_memory_efficient_attention", action="store_true")

    g = p.add_argument_group("checkpoints, outputs and logging")
    g.add_argument("--checkpointing_steps", type=int, default=500, help="accelerate save_state every N steps.")
    g.add_argument("--checkpoints_total_limit", type=int, default=None, help="Keep at most this many checkpoints.")
    g.add_argument(
        "--resume_from_checkpoint",
        default=None,
        help="'latest' or a checkpoint folder (path, or name inside --output_dir).",
    )
    g.add_argument("--save_steps", type=int, default=500, help="Copy the learned embeddings every N steps.")
    g.add_argument("--validation_prompt", default=None, help="Prompt for validation images (with the token).")
    g.add_argument("--num_validation_images", type=int, default=4)
    g.add_argument("--validation_steps", type=int, default=100)
    g.add_argument("--validation_num_inference_steps", type=int, default=25)
    g.add_argument(
        "--report_to", default="none", help="accelerate trackers: tensorboard, wandb, comet_ml, all, or none."
    )
    g.add_argument("--logging_dir", default="logs", help="Tracker folder, relative to --output_dir.")
    return p


def nonfinite_options(args: argparse.Namespace, separator: str = "_") -> list[str]:
    """The options given NaN or infinity (argparse's ``float`` takes "nan" and "inf"), as
    ``--name value`` with ``separator`` between the words of the name: such a value would run
    to the end and record garbage."""
    bad = []
    for name, value in vars(args).items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            bad.append(f"--{name.replace('_', separator)} {value}")
    return bad


def _positive(parser, args, *names, allow_none=False):
    for name in names:
        value = getattr(args, name)
        if value is None and allow_none:
            continue
        if value is None or value < 1:
            parser.error(f"--{name} must be a positive integer, got {value}")


def validate_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Merge the single/plural token options and check the common values; ``parser.error`` on
    a problem. The method's strategy checks the tokens themselves (``TrainingMethod.validate``)."""
    for single, plural in (("placeholder_token", "placeholder_tokens"), ("initializer_token", "initializer_tokens")):
        if getattr(args, plural) is not None and getattr(args, single) is not None:
            if getattr(args, single) != parser.get_default(single):
                parser.error(f"give --{single} or --{plural}, not both")
            setattr(args, single, None)  # a method's default yields to an explicit list
    tokens = (
        args.placeholder_tokens
        if args.placeholder_tokens is not None
        else ([args.placeholder_token] if args.placeholder_token is not None else [])
    )
    inits = (
        args.initializer_tokens
        if args.initializer_tokens is not None
        else ([args.initializer_token] if args.initializer_token is not None else [])
    )
    args.placeholder_tokens, args.initializer_tokens = tokens, inits
    _positive(
        parser,
        args,
        "train_batch_size",
        "gradient_accumulation_steps",
        "max_train_steps",
        "checkpointing_steps",
        "save_steps",
        "validation_steps",
        "num_validation_images",
        "validation_num_inference_steps",
    )
    _positive(parser, args, "checkpoints_total_limit", allow_none=True)
    if args.resolution < 8 or args.resolution % 8:
        parser.error(f"--resolution must be a positive multiple of 8 (the VAE downsamples by 8), got {args.resolution}")
    if not 0.0 <= args.flip_p <= 1.0:
        parser.error(f"--flip_p must be in [0, 1], got {args.flip_p}")
    nonfinite = nonfinite_options(args)
    if nonfinite:
        parser.error(f"{', '.join(nonfinite)}: give finite numbers")
    if args.learning_rate <= 0:
        parser.error(f"--learning_rate must be positive, got {args.learning_rate}")
    if args.lr_warmup_steps < 0 or args.max_grad_norm < 0:
        parser.error("--lr_warmup_steps and --max_grad_norm must not be negative")
    if args.enable_xformers_memory_efficient_attention and importlib.util.find_spec("xformers") is None:
        parser.error(
            "--enable_xformers_memory_efficient_attention needs xformers: pip install xformers "
            "(or drop the flag; PyTorch's SDPA attention is used by default)"
        )
    if args.report_to not in ("none", "all"):
        module = {"tensorboard": "tensorboard", "wandb": "wandb", "comet_ml": "comet_ml"}.get(args.report_to)
        if (
            module is not None
            and importlib.util.find_spec(module) is None
            and not (module == "tensorboard" and importlib.util.find_spec("tensorboardX") is not None)
        ):
            parser.error(f"--report_to {args.report_to} needs the {module} package: pip install {module}")
    if args.output_dir is None:
        args.output_dir = f"{parser.prog.split('.')[-1].replace(' ', '-')}-output"
    problem = folder_problem(args.output_dir)
    if problem:
        parser.error(f"--output_dir: {problem}; give a folder")
    return args


def build_method_parser(method: TrainingMethod, prog: str) -> argparse.ArgumentParser:
    """The common parser with the method's options and defaults."""
    parser = build_parser(prog, method.description)
    method.add_arguments(parser)
    parser.set_defaults(**method.defaults)
    return parser


def parse_method_args(method: TrainingMethod, argv: Sequence[str] | None, prog: str) -> argparse.Namespace:
    """Parse and validate a method's command line (the common checks, then the method's)."""
    parser = build_method_parser(method, prog)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    # the command as given, for the model card beside the weights
    args.command = [*prog.split(), *argv]
    if args.output_dir is None:
        args.output_dir = f"{method.name}-output"
    args = validate_args(parser, args)
    method.validate(parser, args)
    return args
