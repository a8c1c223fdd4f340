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


#: Every model option some judge takes (see :attr:`Judge.options`).
JUDGE_OPTIONS = ("vqa_model", "detector", "clip_model")


def load_judges(judges, options: dict | None = None, device: str | None = None) -> list[Judge]:
    """The judges named in ``judges`` (names or :class:`Judge` objects, kept as they are), each
    given the ``options`` it takes (``None`` values: the judge's default) and ``device``."""
    options = {k: v for k, v in (options or {}).items() if v is not None}
    unknown = sorted(set(options) - set(JUDGE_OPTIONS))
    if unknown:
        raise ValueError(f"unknown judge option(s) {', '.join(unknown)}; the options are: {', '.join(JUDGE_OPTIONS)}.")
    loaded = []
    for judge in judges:
        if isinstance(judge, Judge):
            loaded.append(judge)
            continue
        cls = judge_class(judge)
        loaded.append(cls(device=device, **{k: v for k, v in options.items() if k in cls.options}))
    names = [j.name for j in loaded]
    if len(set(names)) != len(names):
        raise ValueError(f"a judge is named twice ({', '.join(names)}); name each judge once.")
    return loaded


def load_judge(name: str, **options) -> Judge:
    """Build the judge ``name`` with its options (``device``, ``dtype``, ``batch_size`` and its
    own: ``vqa_model`` for t2i-compbench, ``detector`` / ``clip_model`` for geneval)."""
    return judge_class(name)(**options)


__all__ = ["JUDGES", "JUDGE_OPTIONS", "Judge", "judge_class", "judge_table", "load_judge", "load_judges"]
