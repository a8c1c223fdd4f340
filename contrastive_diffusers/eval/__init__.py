"""Evaluation: CLIP-based scoring, the built-in prompt sets, the benchmark runner, the pair builder.

- :class:`ClipScorer`: CLIPScore (torchmetrics' definition), the Attend-and-Excite
  protocol's full-prompt / minimum-object similarity, CLIP-IQA style antonym scores.
- :class:`Captioner`: BLIP captions for the protocol's prompt-caption text similarity.
- :mod:`.metrics`: every per-image metric from one CLIP image forward.
- :mod:`.prompt_sets`: :func:`load_prompt_set`, the built-in sets by name (Attend-and-Excite,
  ShapesWorld) and prompt files by path (the prompts themselves: :mod:`contrastive_diffusers.prompts`).
- :mod:`.bench`: :func:`run_benchmark` (model x methods x prompt set x seeds -> images,
  per-image metrics, reports; resumable, shardable with accelerate) and :func:`score_run`;
  its stages in :mod:`.bench_setup`, :mod:`.bench_generate`, :mod:`.bench_score`, its folder
  in :mod:`.run_folder`.
- :mod:`.summary` and :mod:`.stats`: summaries with t confidence intervals; :mod:`.report`
  and :mod:`.report_html`: text, Markdown and HTML reports.
- :mod:`.pair_builder`: :func:`build_pairs`, contrastive training pairs from generated,
  CLIP-checked images.
"""

from ..prompts import PromptItem, attend_and_excite_prompts, contrast_set, load_prompt_file
from .bench import BenchConfig, BenchResult, run_benchmark, score_run
from .captioner import Captioner
from .clip_score import ClipScorer, aggregate_clip_score, split_prompt, to_pil_images
from .metrics import image_metrics
from .pair_builder import build_pairs
from .prompt_sets import load_prompt_set
from .summary import summarize

__all__ = [
    "BenchConfig",
    "BenchResult",
    "Captioner",
    "ClipScorer",
    "PromptItem",
    "aggregate_clip_score",
    "attend_and_excite_prompts",
    "build_pairs",
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
