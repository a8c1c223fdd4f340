"""The command line and the run: ``python -m contrastive_diffusers.shapes.train``; see the
package docstring."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ...atomic_io import write_json_atomic
from ...records import jsonable, versions
from ..model import (
    NOISE_SCHEDULES,
    ShapesModelConfig,
    build_clip,
    build_components,
    parameter_count,
)
from ..prompts import held_out_pairs, training_pairs
from .autoencoder import encode_all, train_vae
from .card import negatives_recipe
from .checkpoints import FOLDER as CHECKPOINT_FOLDER
from .checkpoints import RunCheckpoints
from .data import DEFAULT_KIND_WEIGHTS, make_data, seed_of
from .denoiser import train_unet
from .finalize import build_pipeline, finalize
from .flow import train_transformer
from .mmdit import MMDiTShapesConfig, build_mmdit_components, build_mmdit_pipeline
from .world_clip import clip_retrieval, train_clip

PROG = "python -m contrastive_diffusers.shapes.train"


def parse_kind_weights(text: str) -> dict[str, float]:
    """``"single=0.4,two_object=0.2"`` -> ``{"single": 0.4, "two_object": 0.2}`` (shares are
    normalised when the data is drawn); unknown kinds and non-positive totals are errors."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, sep, value = (t.strip() for t in part.partition("="))
        if not sep or kind not in DEFAULT_KIND_WEIGHTS:
            raise argparse.ArgumentTypeError(
                f"{part!r}: expected KIND=SHARE with KIND one of {', '.join(DEFAULT_KIND_WEIGHTS)}")
        try:
            weights[kind] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r}: the share must be a number") from None
        if weights[kind] < 0:
            raise argparse.ArgumentTypeError(f"{part!r}: shares must be >= 0")
    if not weights or sum(weights.values()) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least one kind with a positive share")
    return weights


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=f"Train the ShapesWorld models from scratch: ``{PROG}``.")
    add = parser.add_argument
    add("--output_dir", required=True, type=Path)
    add("--seed", type=int, default=0)
    add("--format", choices=("unet", "mmdit"), default="unet",
        help="unet: a StableDiffusionPipeline (UNet, DDPM schedule; the shipped model); mmdit: a "
             "StableDiffusion3Pipeline (SD3 joint transformer, three text encoders, rectified flow)")
    add("--device", default="cpu", help="cpu or cuda (fp32 either way)")
    add("--resolution", type=int, default=32)
    add("--num_scenes", type=int, default=30000)
    add("--batch_size", type=int, default=64)
    add("--vae_steps", type=int, default=300)
    add("--unet_steps", type=int, default=1550)
    add("--clip_steps", type=int, default=600)
    add("--vae_lr", type=float, default=1e-3)
    add("--unet_lr", type=float, default=1e-3)
    add("--clip_lr", type=float, default=5e-4)
    add("--transformer_steps", type=int, default=3500, help="--format mmdit: steps of the transformer phase")
    add("--transformer_lr", type=float, default=1e-3, help="--format mmdit: its learning rate")
    add("--clip_length", type=int, default=MMDiTShapesConfig.clip_length,
        help="--format mmdit: tokens of the CLIP text (the world's captions have at most 12)")
    add("--t5_length", type=int, default=MMDiTShapesConfig.t5_length,
        help="--format mmdit: tokens of the T5 text; generate with max_sequence_length equal to it")
    add("--flow_shift", type=float, default=1.0,
        help="--format mmdit: the flow-matching scheduler's shift (SD3: 3.0 at 4096 image tokens)")
    add("--vae_kl_weight", type=float, default=1e-3)
    add("--caption_dropout", type=float, default=0.1)
    add("--noise_schedule", choices=tuple(NOISE_SCHEDULES), default="zero_snr",
        help="sd: SD 1.x betas, epsilon prediction, DDIM leading; zero_snr: betas rescaled to zero "
             "terminal SNR, v-prediction, DDIM trailing")
    add("--snr_gamma", type=float, default=5.0, help="min-SNR weighting; 0 for the unweighted loss")
    add("--v_weighting", choices=("snr_plus_one", "snr"), default="snr",
        help="min-SNR form for v-prediction (zero_snr): snr_plus_one weighs the noisiest timesteps ~1 "
             "(diffusers' scripts before 0.26), snr ~snr (Hang et al., diffusers' scripts since 0.26; the "
             "clean-latent weights of the sd schedule)")
    add("--ema_decay", type=float, default=0.995, help="0 disables EMA")
    add("--mixed_precision", choices=("no", "bf16"), default="no",
        help="autocast of the UNet + text encoder forward passes (weights, optimiser and loss stay fp32)")
    add("--kind_weights", type=parse_kind_weights, default=dict(DEFAULT_KIND_WEIGHTS),
        help="caption kinds of the training data and their shares, e.g. single=0.4,two_object=0.2,... "
             f"(default {','.join(f'{k}={v}' for k, v in DEFAULT_KIND_WEIGHTS.items())})")
    add("--clip_negatives", type=int, default=2, help="hard negatives per image in the CLIP loss")
    add("--log_every", type=int, default=25)
    add("--num_threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    add("--probe", type=int, default=0,
        help="time N steps of each phase at --batch_size, print the full run's estimate, exit")
    add("--eval", action="store_true", help="score the test split's prompts with the oracle after training")
    add("--eval_seeds", type=int, default=4)
    add("--eval_per_category", type=int, default=20)
    add("--eval_steps", type=int, default=50, help="DDIM steps of the evaluation (the CLI's default)")
    add("--eval_guidance_scale", type=float, default=7.5, help="classifier-free guidance of the evaluation")
    add("--save_dtype", choices=("float16", "float32"), default="float16",
        help="storage dtype of the UNet and VAE weights (text encoder and CLIP: always float32)")
    add("--finalize_only", action="store_true",
        help="skip training: re-store, evaluate (with --eval) and re-write the card of --output_dir")
    add("--retrain_clip", action="store_true",
        help="train only the world CLIP of the finished run in --output_dir again, by this version's recipe and "
             "the run's own arguments; re-writes clip/, the log and the card")
    add("--retrieval_scenes", type=int, default=300, help="fresh renders per CLIP retrieval check")
    add("--checkpointing_steps", type=int, default=100,
        help="save the phase in progress every N steps (0: only finished phases); a killed run resumes "
             "from there when the same command runs again, to the same weights")
    return parser


