"""ReVersion: learn a relation token ``<R>`` from exemplar images (Huang et al., 2023).

    accelerate launch -m contrastive_diffusers.training.reversion \\
        --pretrained_model_name_or_path stable-diffusion-v1-5/stable-diffusion-v1-5 \\
        --train_data_dir reversion_benchmark/painted_on --output_dir out/painted_on

Loss = denoising MSE + ``--steering_loss_weight`` x steering loss. The steering loss is, as in
the authors' code, one multi-positive InfoNCE (temperature ``--steering_temperature``) per
batch between the normalised input embedding of ``<R>`` and the token rows of the
``--num_positives`` prepositions drawn for each example from the basis of 56 English
prepositions (``vocabulary.PREPOSITIONS``), pooled over the batch, against negatives: every
token of the batch's captions (each occurrence) except the tokens of stop words and of the
basis, the placeholders and the start and end tokens (SD 2.x pads with the real token "!", so
the captions are tokenized without padding; the authors' code would count those "!" as
negatives). With SDXL it is averaged over both text encoders; under several processes
every process computes it on the whole global batch, as one process would.

Timesteps are drawn by relation-focal importance sampling, ``p(t) ∝ 1 - α cos(π t / T)``
(``--relation_focal_alpha``, 0 for uniform). Defaults follow the paper: ``<R>`` from "and",
lr 2.5e-4 scaled by batch (2) x accumulation (4) x processes, 3000 steps, no flips.
The data folder is ReVersion's (``text.json`` of templates with ``{}``) or a ``metadata.jsonl``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from types import MappingProxyType

import torch

from .args import comma_list
from .entry import run_main
from .losses import denoising_loss, steering_loss
from .timesteps import relation_focal_probabilities
from .tokens import TokenMethod
from .trainer import Trainer
from .vocabulary import PREPOSITIONS, STOP_WORDS


def excluded_token_ids(tokenizer, placeholder_tokens: Sequence[str], basis: Sequence[str]) -> set[int]:
    """Token ids that are never negatives: the pieces of the stop words and of the positive
    basis (a word must never be both positive and negative), the placeholders and the start
    and end tokens. (Padding never occurs: the captions are tokenized without it, so SD 2.x's
    pad token "!" is a negative only where a caption writes it.)"""
    words = [*STOP_WORDS, *basis]  # one at a time: pieces as in the joined text, without a length warning
    ids = {i for row in tokenizer(words, add_special_tokens=False).input_ids for i in row}
    ids |= set(tokenizer.convert_tokens_to_ids(list(placeholder_tokens)))
    return ids | {i for i in (tokenizer.bos_token_id, tokenizer.eos_token_id) if i is not None}


def negative_token_ids(tokenizer, captions: Sequence[str], excluded: set[int]) -> list[int]:
    """Every token of ``captions`` (each occurrence, in order) whose id is not ``excluded``;
    tokenized without start, end or padding tokens, truncated as the text encoder sees them."""
    rows = tokenizer(list(captions), add_special_tokens=False, truncation=True,
                     max_length=tokenizer.model_max_length - 2).input_ids
    return [i for row in rows for i in row if i not in excluded]


class ReVersion(TokenMethod):
    name = "reversion"
    description = "ReVersion: learn a relation token <R> with a preposition-steering contrastive loss."
    defaults = MappingProxyType(
        {
            "placeholder_token": "<R>",
            "initializer_token": "and",
            "learning_rate": 2.5e-4,
            "scale_lr": True,
            "train_batch_size": 2,
            "gradient_accumulation_steps": 4,
            "max_train_steps": 3000,
            "flip_p": 0.0,
            "max_grad_norm": 0.0,  # the authors' code clips no gradient
            "image_fit": "squash",  # the authors' loader resizes the whole image
        }
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("ReVersion")
        g.add_argument("--steering_loss_weight", type=float, default=0.01, help="Weight w of the steering loss.")
        g.add_argument("--steering_temperature", type=float, default=0.07, help="InfoNCE temperature τ.")
        g.add_argument("--num_positives", type=int, default=4, help="Prepositions drawn per example as positives.")
        g.add_argument(
            "--relation_focal_alpha",
            type=float,
            default=0.5,
            help="α of p(t) ∝ 1 - α cos(πt/T); 0 samples timesteps uniformly.",
        )
        g.add_argument(
            "--prepositions",
            type=comma_list,
            default=None,
            help="Comma-separated positive basis replacing the built-in 56 prepositions.",
        )

    def validate(self, parser, args) -> None:
        super().validate(parser, args)
        if len(args.placeholder_tokens) != 1:
            parser.error(
                f"ReVersion learns one relation token, got {len(args.placeholder_tokens)}: "
                f"{', '.join(args.placeholder_tokens)}"
            )
        if args.steering_loss_weight < 0 or args.steering_temperature <= 0:
            parser.error("--steering_loss_weight must be >= 0 and --steering_temperature > 0")
        if not 0.0 <= args.relation_focal_alpha < 1.0:
            parser.error(f"--relation_focal_alpha must be in [0, 1), got {args.relation_focal_alpha}")
        basis = args.prepositions if args.prepositions is not None else list(PREPOSITIONS)
        if not 1 <= args.num_positives <= len(basis):
            parser.error(f"--num_positives must be between 1 and the basis size {len(basis)}, got {args.num_positives}")

    def setup(self, trainer: Trainer) -> None:
        args = trainer.args
        self.basis = list(args.prepositions) if args.prepositions is not None else list(PREPOSITIONS)
        m = trainer.models
        # per encoder: the token pieces of each basis entry, and the ids that are never negatives
        self._pieces = [[tok(w, add_special_tokens=False).input_ids for w in self.basis] for tok in m.tokenizers]
        self._excluded = [excluded_token_ids(tok, args.placeholder_tokens, self.basis) for tok in m.tokenizers]

    def timestep_probabilities(self, trainer: Trainer):
        alpha = trainer.args.relation_focal_alpha
        return relation_focal_probabilities(trainer.num_train_timesteps, alpha) if alpha > 0 else None

    def steering(self, trainer: Trainer, batch: dict) -> torch.Tensor:
        """The steering loss of a batch, averaged over text encoders."""
        args = trainer.args
        picks = [  # each example's prepositions, drawn by its own generator (exact resume)
            torch.randperm(len(self.basis), generator=g)[: args.num_positives].tolist()
            for g in trainer.generators(batch["positions"], 4)
        ]
        captions = list(batch["captions"])
        if trainer.accelerator.num_processes > 1:
            # the whole global batch's positives and negatives, as one process with the same total
            # batch would pool them (every process calls this at every step)
            from accelerate.utils import gather_object

            picks, captions = gather_object(picks), gather_object(captions)
        rows = self.embeddings(trainer).rows
        losses = []
        for k, (tok, enc) in enumerate(zip(trainer.models.tokenizers, trainer.models.text_encoders)):
            weight = enc.get_input_embeddings().weight
            positive_ids = [i for example in picks for w in example for i in self._pieces[k][w]]
            negative_ids = negative_token_ids(tok, captions, self._excluded[k])

            def table(ids):
                return weight[torch.tensor(ids, dtype=torch.long, device=weight.device)].detach().to(trainer.device)

            negatives = table(negative_ids) if negative_ids else None
            losses.append(steering_loss(rows[k][0], table(positive_ids), negatives, args.steering_temperature))
        return torch.stack(losses).mean()

    def loss(self, trainer: Trainer, batch: dict):
        ids = trainer.tokenize(batch["captions"])
        hidden, pooled = trainer.encode(ids)
        pred, target = trainer.denoise(batch, hidden, pooled)
        denoise = denoising_loss(pred, target)
        steer = self.steering(trainer, batch)
        loss = denoise + trainer.args.steering_loss_weight * steer
        return loss, {"loss": loss.detach(), "denoise_loss": denoise.detach(), "steering_loss": steer.detach()}

    def run_record(self) -> dict:
        return {"prepositions": getattr(self, "basis", list(PREPOSITIONS))}


def main(argv: Sequence[str] | None = None, prog: str = "python -m contrastive_diffusers.training.reversion") -> int:
    return run_main(ReVersion(), argv, prog)


if __name__ == "__main__":
    raise SystemExit(main())
