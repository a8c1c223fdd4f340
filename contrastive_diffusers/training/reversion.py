"""ReVersion: learn a relation token ``<R>`` from exemplar images (Huang et al., 2023).

    accelerate launch -m contrastive_diffusers.training.reversion \\
        --pretrained_model_name_or_path stable-diffusion-v1-5/stable-diffusion-v1-5 \\
        --train_data_dir reversion_benchmark/painted_on --output_dir out/painted_on

Loss = denoising MSE + ``--steering_loss_weight`` x steering loss. The steering loss is a
multi-positive InfoNCE (temperature ``--steering_temperature``) between the normalised input
embedding of ``<R>`` and the embeddings of ``--num_positives`` prepositions drawn per example
from a basis of 56 English prepositions (``vocabulary.PREPOSITIONS``), against negatives:
the other content words of the batch's captions (no stop words, no prepositions, no
placeholder, special or padding tokens — SD 2.x pads with the real token "!", so padding is
excluded by position, never by id). With SDXL it is averaged over both text encoders.

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
from .embeddings import word_embedding
from .entry import run_main
from .losses import denoising_loss, steering_loss
from .timesteps import relation_focal_probabilities
from .tokens import TokenMethod
from .trainer import Trainer
from .vocabulary import PREPOSITIONS, content_words


def negative_words(captions: Sequence[str], placeholder_tokens: Sequence[str], basis: Sequence[str] = ()) -> list[str]:
    """The batch's negatives: content words of its captions, without the placeholder tokens
    and without any word of the positive basis (a custom ``--prepositions`` list may hold
    words the built-in one lacks: a word must never be both positive and negative)."""
    basis_words = [word for entry in basis for word in entry.lower().split()]
    return content_words(captions, exclude=[*placeholder_tokens, *basis_words])


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
        self._tables = []  # per encoder: frozen (P, D) preposition embeddings
        for tok, enc in zip(m.tokenizers, m.text_encoders):
            weight = enc.get_input_embeddings().weight
            self._tables.append(torch.stack([word_embedding(tok, weight, w) for w in self.basis]).to(trainer.device))
        self._word_cache: dict[str, list[torch.Tensor]] = {}

    def timestep_probabilities(self, trainer: Trainer):
        alpha = trainer.args.relation_focal_alpha
        return relation_focal_probabilities(trainer.num_train_timesteps, alpha) if alpha > 0 else None

    def _negatives(self, trainer: Trainer, captions) -> list[torch.Tensor | None]:
        if trainer.accelerator.num_processes > 1:
            # The negatives are the whole global batch's words, as on one process with the
            # same total batch (every process calls this at every step).
            from accelerate.utils import gather_object

            captions = gather_object(list(captions))
        words = negative_words(captions, trainer.args.placeholder_tokens, self.basis)
        if not words:
            return [None] * len(self._tables)
        m = trainer.models
        for word in words:
            if word not in self._word_cache:
                self._word_cache[word] = [
                    word_embedding(tok, enc.get_input_embeddings().weight, word).to(trainer.device)
                    for tok, enc in zip(m.tokenizers, m.text_encoders)
                ]
        return [torch.stack([self._word_cache[w][k] for w in words]) for k in range(len(self._tables))]

    def steering(self, trainer: Trainer, batch: dict) -> torch.Tensor:
        """The steering loss of a batch, averaged over text encoders."""
        args = trainer.args
        picks = [
            torch.randperm(len(self.basis), generator=g)[: args.num_positives]
            for g in trainer.generators(batch["positions"], 4)
        ]
        index = torch.stack(picks).to(trainer.device)  # (B, P)
        negatives = self._negatives(trainer, batch["captions"])
        rows = self.embeddings(trainer).rows
        losses = [
            steering_loss(rows[k][0], table[index], negatives[k], args.steering_temperature)
            for k, table in enumerate(self._tables)
        ]
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
