"""The summary of a benchmark run, from its per-image records (``metrics.jsonl``):
:func:`summarize` gives, per method and per category, every metric's mean with a t confidence
interval over prompts (cluster-robust: the seeds of one prompt are not independent draws;
with one seed per prompt it is the plain interval over images, with one prompt the interval
over its seeds); every method's paired difference from the baseline (same prompt, same
seed) and which methods' means rest on other images than the baseline's; CLIP's agreement
with the ShapesWorld oracle; the failures. A JSON-serialisable dict (``None`` where a number
is undefined).

A record is a dict with ``method``, ``prompt_id``, ``prompt``, ``category``, ``seed``,
``image`` / ``attention`` (paths relative to the run folder), ``status`` ("ok", "failed", or
"not_applicable": the method cannot apply to that prompt, e.g. CONFORM to a single object),
``error`` and ``metrics`` (name -> number or None); see :mod:`contrastive_diffusers.eval.bench`.
Any number in ``metrics`` counts as a metric, so new metrics need no change here.
"""

from __future__ import annotations

import math
from typing import Sequence

from .metrics import METRIC_NAMES
from .stats import metric_value, paired_differences, prompt_mean_ci

__all__ = ["CANONICAL_METRICS", "NOT_APPLICABLE", "summarize", "unique"]

# Metrics known to the runner, in the order tables show them; others follow alphabetically.
CANONICAL_METRICS = METRIC_NAMES
NOT_APPLICABLE = "not_applicable"


def summarize(records: Sequence[dict], baseline: str | None = None, confidence: float = 0.95) -> dict:
    """Means, confidence intervals, paired deltas and failures of a run's records.

    ``baseline`` defaults to ``"none"`` (plain generation) when present, else the first
    method; it is None when the run has a single method.
    """
    records = list(records)
    methods = unique(r.get("method") for r in records)
    metrics = _metric_names(records)
    baseline = _choose_baseline(methods, baseline)
    return {
        "confidence": confidence,
        "methods": methods,
        "metrics": metrics,
        "baseline": baseline,
        "per_method": {m: _method_summary(records, m, metrics, confidence) for m in methods},
        "per_category": _category_summary(records, methods, metrics, confidence),
        "deltas": _delta_summary(records, methods, metrics, baseline, confidence),
        "coverage": _coverage(records, methods, baseline),
        "agreement": _agreement(records, methods, metrics),
        "judge_agreement": _judge_agreement(records, methods, metrics),
        "failures": _listed(records, "failed"),
        "not_applicable": _listed(records, NOT_APPLICABLE),
    }


def _listed(records, status: str) -> list[dict]:
    return [
        {"method": r.get("method"), "prompt_id": r.get("prompt_id"), "seed": r.get("seed"), "error": r.get("error")}
        for r in records
        if r.get("status") == status
    ]


def unique(items) -> list:
    """Items in order of first appearance, without repeats."""
    return list(dict.fromkeys(items))


def _metric_names(records: Sequence[dict]) -> list[str]:
    names = {name for r in records if isinstance(r.get("metrics"), dict) for name in r["metrics"]}
    present = {name for name in names if any(metric_value(r, name) is not None for r in records)}
    return [m for m in CANONICAL_METRICS if m in present] + sorted(present - set(CANONICAL_METRICS))


def _choose_baseline(methods: list, baseline: str | None) -> str | None:
    if baseline is not None and baseline not in methods:
        raise ValueError(f"Baseline method {baseline!r} is not in the records (methods: {methods}).")
    if len(methods) < 2:
        return None
    if baseline is not None:
        return baseline
    return "none" if "none" in methods else methods[0]


def _stat(values: list[float], prompts: list, confidence: float) -> dict:
    """Mean and half-width of its t-interval over ``prompts`` (one label per value; one prompt:
    over its seeds); ``n`` images."""
    ci, n_prompts = prompt_mean_ci(values, prompts, confidence)
    return {"mean": _finite_or_none(ci.mean), "half_width": _finite_or_none(ci.half_width), "n": len(values),
            "n_prompts": n_prompts}


def _finite_or_none(x: float) -> float | None:
    # JSON has no NaN; None reads as "undefined" in every consumer.
    return x if math.isfinite(x) else None


def _metric_stats(records: list[dict], metrics: list[str], confidence: float) -> dict:
    stats = {}
    for metric in metrics:
        scored = [(r.get("prompt_id"), metric_value(r, metric)) for r in records]
        scored = [(prompt, v) for prompt, v in scored if v is not None]
        stats[metric] = _stat([v for _, v in scored], [prompt for prompt, _ in scored], confidence)
    return stats


