"""Evaluation: CLIP-based scoring and prompt sets (the benchmark runner is not built yet).

- :class:`ClipScorer`: CLIPScore (torchmetrics' definition), the Attend-and-Excite
  protocol's full-prompt / minimum-object similarity, CLIP-IQA style antonym scores.
- :mod:`.prompts`: the Attend-and-Excite sets (generated), loaders for T2I-CompBench,
  GenEval, PartiPrompts, plain text and JSONL files, and contrast sets.
"""

from .clip_score import ClipScorer, aggregate_clip_score, split_prompt, to_pil_images
from .prompts import (
    PromptItem,
    attend_and_excite_prompts,
    contrast_set,
    load_prompt_file,
    load_prompt_set,
)

__all__ = [
    "ClipScorer",
    "PromptItem",
    "aggregate_clip_score",
    "attend_and_excite_prompts",
    "contrast_set",
    "load_prompt_file",
    "load_prompt_set",
    "split_prompt",
    "to_pil_images",
]
