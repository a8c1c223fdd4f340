"""Token learning: the strategy of textual inversion, ReVersion and MCPL.

The placeholder tokens are added to every tokenizer (rows initialised from their initializer
words, :func:`~.embeddings.add_placeholder_tokens`), the trained module is
:class:`~.embeddings.LearnedEmbeddings` (only those rows), the loss is the denoising MSE
under captions that contain the tokens, and the output is written in the layout stock
``pipe.load_textual_inversion`` loads (:mod:`.save`). Methods subclass :class:`TokenMethod`
and override the loss or add options.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .card import token_usage, write_run_card
from .data import ImageCaptions, fill_placeholders, load_examples
from .embeddings import (
    LearnedEmbeddings,
    add_placeholder_tokens,
    check_placeholder_tokens,
)
from .losses import denoising_loss
from .method import TrainingMethod
from .save import save_learned_embeds
from .trainer import Trainer


class TokenMethod(TrainingMethod):
    """Learns new token embeddings from captioned images (``--placeholder_token`` required)."""

    #: Templates for a folder of images without captions (``None``: captions required).
    default_templates: tuple[str, ...] | None = None
    # as diffusers' textual inversion and ReVersion's scripts: only the UNet and VAE are cast
    text_encoders_in_float32 = True

    def validate(self, parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        try:
            check_placeholder_tokens(args.placeholder_tokens, args.initializer_tokens)
        except ValueError as err:
            parser.error(str(err))

    def load_data(self, trainer: Trainer):
        """Captioned images, the placeholders filled into templated captions."""
        args = trainer.args
        examples = load_examples(args.train_data_dir, self.default_templates)
        trainer.examples = fill_placeholders(examples, args.placeholder_tokens)
        return ImageCaptions(trainer.examples, args.resolution, args.center_crop, args.flip_p,
                             squash=args.image_fit == "squash")

    def extend_models(self, trainer: Trainer) -> None:
        """Add the placeholder tokens to every tokenizer / text encoder (before the caption
        length check, which must count each token as one)."""
        args = trainer.args
        self.initial_rows = []
        for tok, enc in zip(trainer.models.tokenizers, trainer.models.text_encoders):
            info, rows = add_placeholder_tokens(tok, enc, args.placeholder_tokens, args.initializer_tokens)
            trainer.infos.append(info)
            self.initial_rows.append(rows)

    def build_trainable(self, trainer: Trainer) -> torch.nn.Module:
        m = trainer.models
        self._embeddings = LearnedEmbeddings(m.text_encoders, trainer.infos, self.initial_rows, sdxl=m.sdxl)
        return self._embeddings

    def embeddings(self, trainer: Trainer) -> LearnedEmbeddings:
        """The learned rows module, unwrapped from DDP."""
        return trainer.unwrapped

    def loss(self, trainer: Trainer, batch: dict) -> tuple[torch.Tensor, dict]:
        ids = trainer.tokenize(batch["captions"])
        hidden, pooled = trainer.encode(ids)
        pred, target = trainer.denoise(batch, hidden, pooled)
        loss = denoising_loss(pred, target)
        return loss, {"loss": loss.detach(), "denoise_loss": loss.detach()}

    def intermediate_folder(self, step: int) -> str:
        return f"learned_embeds-steps-{step}"

    def save_output(self, trainer: Trainer, folder: Path, final: bool) -> list[Path]:
        args = trainer.args
        rows = self.embeddings(trainer).learned()
        files = save_learned_embeds(folder, args.placeholder_tokens, rows, args.initializer_tokens)
        return files + [write_run_card(trainer, folder, token_usage(args.pretrained_model_name_or_path, folder))]

    def learned_rows(self, trainer: Trainer) -> list[torch.Tensor]:
        return self.embeddings(trainer).learned()

    def finish(self, trainer: Trainer) -> None:
        """The returned text encoders hold the learned rows (the hooks go in :meth:`teardown`)."""
        self.embeddings(trainer).write_into_encoders()

    def teardown(self, trainer: Trainer) -> None:
        if getattr(self, "_embeddings", None) is not None:
            self._embeddings.remove_hooks()

    def result_message(self, result) -> str:
        return f"Learned {', '.join(result.tokens)} in {result.global_step} steps; embeddings in {result.output_dir}"