def _method_summary(records: Sequence[dict], method: str, metrics: list[str], confidence: float) -> dict:
    own = [r for r in records if r.get("method") == method]
    return {
        "n_images": len(own),
        "n_failed": sum(r.get("status") == "failed" for r in own),
        "n_not_applicable": sum(r.get("status") == NOT_APPLICABLE for r in own),
        "n_scored": sum(r.get("status") == "ok" and isinstance(r.get("metrics"), dict) for r in own),
        "metrics": _metric_stats(own, metrics, confidence),
    }


#: The category of records without one, in a folder where others have one (a plain-text
#: prompt file added to a ShapesWorld run): shown, not dropped from the per-category tables.
NO_CATEGORY = "(no category)"


def _category_summary(records, methods, metrics, confidence) -> dict:
    """{category: {method: {metric: stat}}}; ``{}`` when no record has a category, else records
    without one form the category :data:`NO_CATEGORY`."""
    if all(r.get("category") is None for r in records):
        return {}

    def category_of(record):
        return NO_CATEGORY if record.get("category") is None else record.get("category")

    return {
        category: {
            method: _metric_stats(
                [r for r in records if category_of(r) == category and r.get("method") == method],
                metrics,
                confidence,
            )
            for method in methods
        }
        for category in unique(category_of(r) for r in records)
    }


def _delta_summary(records, methods, metrics, baseline, confidence) -> dict:
    if baseline is None or not metrics:  # nothing to compare (one method, or nothing scored)
        return {}
    deltas = {}
    for method in methods:
        if method == baseline:
            continue
        deltas[method] = {}
        for metric in metrics:
            keyed = paired_differences(records, metric, method, baseline, with_keys=True)
            differences = [d for _, d in keyed]
            deltas[method][metric] = {**_stat(differences, [key[0] for key, _ in keyed], confidence), "wins": sum(d > 0 for d in differences),
                                      "losses": sum(d < 0 for d in differences)}
    return deltas


def _coverage(records, methods, baseline) -> dict:
    """{method: {images, baseline_images, shared}} for each method whose usable images (drawn,
    not failed) are not those of the baseline, by prompt and seed: its mean is then over other
    images than the baseline's (CONFORM skips one-object prompts; seeds added for one method)."""
    if baseline is None:
        return {}

    def drawn(method):
        return {(r.get("prompt_id"), r.get("seed")) for r in records if r.get("method") == method
                and r.get("status") == "ok"}

    base = drawn(baseline)
    out = {}
    for method in methods:
        own = drawn(method)
        if method != baseline and own != base:
            out[method] = {"images": len(own), "baseline_images": len(base), "shared": len(own & base)}
    return out


# Does CLIP's judgement follow the exact one? Only where both exist (ShapesWorld prompts).
_AGREEMENT_PAIR = ("min_object_similarity", "oracle_success")


def _agreement(records, methods, metrics) -> dict:
    """Pearson correlation (point-biserial: the oracle is 0/1) between CLIP minimum-object
    similarity and oracle success over images, per method and over all; ``{}`` without both."""
    a, b = _AGREEMENT_PAIR
    if a not in metrics or b not in metrics:
        return {}
    groups = {m: [r for r in records if r.get("method") == m] for m in methods}
    groups["all methods"] = list(records)
    out = {}
    for name, group in groups.items():
        pairs = [(metric_value(r, a), metric_value(r, b)) for r in group]
        pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
        out[name] = {"r": _finite_or_none(_pearson(pairs)), "n": len(pairs)}
    return out


# The benchmarks' judges whose per-image score is a verdict in [0, 1] (see .judges).
JUDGE_VERDICTS = ("bvqa", "geneval_correct")


def _judge_agreement(records, methods, metrics) -> dict:
    """{judge metric: {method or "all methods": {r, accuracy, n}}} where the oracle judged the
    same images: Pearson r with oracle success, and the accuracy of "score >= 0.5" as a verdict."""
    oracle = "oracle_success"
    if oracle not in metrics:
        return {}
    out = {}
    for metric in (m for m in JUDGE_VERDICTS if m in metrics):
        groups = {m: [r for r in records if r.get("method") == m] for m in methods}
        groups["all methods"] = list(records)
        out[metric] = {}
        for name, group in groups.items():
            pairs = [(metric_value(r, metric), metric_value(r, oracle)) for r in group]
            pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
            hits = [(x >= 0.5) == (y >= 0.5) for x, y in pairs]
            out[metric][name] = {"r": _finite_or_none(_pearson(pairs)),
                                 "accuracy": sum(hits) / len(hits) if hits else None, "n": len(pairs)}
    return out


def _pearson(pairs: list[tuple[float, float]]) -> float:
    if len(pairs) < 2:
        return math.nan
    xs, ys = zip(*pairs)
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxy = sum((x - mx) * (y - my) for x, y in pairs)
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan
