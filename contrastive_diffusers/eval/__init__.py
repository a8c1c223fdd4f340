"""Evaluation: CLIP-based scoring, prompt sets and the benchmark runner.

- :class:`ClipScorer`: CLIPScore (torchmetrics' definition), the Attend-and-Excite
  protocol's full-prompt / minimum-object similarity, CLIP-IQA style antonym scores.
- :mod:`.prompts`: the Attend-and-Excite sets (generated), loaders for T2I-CompBench,
  GenEval, PartiPrompts, plain text and JSONL files, and contrast sets.
- :mod:`.bench`: :func:`run_benchmark` (model x methods x prompt set x seeds -> images,
  per-image metrics, reports; resumable, shardable with accelerate) and :func:`score_run`.
- :class:`Captioner`: BLIP captions for the protocol's prompt-caption text similarity.
- :mod:`.metrics`: every per-image metric from one CLIP image forward; :mod:`.report` and
  :mod:`.stats`: summaries with t confidence intervals, Markdown and HTML reports.
"""

from .bench import BenchConfig, BenchResult, run_benchmark, score_run
from .captioner import Captioner
from .clip_score import ClipScorer, aggregate_clip_score, split_prompt, to_pil_images
from .metrics import image_metrics
from .prompts import (
    PromptItem,
    attend_and_excite_prompts,
    contrast_set,
    load_prompt_file,
    load_prompt_set,
)
from .report import summarize

__all__ = [
    "BenchConfig",
    "BenchResult",
    "Captioner",
    "ClipScorer",
    "PromptItem",
    "aggregate_clip_score",
    "attend_and_excite_prompts",
    "contrast_set",
    "image_metrics",
    "load_prompt_file",
    "load_prompt_set",
    "run_benchmark",
    "score_run",
    "split_prompt",
    "summarize",
    "to_pil_images",
]
