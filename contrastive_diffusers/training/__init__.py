"""Contrastive prompt learning with accelerate: ReVersion and MCPL on one training framework.

Entry points (each also ``accelerate launch -m ...``-able and behind ``contrastive-diffusers
train <method>``):

- ``python -m contrastive_diffusers.training.reversion``: a relation token (ReVersion);
- ``python -m contrastive_diffusers.training.mcpl``: several concept tokens (MCPL);
- ``python -m contrastive_diffusers.training.textual_inversion``: the plain baseline;
- ``python -m contrastive_diffusers.training.benchmark``: step time and peak memory of the three.

The output loads with stock diffusers (``pipe.load_textual_inversion``; see ``save``).
Modules: ``args`` (command line), ``data`` (captioned image folders), ``embeddings``
(placeholder tokens, the learned rows), ``losses`` and ``timesteps`` (pure functions),
``loop`` (the accelerate life cycle, ``train``), ``save`` (output files), ``cli`` (the
``train`` subcommand), ``vocabulary`` (prepositions, stop words).

Imported names are resolved lazily, so that importing the package (e.g. for the CLI's
``--help``) does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "train": "loop",
    "TrainResult": "loop",
    "TrainingMethod": "loop",
    "ReVersion": "reversion",
    "MCPL": "mcpl",
    "TextualInversion": "textual_inversion",
    "save_learned_embeds": "save",
    "load_learned_embeds": "save",
    "add_train_parser": "cli",
}
__all__ = [
    "MCPL",
    "ReVersion",
    "TextualInversion",
    "TrainResult",
    "TrainingMethod",
    "add_train_parser",
    "load_learned_embeds",
    "save_learned_embeds",
    "train",
]


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