#: Options only one format reads (the other's would be ignored without a word).
_FORMAT_OPTIONS = {"unet": ("unet_steps", "unet_lr", "noise_schedule", "snr_gamma", "v_weighting"),
                   "mmdit": ("transformer_steps", "transformer_lr", "clip_length", "t5_length", "flow_shift")}


def _check_args(parser, args) -> None:
    for name in ("num_scenes", "batch_size", "log_every", "eval_seeds", "eval_per_category", "eval_steps",
                 "clip_negatives", "retrieval_scenes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be positive, got {getattr(args, name)}.")
    for name in ("vae_steps", "unet_steps", "clip_steps", "transformer_steps", "probe", "checkpointing_steps",
                 "snr_gamma", "vae_kl_weight"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0, got {getattr(args, name)}.")
    for name in ("vae_lr", "unet_lr", "clip_lr", "transformer_lr"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name} must be positive, got {getattr(args, name)}.")
    if args.num_threads is not None and args.num_threads < 1:
        parser.error(f"--num_threads must be positive, got {args.num_threads}.")
    if not 0 <= args.ema_decay < 1:
        parser.error(f"--ema_decay must be in [0, 1) (0: no EMA), got {args.ema_decay}.")
    other = "unet" if args.format == "mmdit" else "mmdit"
    ignored = [f"--{n}" for n in _FORMAT_OPTIONS[other] if getattr(args, n) != parser.get_default(n)]
    if ignored:
        parser.error(f"{', '.join(ignored)} apply to --format {other} only; this run is --format {args.format}.")
    if not 0 <= args.caption_dropout < 1:
        parser.error(f"--caption_dropout must be in [0, 1), got {args.caption_dropout}.")
    if args.resolution % 8 or args.resolution < 16:
        parser.error(f"--resolution must be a multiple of 8 of at least 16, got {args.resolution}.")
    if args.flow_shift <= 0:
        parser.error(f"--flow_shift must be positive, got {args.flow_shift}.")
    if args.format == "mmdit":
        try:
            mmdit_config(args)
        except ValueError as error:
            parser.error(str(error))
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda given but no CUDA device is available.")


def model_config(args) -> ShapesModelConfig:
    config = ShapesModelConfig()
    config.vae["sample_size"] = args.resolution
    config.unet["sample_size"] = config.latent_size
    config.clip["vision"]["image_size"] = args.resolution  # the world's CLIP sees the images as drawn
    return config


def probe(args, config: ShapesModelConfig) -> dict:
    """Seconds per step of each phase at ``--batch_size`` (``--probe`` steps of the real phase
    code on 256 scenes, the first step not counted), and the estimated time of the full run."""
    import copy

    data = make_data(256, seed_of(args.seed, "data"), args.resolution, args.kind_weights)
    components = _components(args, config)
    clip, processor = build_clip(config, _clip_tokenizer(components), args.seed + 3)
    short = copy.copy(args)
    short.vae_steps = short.unet_steps = short.clip_steps = short.transformer_steps = args.probe + 1
    short.log_every = 1
    log: dict = {"phases": {}}
    denoiser = _train_denoiser(components, data, short, log)
    train_clip(clip, processor, data, short, log)
    per_step = {}
    for phase in ("vae", denoiser, "clip"):
        curve = log["phases"][phase]["curve"]
        per_step[phase] = (curve[-1]["seconds"] - curve[0]["seconds"]) / max(len(curve) - 1, 1)
    data_seconds = 0.0003 * args.num_scenes  # measured: ~0.3 ms per scene
    estimate = data_seconds + sum(per_step[p] * getattr(args, f"{p}_steps") for p in per_step)
    result = {"format": args.format, "seconds_per_step": per_step,
              f"{denoiser}_steps_per_second": 1 / per_step[denoiser], "estimated_total_minutes": estimate / 60, "batch_size": args.batch_size,
              "threads": torch.get_num_threads(), "device": args.device}
    print(json.dumps(result, indent=1), flush=True)
    return result


def _phase(checkpoints: RunCheckpoints | None, name: str, modules: dict, log: dict, run) -> dict:
    """Phase ``name``: ``run(step_checkpoint)`` (returns a dict of values to keep, or None), or,
    when an earlier call of the same run finished it, its saved weights, log and values."""
    if checkpoints is not None and checkpoints.finished(name):
        entry, extra = checkpoints.load_phase(name, modules)
        log["phases"][name] = entry
        log.setdefault("resumed_phases", []).append(name)
        return extra
    extra = run(None if checkpoints is None else checkpoints.step(name)) or {}
    if checkpoints is not None:
        checkpoints.save_phase(name, modules, log["phases"][name], extra)
    return extra


def _train_denoiser(components: dict, data, args, log: dict, checkpoints: RunCheckpoints | None = None) -> str:
    """The VAE phase, then the denoiser phase of ``args.format`` (``unet``: UNet + CLIP text
    encoder on the DDPM schedule; ``mmdit``: SD3 transformer + three text encoders with the flow
    loss); returns the denoiser phase's name. ``checkpoints``: resume and save (see
    :mod:`.checkpoints`)."""
    vae = components["vae"]
    scale = _phase(checkpoints, "vae", {"vae": vae}, log,
                   lambda step: {"scale": train_vae(vae, data, args, log, step)})["scale"]
    vae.register_to_config(scaling_factor=scale)  # as train_vae does (a loaded phase skipped it)
    vae.to(args.device).eval()
    latents = encode_all(vae, data.images, args)
    if args.format == "unet":
        trained = {"unet": components["unet"], "text_encoder": components["text_encoder"]}
        _phase(checkpoints, "unet", trained, log, lambda step: train_unet(
            components["unet"], components["text_encoder"], components["tokenizer"], latents, scale, data, args,
            log, step))
        for module in trained.values():
            module.to(args.device).eval()
        return "unet"
    # SD3's VAE standardises latents with a shift as well as a scale: (z - shift) * scale.
    shift = float(latents[0].mean())
    components["vae"].register_to_config(shift_factor=shift)
    log["phases"]["vae"]["shift_factor"] = shift
    pipe = build_mmdit_pipeline(components, args.flow_shift)
    trained = {name: components[name] for name in ("transformer", "text_encoder", "text_encoder_2", "text_encoder_3")}
    _phase(checkpoints, "transformer", trained, log,
           lambda step: train_transformer(pipe, latents, scale, shift, data, args, log, step))
    for module in trained.values():
        module.to(args.device).eval()
    return "transformer"


def mmdit_config(args) -> MMDiTShapesConfig:
    return MMDiTShapesConfig(clip_length=args.clip_length, t5_length=args.t5_length)


def _components(args, config: ShapesModelConfig) -> dict:
    """The untrained pipeline components of ``args.format``, each module seeded on its own."""
    if args.format == "mmdit":
        return build_mmdit_components(config.vae, config.latent_size, mmdit_config(args), args.seed)
    return build_components(config, args.seed)


def _clip_tokenizer(components: dict):
    """The world CLIP's tokenizer: the UNet model's own; for the MMDiT model, whose tokenizers
    are cut to its short text, a full-length one."""
    if "unet" in components:
        return components["tokenizer"]
    from ...models.tiny_tokenizers import tiny_tokenizer

    return tiny_tokenizer()


def _parameters(components: dict, clip) -> dict:
    names = ("vae", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3") \
        if "transformer" in components else ("vae", "unet", "text_encoder")
    return {**{name: parameter_count(components[name]) for name in names}, "clip": parameter_count(clip)}


#: Arguments that do not change the weights: a resumed run may give them otherwise.
_NOT_IN_WEIGHTS = ("output_dir", "command", "log_every", "eval", "eval_seeds", "eval_per_category", "eval_steps",
                   "eval_guidance_scale", "save_dtype", "finalize_only", "retrain_clip", "probe",
                   "checkpointing_steps")


def run_checkpoints(args) -> RunCheckpoints:
    """The run's checkpoints; an output folder holding anything else is refused (a second run
    there would mix its weights with the first one's files)."""
    out = Path(args.output_dir)
    if (out / "training_log.json").is_file():
        raise ValueError(f"{out} holds a finished training run; choose another --output_dir (--finalize_only "
                         "re-stores, evaluates and re-writes the card of a finished run).")
    if out.is_dir() and any(out.iterdir()) and not (out / CHECKPOINT_FOLDER / "run.json").is_file():
        raise ValueError(f"{out} is not empty and holds no unfinished training run; choose a new or empty "
                         "--output_dir.")
    arguments = {k: v for k, v in jsonable(vars(args)).items() if k not in _NOT_IN_WEIGHTS}
    return RunCheckpoints(out, arguments, args.checkpointing_steps)


def _save_clip(out: Path, clip, processor, args, log: dict) -> None:
    """``clip/`` of the output folder, and the log's retrieval check on fresh renders."""
    clip.eval()
    clip.save_pretrained(out / "clip", safe_serialization=True)
    processor.save_pretrained(out / "clip")
    log["clip_retrieval"] = {
        name: clip_retrieval(clip, processor, make_data(args.retrieval_scenes, [args.seed, 7 + k], args.resolution,
                                                        DEFAULT_KIND_WEIGHTS, pairs), args.seed, args.device)
        for k, (name, pairs) in enumerate([("training pairs", training_pairs()), ("held-out pairs", held_out_pairs())])
    }
    print(f"[clip] retrieval {json.dumps({k: round(v['accuracy'], 3) for k, v in log['clip_retrieval'].items()})}",
          flush=True)


def retrain_clip(args) -> dict:
    """The world CLIP of the finished run in ``args.output_dir`` trained again by this
    version's recipe, the rest of the run untouched: the run's own arguments (its
    ``training_log.json``) give the data, seeds and steps, as a whole run would have given
    them (the CLIP phase depends on nothing the other phases make). ``clip/``, the log's CLIP
    phase and retrieval check are rewritten (``clip_retrained`` records when and by what),
    then :func:`finalize` re-writes the card (``--eval`` re-evaluates). Returns the log."""
    out = Path(args.output_dir)
    log = json.loads((out / "training_log.json").read_text())
    defaults = vars(build_parser().parse_args(["--output_dir", str(out)]))
    run = argparse.Namespace(**{**defaults, **log["arguments"], "output_dir": out, "device": args.device,
                                "log_every": args.log_every})
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    config = model_config(run)
    start = time.perf_counter()
    data = make_data(run.num_scenes, seed_of(run.seed, "data"), run.resolution, run.kind_weights)
    clip, processor = build_clip(config, _clip_tokenizer(_components(run, config)), run.seed + 3)
    before, recipe_before = log.get("clip_retrieval"), negatives_recipe(log)
    old_seconds = log["phases"].get("clip", {}).get("seconds", 0)
    train_clip(clip, processor, data, run, log, None)
    # the training time the card gives is the phases' own: this CLIP's phase replaces the first
    for key in ("training_seconds", "total_seconds"):
        if key in log:
            log[key] = round(log[key] - old_seconds + log["phases"]["clip"]["seconds"], 1)
    _save_clip(out, clip, processor, run, log)
    log["clip_retrained"] = {"command": getattr(args, "command", ""), "versions": versions(),
                             "seconds": round(time.perf_counter() - start, 1), "retrieval_before": before,
                             "recipe_before": recipe_before, "date": time.strftime("%Y-%m-%d")}
    write_json_atomic(out / "training_log.json", jsonable(log))
    # stored as the run stored its weights, whatever this command's --save_dtype default says
    finalize(out, argparse.Namespace(**{**vars(args), "save_dtype": run.save_dtype}))
    return json.loads((out / "training_log.json").read_text())


def train(args) -> dict:
    """Run every phase and write the output folder; returns the training log. A folder holding
    an unfinished run of the same arguments is resumed (:mod:`.checkpoints`)."""
    defaults = vars(build_parser().parse_args(["--output_dir", str(args.output_dir)]))
    args = argparse.Namespace(**{**defaults, **vars(args)})  # library callers may leave options out
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    config = model_config(args)
    out = Path(args.output_dir)
    checkpoints = run_checkpoints(args)
    out.mkdir(parents=True, exist_ok=True)
    if checkpoints.start():
        print(f"[resume] {out} holds an unfinished run of these arguments: going on from its checkpoints", flush=True)
    log: dict = {"arguments": jsonable(vars(args)), "seed": args.seed, "command": getattr(args, "command", ""),
                 "versions": versions(), "kind_weights": args.kind_weights, "config": config.to_dict(),
                 "phases": {}, "threads": torch.get_num_threads()}
    start = time.perf_counter()
    data = make_data(args.num_scenes, seed_of(args.seed, "data"), args.resolution, args.kind_weights)
    log["phases"]["data"] = {"scenes": len(data.captions), "seconds": round(time.perf_counter() - start, 2),
                             "kinds": {k: data.kinds.count(k) for k in args.kind_weights}}
    print(f"[data] {len(data.captions)} scenes in {log['phases']['data']['seconds']:.1f} s", flush=True)

    components = _components(args, config)
    clip, processor = build_clip(config, _clip_tokenizer(components), args.seed + 3)
    log["parameters"] = _parameters(components, clip)
    if args.format == "mmdit":
        log["mmdit_config"] = mmdit_config(args).to_dict()
    print(f"[model] parameters {log['parameters']}", flush=True)

    _train_denoiser(components, data, args, log, checkpoints)
    if args.format == "mmdit":
        build_mmdit_pipeline(components, args.flow_shift).save_pretrained(out, safe_serialization=True)
    else:
        build_pipeline(components, args.noise_schedule).save_pretrained(out, safe_serialization=True)

    _phase(checkpoints, "clip", {"clip": clip}, log, lambda step: train_clip(clip, processor, data, args, log, step))
    _save_clip(out, clip, processor, args, log)

    log["training_seconds"] = round(time.perf_counter() - start, 1)  # everything but the evaluation
    log["total_seconds"] = log["training_seconds"]
    write_json_atomic(out / "training_log.json", jsonable(log))
    checkpoints.remove()  # the run is whole: its folder is the model
    finalize(out, args)
    print(f"[done] {out}: trained in {log['training_seconds'] / 60:.1f} min", flush=True)
    return json.loads((out / "training_log.json").read_text())


def main(argv: Sequence[str] | None = None) -> int:
    import sys

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    _check_args(parser, args)
    args.command = " ".join(argv)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    if args.probe:
        probe(args, model_config(args))
        return 0
    if args.retrain_clip:
        if not (args.output_dir / "training_log.json").is_file():
            parser.error(f"--retrain_clip: {args.output_dir} holds no training_log.json (not a finished training run)")
        retrain_clip(args)
        return 0
    if args.finalize_only:
        if not (args.output_dir / "training_log.json").is_file():
            parser.error(f"--finalize_only: {args.output_dir} holds no training_log.json (not a training output)")
        finalize(args.output_dir, args)
        return 0
    try:
        run_checkpoints(args).check()
    except ValueError as error:  # the output folder refused, before any training
        parser.error(str(error))
    train(args)
    return 0
