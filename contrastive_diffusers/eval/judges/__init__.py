"""The benchmarks' own judges, by name (``bench --judge NAME``): see :mod:`.base` for the
interface.

- ``t2i-compbench``: T2I-CompBench's B-VQA (BLIP-VQA, attribute binding) and its CLIP judge for
  the non-spatial category (:mod:`.t2i_compbench`).
- ``geneval``: GenEval's detector protocol (:mod:`.geneval`).

Judges load lazily: naming one imports its module and its models only then.
"""

from __future__ import annotations

import importlib

from .base import Judge, judge_table

#: name -> "module:ClassName" (relative to this package).
JUDGES = {
    "t2i-compbench": "t2i_compbench:T2ICompBenchJudge",
    "geneval": "geneval:GenEvalJudge",
}


def judge_class(name: str) -> type[Judge]:
    """The judge class registered as ``name``; a ValueError lists the known names."""
    if name not in JUDGES:
        raise ValueError(f"unknown judge {name!r}; the known judges are: {', '.join(sorted(JUDGES))}.")
    module_name, class_name = JUDGES[name].split(":")
    module = importlib.import_module(f".{module_name}", __name__)
    return getattr(module, class_name)


def load_judge(name: str, **options) -> Judge:
    """Build the judge ``name`` with its options (``device``, ``dtype``, ``batch_size`` and its
    own: ``vqa_model`` for t2i-compbench, ``detector`` / ``clip_model`` for geneval)."""
    return judge_class(name)(**options)


__all__ = ["JUDGES", "Judge", "judge_class", "judge_table", "load_judge"]
