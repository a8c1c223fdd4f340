"""What every benchmark judge is: :class:`Judge`, scoring images the way a published benchmark
does (T2I-CompBench's BLIP-VQA, GenEval's detector protocol) so that ``bench`` reports numbers in
the units of the papers' tables, beside the CLIP metrics.

A judge sees the bench records (see :mod:`..run_folder` and :mod:`..bench_generate`: ``prompt``,
``category``, ``token_groups``, ``spec``, ``judge_metadata`` — the prompt item's
``metadata["judge"]``, e.g. GenEval's ``tag`` / ``include`` — ...) and the images, and returns one
result per image::

    {"metrics": {metric_name: float | None, ...}, "details": {...JSON-able...}}

``metrics`` holds exactly the keys of :attr:`Judge.metric_names` (``None``: the judge does not
apply to this prompt, e.g. GenEval's judge on a prompt without GenEval metadata); the bench
merges them into ``record["metrics"]`` and keeps the whole result in ``record["judges"][name]``.
:meth:`Judge.summarize` builds the benchmark's own table from the scored records (a
:class:`JudgeTable` as a dict), which ``summary.md`` and ``report.html`` print as it is.
"""

from __future__ import annotations

import abc
from typing import Any


def judge_table(title: str, columns: list[str], rows: list[list[Any]], notes: list[str] | None = None) -> dict:
    """The form of :meth:`Judge.summarize`'s answer: a titled table, one row per method (first
    column its name), numbers as floats (``None``: no scored image), and notes printed under it."""
    if any(len(row) != len(columns) for row in rows):
        raise ValueError(f"every row of the judge table {title!r} needs {len(columns)} cells ({columns}).")
    return {"title": title, "columns": list(columns), "rows": [list(r) for r in rows], "notes": list(notes or [])}


class Judge(abc.ABC):
    """A benchmark's own judge. Subclasses set :attr:`name` and :attr:`metric_names` and take
    ``device`` (``"cpu"``, ``"cuda"``, ...), ``dtype`` (``None``: float16 on CUDA, float32
    elsewhere) and ``batch_size`` (images per forward) in their constructor."""

    #: The registry name (``bench --judge NAME``).
    name: str = ""
    #: The per-image metric keys :meth:`score` writes (e.g. ``("bvqa",)``).
    metric_names: tuple[str, ...] = ()
    #: The model options its constructor takes besides device, dtype and batch_size, as the
    #: bench passes them (``bench --vqa-model`` -> ``vqa_model``, ``--detector`` ->
    #: ``detector``, ``--judge-clip-model`` -> ``clip_model``); the bench passes a judge only
    #: the options it names here, and only those the user gave (else the judge's default).
    options: tuple[str, ...] = ()

    def __init__(self, device: str | None = None, dtype=None, batch_size: int = 16):
        import torch

        if batch_size < 1:
            raise ValueError(f"{type(self).__name__}: batch_size must be at least 1, got {batch_size}.")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        self.batch_size = batch_size

    @abc.abstractmethod
    def score(self, images: list, records: list[dict]) -> list[dict]:
        """One ``{"metrics": ..., "details": ...}`` per image (PIL RGB), in order."""

    @abc.abstractmethod
    def summarize(self, records: list[dict]) -> dict:
        """The benchmark's own table (:func:`judge_table`) over the scored ``records``."""

    def settings(self) -> dict:
        """What the scores depend on (model ids or folders, thresholds): part of the bench's
        scorer key, so that a changed judge re-scores. Subclasses add their own."""
        return {"name": self.name}

    def input_problem(self, metadata: dict | None) -> str | None:
        """What is wrong with one prompt's evaluation data (its ``judge_metadata``) for this
        judge, asked before any image is drawn; None when it is fine or not this judge's."""
        return None

    def empty_result(self, reason: str) -> dict:
        """The result for an image the judge does not apply to."""
        return {"metrics": {m: None for m in self.metric_names}, "details": {"skipped": reason}}
