"""What a training method supplies to the shared life cycle (``loop.train``).

:class:`TrainingMethod` is abstract. Two strategies implement what is trained:
:class:`~.tokens.TokenMethod` learns new placeholder-token rows (textual inversion,
ReVersion, MCPL) and :class:`~.lora.LoraMethod` trains LoRA adapters (EvoGen, DCO, plain LoRA
as ``evogen --objective denoise``). A concrete method subclasses one of them and adds its
options, data and loss. The hooks with a body here are optional; they are grouped by the
stage of the run that calls them.
"""

from __future__ import annotations

import argparse
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .loop import TrainResult
    from .trainer import Trainer


class TrainingMethod(ABC):
    """Options, data, trained module, loss and outputs of one training method."""

    name: str
    description: str
    #: Defaults this method sets on the common parser (read-only; subclasses assign their own).
    defaults: Mapping[str, object] = MappingProxyType({})
    #: Keep the text encoders in float32 under mixed precision (the trained rows live there).
    text_encoders_in_float32: bool = False

    # ---------------------------------------------------------------- command line
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the method's own options."""

    def validate(self, parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        """Check the method's options after the common ones (``parser.error`` on a problem)."""

    # ---------------------------------------------------------------- data and models
    @abstractmethod
    def load_data(self, trainer: Trainer):
        """The validated training data, read before any model loads: an object with ``len()``
        and ``batch(stream, positions, seed)``. Captioned examples whose captions the trainer
        should check against the tokenizer's length go into ``trainer.examples``."""

    def extend_models(self, trainer: Trainer) -> None:
        """Change the loaded models before they are frozen, cast and moved (e.g. add tokens)."""

    @abstractmethod
    def build_trainable(self, trainer: Trainer) -> torch.nn.Module:
        """The module whose trainable parameters the optimizer updates (it is ``prepare``d)."""

    def adopt_checkpoint(self, trainer: Trainer, settings: dict | None) -> None:
        """Called before anything is built when resuming ``trainer.resume_path``, with the
        settings its steps ran with (None: an old checkpoint without them); may adjust
        ``trainer.args`` so that the run continues as it was checkpointed."""

    def optimizer_groups(self, trainer: Trainer, lr: float) -> list[dict]:
        """The optimizer's parameter groups (``torch.optim`` dicts) at learning rate ``lr``: one
        group of every trainable parameter of ``trainer.model``. The lr scheduler scales each."""
        return [{"params": [p for p in trainer.model.parameters() if p.requires_grad], "lr": lr}]

    def setup(self, trainer: Trainer) -> None:
        """Called once the trainable module exists, before ``prepare``."""

    def timestep_probabilities(self, trainer: Trainer) -> torch.Tensor | None:
        """``p(t)`` over the training timesteps; ``None`` is uniform."""
        return None

    # ---------------------------------------------------------------- one step
    def batch(self, trainer: Trainer, micro_step: int, positions: list[int]) -> dict:
        """The micro-batch at these stream positions."""
        return trainer.data.batch(trainer.stream, positions, trainer.seed)

    @abstractmethod
    def loss(self, trainer: Trainer, batch: dict) -> tuple[torch.Tensor, dict]:
        """Loss of one micro-batch and the floats to log (must include ``"loss"``)."""

    def unet_context(self, trainer: Trainer):
        """A context manager around the UNet forward and backward (e.g. attention recording)."""
        return contextlib.nullcontext()

    def after_step(self, trainer: Trainer, step: int, record: dict) -> None:
        """Called after each optimizer step, before its checkpoint; may add to ``record`` or set
        ``trainer.stop_training``."""

    def validation_context(self, trainer: Trainer):
        """A context manager around the validation pipeline calls."""
        return contextlib.nullcontext()

    # ---------------------------------------------------------------- state and outputs
    def checkpoint_state(self, trainer: Trainer) -> dict:
        """Extra JSON-able state stored in each checkpoint's ``training_state.json``."""
        return {}

    def restore_state(self, trainer: Trainer, state: dict | None) -> None:
        """Restore :meth:`checkpoint_state` (``None``: a new run)."""

    def finished(self, trainer: Trainer) -> bool:
        """Whether training is already complete before ``--max_train_steps`` (checked after resuming)."""
        return False

    @abstractmethod
    def intermediate_folder(self, step: int) -> str:
        """Name of the ``--save_steps`` copy of the trained weights."""

    @abstractmethod
    def save_output(self, trainer: Trainer, folder: Path, final: bool) -> list[Path]:
        """Write the trained weights into ``folder`` (main process only); returns the files."""

    @abstractmethod
    def learned_rows(self, trainer: Trainer) -> list[torch.Tensor]:
        """``TrainResult.learned``: the learned token rows per text encoder (empty for LoRA)."""

    def finish(self, trainer: Trainer) -> None:
        """After a successful run and its final save, on every process."""

    def teardown(self, trainer: Trainer) -> None:
        """Undo what :meth:`build_trainable` and :meth:`setup` installed (also when training fails)."""

    def run_record(self) -> dict:
        """Method-specific facts for the run JSON."""
        return {}

    @abstractmethod
    def result_message(self, result: TrainResult) -> str:
        """The line the command prints after a run that wrote its output."""
