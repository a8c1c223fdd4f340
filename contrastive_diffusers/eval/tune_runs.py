"""How ``tune`` and the evidence script make and compare images: named *arms* (plain, a
method's defaults, a candidate or a tuned config file) run through the benchmark runner,
one bench folder per map size, and their paired comparison with 95% intervals.

Every image is a bench image: the folders are ordinary ``bench`` folders (ledger, records,
reports), so a re-run resumes and a changed configuration under an old name is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .bench import BenchConfig, run_benchmark
from .stats import metric_value, paired_differences, prompt_mean_ci

__all__ = ["Arm", "arm_tables", "maps_folder", "run_arms"]


@dataclass(frozen=True)
class Arm:
    """One way of making images: ``entry`` is what ``bench --method`` takes (``"none"``, a
    built-in name, or a config file whose stem is the arm's name); ``attn_res`` its map size
    (``None``: the pipeline's default); ``same_as`` another arm's name when this one's settings
    are that arm's (a tuned setting that kept the paper defaults): its images are that arm's,
    not drawn again."""

    name: str
    entry: str
    attn_res: tuple[int, int] | None = None
    same_as: str | None = None


def maps_folder(root: Path, attn_res) -> Path:
    """The bench folder of one map size: ``root`` for the default, ``root/maps-HxW`` otherwise
    (a bench folder fixes its generation settings, the map size among them)."""
    return Path(root) if attn_res is None else Path(root) / f"maps-{attn_res[0]}x{attn_res[1]}"


def run_arms(root, arms: Sequence[Arm], items: list, seeds: Sequence[int], bench: dict[str, Any]) -> list[dict]:
    """Every arm's images of ``items`` x ``seeds`` (made now or found from an earlier run) as
    bench records. ``bench``: the other :class:`BenchConfig` fields (model, steps, clip_model,
    ...). Image paths in the records are made relative to ``root``."""
    root = Path(root)
    by_size: dict = {}
    for arm in arms:
        if arm.same_as is None:
            by_size.setdefault(arm.attn_res, []).append(arm)
    wanted_prompts, wanted_seeds = {item.id for item in items}, set(seeds)
    records = []
    for attn_res, group in by_size.items():
        folder = maps_folder(root, attn_res)
        result = run_benchmark(BenchConfig(output_dir=folder, methods=[a.entry for a in group], prompt_set=list(items),
                                           seeds=list(seeds), attn_res=attn_res, **bench))
        prefix = folder.relative_to(root).as_posix()
        names = {a.name for a in group}
        for record in result.records:
            if record["method"] in names and record["prompt_id"] in wanted_prompts and record["seed"] in wanted_seeds:
                record = dict(record)
                for key in ("image", "attention"):
                    if record.get(key) and prefix != ".":
                        record[key] = f"{prefix}/{record[key]}"
                records.append(record)
    for arm in arms:
        if arm.same_as is not None:
            records += [{**r, "method": arm.name} for r in records if r["method"] == arm.same_as]
    return records


def _stat(values: list[float], prompts: list, bounds: tuple[float, float] | None = None) -> dict:
    """Mean and 95% t-interval over prompts (cluster-robust: the seeds of one prompt are not
    independent draws, so ``n`` images of ``n_prompts`` prompts resolve less than ``n``
    independent images would; with one seed per prompt it is the plain t-interval, with one
    prompt the interval over its seeds).
    ``bounds`` clip the interval to the values a mean can take (a t-interval over few 0/1
    values can reach past 0 or 1, which no success rate can)."""
    ci, n_prompts = prompt_mean_ci(values, prompts)
    low, high = ci.low, ci.high
    if bounds is not None and ci.n > 1:
        low, high = max(low, bounds[0]), min(high, bounds[1])

    def finite(x):
        return round(x, 6) if math.isfinite(x) else None

    return {"mean": finite(ci.mean), "ci_low": finite(low), "ci_high": finite(high), "n": len(values),
            "n_prompts": n_prompts}


def _is_binary(records: list[dict], metric: str) -> bool:
    """Whether every scored value of ``metric`` is 0 or 1 (a success rate, e.g. the oracle's)."""
    values = [metric_value(r, metric) for r in records]
    scored = [v for v in values if v is not None]
    return bool(scored) and all(v in (0.0, 1.0) for v in scored)


def arm_tables(records: list[dict], metric: str, arms: Sequence[str], baseline: str = "none",
               overall: bool = False, pairs: Sequence[tuple[str, str]] = ()) -> dict:
    """``{"methods": {arm: {category: {mean, ci_low, ci_high, n}}}, "paired": {arm: {category:
    {delta, ci_low, ci_high, n}}}}`` (``n`` images, ``n_prompts`` prompts): each arm's mean of
    ``metric`` with its 95% t-interval over prompts (clipped to [0, 1], and differences to
    [-1, 1], when the metric is a 0/1 success), and its difference from ``baseline`` paired by
    prompt and seed (images where either is not applicable or failed are left out). ``overall`` adds a category ``"all"``; ``pairs`` adds
    ``"<arm> vs <other>"`` entries to ``paired`` (e.g. tuned against the paper defaults)."""
    categories = list(dict.fromkeys(r.get("category") for r in records if r.get("category") is not None))
    groups = {c: [r for r in records if r.get("category") == c] for c in categories}
    if overall or not categories:
        groups["all"] = list(records)
    binary = _is_binary(records, metric)
    mean_bounds, delta_bounds = ((0.0, 1.0), (-1.0, 1.0)) if binary else (None, None)
    methods = {}
    for arm in arms:
        methods[arm] = {}
        for category, group in groups.items():
            scored = [(r.get("prompt_id"), metric_value(r, metric)) for r in group if r.get("method") == arm]
            scored = [(prompt, v) for prompt, v in scored if v is not None]
            methods[arm][category] = _stat([v for _, v in scored], [prompt for prompt, _ in scored], mean_bounds)
    comparisons = [(arm, baseline) for arm in arms if arm != baseline] + list(pairs)
    paired = {}
    for arm, other in comparisons:
        key = arm if other == baseline else f"{arm} vs {other}"
        paired[key] = {}
        for category, group in groups.items():
            keyed = paired_differences(group, metric, arm, other, with_keys=True)
            stat = _stat([d for _, d in keyed], [key[0] for key, _ in keyed], delta_bounds)
            paired[key][category] = {"delta": stat.pop("mean"), **stat}
    return {"methods": methods, "paired": paired}
