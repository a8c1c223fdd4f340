"""Training with accelerate on one framework: contrastive prompt learning (ReVersion, MCPL)
and contrastive LoRA fine-tuning (EvoGen, DCO).

Entry points (each also ``accelerate launch -m ...``-able and behind ``contrastive-diffusers
train <method>``):

- ``python -m contrastive_diffusers.training.reversion``: a relation token (ReVersion);
- ``python -m contrastive_diffusers.training.mcpl``: several concept tokens (MCPL);
- ``python -m contrastive_diffusers.training.textual_inversion``: the plain baseline;
- ``python -m contrastive_diffusers.training.evogen``: LoRA on positive / hard-negative pairs
  in curriculum stages (EvoGen); ``...training.dco``: DCO personalisation;
- ``python -m contrastive_diffusers.training.benchmark``: step time and peak memory.

Token outputs load with stock ``pipe.load_textual_inversion`` (see ``save``), LoRA outputs
with ``pipe.load_lora_weights``. Modules:

- the life cycle: ``loop`` (``train``: accelerate's prepare / accumulate / save_state /
  final save), ``trainer`` (setup and the helpers a loss calls), ``checkpoints``,
  ``interrupt`` (Ctrl-C / SIGTERM stop after a step with a checkpoint),
  ``validation``, ``run_record`` (``training_run.json``), ``entry`` (a method's ``main``);
- what a method is: ``method`` (the abstract ``TrainingMethod``) and its two strategies,
  ``tokens`` (new token rows; with ``embeddings`` and ``save``) and ``lora`` (adapters,
  their checkpoints and output);
- the methods: ``textual_inversion``, ``reversion``, ``mcpl``, ``evogen``, ``dco``;
- their pieces: ``args`` (command line), ``data`` (captioned image folders), ``pairs`` (pair
  folders), ``models`` (loading), ``losses``, ``objectives`` and ``timesteps`` (pure
  functions), ``curriculum`` (stages), ``vocabulary`` (prepositions, stop words), ``cli``
  (the ``train`` subcommand), ``benchmark`` (step time and memory).

Imported names are resolved lazily, so that importing the package (e.g. for the CLI's
``--help``) does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "train": "loop",
    "TrainResult": "loop",
    "TrainingInterrupted": "interrupt",
    "TrainingMethod": "method",
    "TokenMethod": "tokens",
    "LoraMethod": "lora",
    "ReVersion": "reversion",
    "MCPL": "mcpl",
    "TextualInversion": "textual_inversion",
    "EvoGen": "evogen",
    "DCO": "dco",
    "load_pairs": "pairs",
    "save_learned_embeds": "save",
    "load_learned_embeds": "save",
    "add_train_parser": "cli",
}
__all__ = [
    "DCO",
    "MCPL",
    "EvoGen",
    "LoraMethod",
    "ReVersion",
    "TextualInversion",
    "TokenMethod",
    "TrainResult",
    "TrainingInterrupted",
    "TrainingMethod",
    "add_train_parser",
    "load_learned_embeds",
    "load_pairs",
    "save_learned_embeds",
    "train",
]


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
