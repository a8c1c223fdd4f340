"""Command-line interface: ``contrastive-diffusers`` / ``cdiff`` / ``python -m contrastive_diffusers``.

Subcommands (each is a ``add_<name>_parser`` function that builds its options and a
``run_<name>`` function that does the work):

- ``generate`` (:mod:`.generate`): images for prompts x seeds x guidance methods, plus
  attention heatmaps and a ``settings.json`` describing the run.
- ``bench`` / ``score`` (:mod:`.bench`): a benchmark over a prompt set with CLIP metrics and
  reports, and scoring of an existing benchmark folder.
- ``train <method>`` (:mod:`contrastive_diffusers.training.cli`, beside the methods it lists):
  ReVersion, MCPL, textual inversion, EvoGen, DCO; the method's own options follow.

:mod:`.common` holds what they share; :mod:`.main` builds the parser and maps errors to exit
codes: 0 success, 1 a bench/score run finished with failed images, 2 bad input (unknown
method, word not in the prompt, model not found, ...), 130 interrupted.
"""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
