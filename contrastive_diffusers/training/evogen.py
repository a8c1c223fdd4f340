"""EvoGen-style contrastive LoRA fine-tuning on positive / hard-negative pairs, in stages.

    accelerate launch -m contrastive_diffusers.training.evogen \\
        --pretrained_model_name_or_path stable-diffusion-v1-5/stable-diffusion-v1-5 \\
        --train_data_dir pairs/ --output_dir out/evogen --stage_steps 500,500,1000

(also ``contrastive-diffusers train evogen ...``). EvoGen's code is not published; this follows
its description: LoRA on the UNet (``--rank``, ``--lora_alpha``, optionally
``--train_text_encoder``), trained on pairs (``pairs.py`` format) whose positive matches the
caption and whose negative is a minimal change that does not, stage by stage (stage 1 simple
single-object attributes, 2 two-object binding and relations, 3 complex scenes, or whatever
stages the pair folder has, in increasing order).

Objectives (``--objective``; ``objectives.py``): the positive and the negative are noised with
the same noise and timestep and denoised under the caption in ONE batched UNet forward (2B
samples); the reference model (``margin``) is the base UNet with adapters disabled, run once
more on the 2B samples without gradients.

==============  ==========================================================  ===============
objective       loss                                                        UNet samples
==============  ==========================================================  ===============
denoise         MSE on the positive (plain LoRA fine-tuning)                 B
contrastive     w_d·MSE⁺ + w_c·InfoNCE(−e/τ) over the pair and in-batch      2B
                negatives (``--temperature``; ``--in_batch_negatives`` adds the
                batch's other negatives: off by default, see its help)
margin          w_d·MSE⁺ + w_c·(−log σ(−β[(e⁺−e_ref⁺) − (e⁻−e_ref⁻)]))      2B + 2B no-grad
                (``--beta``)
==============  ==========================================================  ===============

Curriculum: ``--stage_steps 20,20,20`` gives each stage its step budget (their sum is the
run's ``--max_train_steps``; without it, ``--max_train_steps`` is split evenly). With
``--advance_metric pair_accuracy|margin|val_loss --advance_threshold X`` a stage also ends
early when the metric, measured every ``--advance_check_steps`` steps on the first
``--advance_eval_pairs`` pairs of the stage (fixed noise, no gradients), reaches X (≥ for
accuracy and margin, ≤ for the loss); the budgets then cap each stage, and training stops
when the last stage ends. The stage is logged per step and stored in every checkpoint, so a
resumed run continues in the same stage at the same step.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from types import MappingProxyType

import torch

from .args import comma_list
from .curriculum import METRICS, Curriculum
from .data import DataError, DataStream, mix_seed
from .entry import run_main
from .lora import LoraMethod
from .objectives import (
    OBJECTIVES,
    contrastive_infonce,
    denoising_mse,
    pair_margin,
    per_sample_error,
    preference_margin,
)
from .pairs import PairImages, load_pairs
from .trainer import Trainer

#: Stream positions of the advance-rule evaluation batch (far from any training position).
EVAL_POSITION = 1 << 40

#: UNet sample-passes per example: (with gradients, without).
UNET_PASSES = {"denoise": (1, 0), "contrastive": (2, 0), "margin": (2, 2), "dco": (1, 1)}


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in comma_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, e.g. 20,20,20; got {text!r}") from None


def _double(batch: dict) -> dict:
    """The positives then the negatives, at the same stream positions (same noise and timestep)."""
    return {
        "pixel_values": torch.cat([batch["pixel_values"], batch["negative_pixel_values"]]),
        "positions": list(batch["positions"]) * 2,
        "original_sizes": list(batch["original_sizes"]) * 2,
        "crop_top_lefts": list(batch["crop_top_lefts"]) * 2,
    }


#: w_c of the contrastive objective: the coefficient in the EvoGen authors' training command
#: (``--contrastive_loss_coeff 0.1``; their loss code is not public). Our InfoNCE acts on the
#: denoising errors themselves, where an unbounded margin can be bought by raising the
#: negatives' error: at w_c = 1 that wrecked the ShapesWorld model (success 0.611 -> 0.083);
#: at 0.1 the run matched plain LoRA on the positives.
CONTRASTIVE_WEIGHT = 0.1


class EvoGen(LoraMethod):
    name = "evogen"
    description = "EvoGen: contrastive LoRA fine-tuning on positive / hard-negative pairs with a staged curriculum."
    defaults = MappingProxyType(
        {
            "learning_rate": 1e-4,
            "scale_lr": False,
            "train_batch_size": 2,
            "gradient_accumulation_steps": 1,
            "max_train_steps": 3000,
            "flip_p": 0.0,
        }
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        g = parser.add_argument_group("EvoGen objective")
        g.add_argument("--objective", default="contrastive", choices=sorted(OBJECTIVES))
        g.add_argument("--temperature", type=float, default=0.05, help="InfoNCE temperature τ (on mean-squared errors).")
        g.add_argument(
            "--in_batch_negatives",
            action="store_true",
            help="InfoNCE also against the batch's other negatives. Off by default: each pair has its "
            "own timestep, and an error's size depends mostly on the timestep, so other pairs' errors "
            "rank by how easy their timestep was rather than by content.",
        )
        g.add_argument(
            "--no_in_batch_negatives",
            dest="in_batch_negatives",
            action="store_false",
            help="InfoNCE against each pair's own negative only (the default).",
        )
        g.add_argument("--beta", type=float, default=1000.0, help="β of the margin objective.")
        g.add_argument(
            "--denoise_loss_weight",
            type=float,
            default=None,
            help="Weight w_d of the positive's MSE beside the objective (default 1; 0 for margin).",
        )
        g.add_argument(
            "--contrastive_loss_weight",
            type=float,
            default=None,
            help="Weight w_c of the objective (default 0.1 for contrastive, the authors' coefficient; 1 for margin). "
            "At 1 the contrastive term outweighs the MSE about tenfold and is met by raising the negatives' "
            "error without bound, which wrecked the ShapesWorld model (see the README's training evidence).",
        )
        g = parser.add_argument_group("curriculum")
        g.add_argument(
            "--stage_steps",
            type=_int_list,
            default=None,
            help="Steps per stage, e.g. 20,20,20 (one per stage of the data, in order); their sum is the run's length.",
        )
        g.add_argument("--advance_metric", default=None, choices=sorted(METRICS), help="Advance a stage early on it.")
        g.add_argument("--advance_threshold", type=float, default=None)
        g.add_argument("--advance_check_steps", type=int, default=10, help="Measure the metric every N stage steps.")
        g.add_argument("--advance_eval_pairs", type=int, default=4, help="Pairs of the stage the metric is measured on.")

    def validate(self, parser, args) -> None:
        super().validate(parser, args)
        if args.flip_p != 0.0:
            parser.error(f"--flip_p must be 0 for pairs (a flip turns 'left of' into 'right of'), got {args.flip_p}")
        if args.temperature <= 0 or args.beta <= 0:
            parser.error("--temperature and --beta must be positive")
        if args.denoise_loss_weight is None:
            args.denoise_loss_weight = 0.0 if args.objective == "margin" else 1.0
        if args.contrastive_loss_weight is None:
            args.contrastive_loss_weight = CONTRASTIVE_WEIGHT if args.objective == "contrastive" else 1.0
        if args.denoise_loss_weight < 0 or args.contrastive_loss_weight < 0:
            parser.error("--denoise_loss_weight and --contrastive_loss_weight must not be negative")
        if args.stage_steps is not None:
            if not args.stage_steps or any(s < 1 for s in args.stage_steps):
                parser.error(f"--stage_steps must be positive integers, got {args.stage_steps}")
            total = sum(args.stage_steps)
            given = any(a == "--max_train_steps" or a.startswith("--max_train_steps=") for a in getattr(args, "command", ()))
            if (given or args.max_train_steps != parser.get_default("max_train_steps")) and args.max_train_steps != total:
                parser.error(
                    f"--max_train_steps {args.max_train_steps} disagrees with --stage_steps (sum {total}); "
                    "give one of them"
                )
            args.max_train_steps = total
        if (args.advance_metric is None) != (args.advance_threshold is None):
            parser.error("--advance_metric and --advance_threshold go together")
        if args.advance_check_steps < 1 or args.advance_eval_pairs < 1:
            parser.error("--advance_check_steps and --advance_eval_pairs must be positive")

    # ---------------------------------------------------------------- data and curriculum
    def load_data(self, trainer: Trainer):
        args = trainer.args
        pairs = load_pairs(args.train_data_dir)
        stages = sorted({p.stage for p in pairs})
        squash = args.image_fit == "squash"
        self.stage_data = {
            s: PairImages([p for p in pairs if p.stage == s], args.resolution, args.center_crop, squash)
            for s in stages
        }
        kwargs = dict(metric=args.advance_metric, threshold=args.advance_threshold, check_every=args.advance_check_steps)
        try:
            if args.stage_steps is not None:
                self.curriculum = Curriculum(stages, list(args.stage_steps), **kwargs)
            else:
                self.curriculum = Curriculum.split(stages, args.max_train_steps, **kwargs)
        except ValueError as err:
            raise DataError(f"{args.train_data_dir}: {err}") from None
        self.counts = {
            s: {c: sum(1 for p in pairs if p.stage == s and p.category == c) for c in sorted({p.category for p in pairs})}
            for s in stages
        }
        self._streams: dict[int, DataStream] = {}
        return PairImages(pairs, args.resolution, args.center_crop, squash)

    def setup(self, trainer: Trainer) -> None:
        tok = trainer.models.tokenizers[0]
        limit = tok.model_max_length - 2
        for data in self.stage_data.values():
            for pair in data.pairs:
                n = len(tok(pair.caption, add_special_tokens=False).input_ids)
                if n > limit:
                    raise DataError(
                        f"{trainer.args.train_data_dir}/pairs.jsonl, line {pair.line}: the caption has {n} tokens; "
                        f"the text encoder sees {limit}. Shorten it."
                    )

    def _stream(self, trainer: Trainer, stage: int) -> DataStream:
        if stage not in self._streams:
            self._streams[stage] = DataStream(len(self.stage_data[stage]), mix_seed(trainer.seed, stage, 0x57A6E))
        return self._streams[stage]

    def batch(self, trainer: Trainer, micro_step: int, positions: list[int]) -> dict:
        stage = self.curriculum.stage
        return self.stage_data[stage].batch(self._stream(trainer, stage), positions, trainer.seed)

    def checkpoint_state(self, trainer: Trainer) -> dict:
        return {"curriculum": self.curriculum.state()}

    def restore_state(self, trainer: Trainer, state: dict | None) -> None:
        self.curriculum.index, self.curriculum.start_step = 0, 0
        if state is not None:
            if "curriculum" not in state:
                raise ValueError("The checkpoint has no curriculum state; was it written by another method?")
            self.curriculum.restore(state["curriculum"])

    # ---------------------------------------------------------------- objective
    def errors(self, trainer: Trainer, batch: dict, with_negative: bool, with_reference: bool) -> dict:
        """Per-sample errors ``e_pos`` (and ``e_neg``, ``ref_pos``, ``ref_neg``): one batched
        forward of positives and negatives, the reference without gradients."""
        captions = list(batch["captions"])
        b = len(captions)
        hidden, pooled = self.encode(trainer, captions)
        if with_negative:
            inputs = _double(batch)
            hidden = torch.cat([hidden, hidden])
            pooled = torch.cat([pooled, pooled]) if pooled is not None else None
            captions = captions * 2
        else:
            inputs = {k: batch[k] for k in ("pixel_values", "positions", "original_sizes", "crop_top_lefts")}
        noisy, timesteps, target, kwargs = trainer.noisy_latents(inputs, pooled)
        pred = self.forward(trainer, noisy, timesteps, hidden, kwargs)
        e = per_sample_error(pred, target)
        out = {"e_pos": e[:b]}
        if with_negative:
            out["e_neg"] = e[b:]
        if with_reference:
            ref = per_sample_error(self.reference(trainer, captions, hidden, noisy, timesteps, kwargs), target)
            out["ref_pos"], out["ref_neg"] = ref[:b], ref[b:]
        return out

    def objective(self, args, e: dict) -> tuple[torch.Tensor, dict]:
        mse = denoising_mse(e["e_pos"])
        logs = {"denoise_loss": mse.detach()}
        if args.objective == "denoise":
            return mse, logs
        if args.objective == "contrastive":
            main = contrastive_infonce(e["e_pos"], e["e_neg"], args.temperature, args.in_batch_negatives)
        else:
            main = preference_margin(e["e_pos"], e["e_neg"], e["ref_pos"], e["ref_neg"], args.beta)
        margin, accuracy = pair_margin(e["e_pos"], e["e_neg"])
        logs.update(objective_loss=main.detach(), pair_margin=margin, pair_accuracy=accuracy)
        return args.denoise_loss_weight * mse + args.contrastive_loss_weight * main, logs

    def loss(self, trainer: Trainer, batch: dict):
        args = trainer.args
        needs_negative, needs_reference = OBJECTIVES[args.objective]
        loss, logs = self.objective(args, self.errors(trainer, batch, needs_negative, needs_reference))
        logs["loss"] = loss.detach()
        return loss, logs

    @torch.no_grad()
    def evaluate(self, trainer: Trainer) -> dict:
        """The advance metrics on the first ``--advance_eval_pairs`` pairs of the current stage."""
        args = trainer.args
        data = self.stage_data[self.curriculum.stage]
        n = min(args.advance_eval_pairs, len(data))
        items = [data.load(i, trainer.seed, EVAL_POSITION + i) for i in range(n)]
        batch = {
            "pixel_values": torch.stack([i["pixel_values"] for i in items]),
            "negative_pixel_values": torch.stack([i["negative_pixel_values"] for i in items]),
            "captions": [i["caption"] for i in items],
            "original_sizes": [i["original_size"] for i in items],
            "crop_top_lefts": [i["crop_top_left"] for i in items],
            "positions": [EVAL_POSITION + i for i in range(n)],
        }
        with_reference = args.objective == "margin"
        e = self.errors(trainer, batch, True, with_reference)
        loss, _ = self.objective(args, e)
        margin, accuracy = pair_margin(e["e_pos"], e["e_neg"])
        return {"pair_accuracy": float(accuracy), "margin": float(margin), "val_loss": float(loss)}

    def finished(self, trainer: Trainer) -> bool:
        return self.curriculum.finished

    def after_step(self, trainer: Trainer, step: int, record: dict) -> None:
        metric = trainer.args.advance_metric
        log = self.curriculum.step_done(step, (lambda: self.evaluate(trainer)[metric]) if metric else None)
        record.update(log)
        if self.curriculum.finished:
            trainer.stop_training = True

    def run_record(self) -> dict:
        curriculum = getattr(self, "curriculum", None)
        return {
            **super().run_record(),
            "stages": curriculum.stages if curriculum else None,
            "stage_steps": curriculum.budgets if curriculum else None,
            "pairs_per_stage_and_category": getattr(self, "counts", None),
        }


def main(argv: Sequence[str] | None = None, prog: str = "python -m contrastive_diffusers.training.evogen") -> int:
    return run_main(EvoGen(), argv, prog)


if __name__ == "__main__":
    raise SystemExit(main())
