"""Prompts for compositional text-to-image evaluation and training, in pure Python.

- :mod:`.items`: :class:`PromptItem`, one prompt with its id, category and token groups;
- :mod:`.attend_and_excite`: the Attend-and-Excite benchmark (276 prompts) from its word lists;
- :mod:`.files`: :func:`load_prompt_file` for T2I-CompBench, GenEval, PartiPrompts,
  Attend-and-Excite, plain text and JSON Lines files;
- :mod:`.contrast`: :func:`contrast_set`, minimal perturbations of a two-object prompt.

The ShapesWorld set lives with its world (:mod:`contrastive_diffusers.shapes.prompts`); the
built-in sets by name are :func:`contrastive_diffusers.eval.load_prompt_set`'s.
"""

from .attend_and_excite import ANIMALS, ATTEND_AND_EXCITE_SUBSETS, COLORS, OBJECTS, attend_and_excite_prompts
from .contrast import contrast_set
from .files import PROMPT_FILE_FORMATS, load_prompt_file
from .items import PromptItem

__all__ = [
    "ANIMALS",
    "ATTEND_AND_EXCITE_SUBSETS",
    "COLORS",
    "OBJECTS",
    "PROMPT_FILE_FORMATS",
    "PromptItem",
    "attend_and_excite_prompts",
    "contrast_set",
    "load_prompt_file",
]
