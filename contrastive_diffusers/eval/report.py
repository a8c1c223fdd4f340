"""Summaries and reports of a benchmark run, from its per-image records (``metrics.jsonl``).

- :func:`summarize`: per method and per category, every metric's mean with a t confidence
  interval over images; every method's paired difference from the baseline (same prompt,
  same seed); the failures. A JSON-serialisable dict (``None`` where a number is undefined).
- :func:`format_summary_table`: the summary as plain-text tables for the console.
- :func:`write_markdown`: a Markdown report of the summary.
- :func:`write_html`: one self-contained HTML page (images embedded as base64 thumbnails)
  with the summary tables and, per prompt, the methods' images side by side.

A record is a dict with ``method``, ``prompt_id``, ``prompt``, ``category``, ``seed``,
``image`` / ``attention`` (paths relative to the run folder), ``status`` ("ok", "failed", or
"not_applicable": the method cannot apply to that prompt, e.g. CONFORM to a single object),
``error`` and ``metrics`` (name -> number or None); see :mod:`contrastive_diffusers.eval.bench`.
Any number in ``metrics`` counts as a metric, so new metrics need no change here.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from pathlib import Path
from typing import Sequence

from ..atomic_io import write_text_atomic
from .metrics import METRIC_NAMES
from .stats import mean_ci, metric_value, paired_differences

__all__ = ["format_summary_table", "summarize", "write_html", "write_markdown"]

# Metrics known to the runner, in the order tables show them; others follow alphabetically.
CANONICAL_METRICS = METRIC_NAMES
NOT_APPLICABLE = "not_applicable"
_DECIMALS = {"clip_score": 2, "full_similarity": 4, "min_object_similarity": 4, "text_text_similarity": 4}
_DEFAULT_DECIMALS = 3  # probabilities and accuracies (quality, binding_*) and unknown metrics
_CATEGORY_METRICS = ("oracle_success", "clip_score", "min_object_similarity")
_HOW_TO_READ = (
    "Each cell is the mean over images with the half-width of its {pct} t-interval "
    "(mean ± t · s/√n; \"n/a\" when only one image). Differences from the baseline are paired: "
    "each image is compared with the baseline's image of the same prompt and seed, and *wins* "
    "counts the pairs where the method scored higher. Binding accuracy is the fraction of "
    "binding contrast captions (the prompt with the attributes or the objects swapped) that "
    "CLIP ranks below the image's own prompt; binding text score is 1 when all of them are "
    "(Winoground-style text score); replace-object score is 1 when the prompt beats the one "
    "with an object replaced (presence, not binding). Failed images are left out of the means "
    "and listed under Failures."
)


# --- summary ------------------------------------------------------------------------------------


def summarize(records: Sequence[dict], baseline: str | None = None, confidence: float = 0.95) -> dict:
    """Means, confidence intervals, paired deltas and failures of a run's records.

    ``baseline`` defaults to ``"none"`` (plain generation) when present, else the first
    method; it is None when the run has a single method.
    """
    records = list(records)
    methods = _unique(r.get("method") for r in records)
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
        "agreement": _agreement(records, methods, metrics),
        "failures": _listed(records, "failed"),
        "not_applicable": _listed(records, NOT_APPLICABLE),
    }


def _listed(records, status: str) -> list[dict]:
    return [
        {"method": r.get("method"), "prompt_id": r.get("prompt_id"), "seed": r.get("seed"), "error": r.get("error")}
        for r in records
        if r.get("status") == status
    ]


def _unique(items) -> list:
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


def _stat(values: list[float], confidence: float) -> dict:
    ci = mean_ci(values, confidence)
    return {"mean": _finite_or_none(ci.mean), "half_width": _finite_or_none(ci.half_width), "n": ci.n}


def _finite_or_none(x: float) -> float | None:
    # JSON has no NaN; None reads as "undefined" in every consumer.
    return x if math.isfinite(x) else None


def _metric_stats(records: list[dict], metrics: list[str], confidence: float) -> dict:
    stats = {}
    for metric in metrics:
        values = [metric_value(r, metric) for r in records]
        stats[metric] = _stat([v for v in values if v is not None], confidence)
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


def _category_summary(records, methods, metrics, confidence) -> dict:
    """{category: {method: {metric: stat}}}; records without a category are only in the totals."""
    categories = _unique(r.get("category") for r in records if r.get("category") is not None)
    return {
        category: {
            method: _metric_stats(
                [r for r in records if r.get("category") == category and r.get("method") == method],
                metrics,
                confidence,
            )
            for method in methods
        }
        for category in categories
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
            differences = paired_differences(records, metric, method, baseline)
            deltas[method][metric] = {**_stat(differences, confidence), "wins": sum(d > 0 for d in differences)}
    return deltas


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


def _pearson(pairs: list[tuple[float, float]]) -> float:
    if len(pairs) < 2:
        return math.nan
    xs, ys = zip(*pairs)
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxy = sum((x - mx) * (y - my) for x, y in pairs)
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan


def _agreement_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    rows = [
        [name, "n/a" if v["r"] is None else f"{v['r']:+.3f}", str(v["n"])]
        for name, v in summary.get("agreement", {}).items()
    ]
    return ["method", "r (CLIP min-object similarity vs oracle success)", "n"], rows


_AGREEMENT_TITLE = "Agreement of CLIP with the oracle"


# --- table building (shared by the text, Markdown and HTML renderers) ---------------------------


def _format_number(metric: str, value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    decimals = _DECIMALS.get(metric, _DEFAULT_DECIMALS)
    return f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"


def _format_stat(metric: str, stat: dict, signed: bool = False) -> str:
    """``"23.10 ± 0.45"``; ``"-"`` when there is no value at all."""
    if stat["mean"] is None:
        return "-"
    return f"{_format_number(metric, stat['mean'], signed)} ± {_format_number(metric, stat['half_width'])}"


def _main_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    header = ["method", *summary["metrics"], "n", "failed"]
    with_na = any(info.get("n_not_applicable") for info in summary["per_method"].values())
    header += ["not applicable"] if with_na else []
    rows = []
    for method in summary["methods"]:
        info = summary["per_method"][method]
        cells = [_format_stat(m, info["metrics"][m]) for m in summary["metrics"]]
        rows.append([str(method), *cells, str(info["n_images"]), str(info["n_failed"])])
        rows[-1] += [str(info.get("n_not_applicable", 0))] if with_na else []
    return header, rows


def _delta_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """Rows of ``"+0.52 ± 0.30 (7/10)"``: paired mean difference, CI, wins out of pairs."""
    header = ["method", *summary["metrics"]]
    rows = []
    for method, per_metric in summary["deltas"].items():
        cells = []
        for metric in summary["metrics"]:
            stat = per_metric[metric]
            cell = _format_stat(metric, stat, signed=True)
            cells.append(cell if stat["n"] == 0 else f"{cell} ({stat['wins']}/{stat['n']})")
        rows.append([str(method), *cells])
    return header, rows


def _category_tables(summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """One (metric, header, rows) table per main metric: rows = categories, columns = methods."""
    if not summary["per_category"]:
        return []
    tables = []
    for metric in (m for m in _CATEGORY_METRICS if m in summary["metrics"]):
        header = ["category", *map(str, summary["methods"])]
        rows = []
        for category, per_method in summary["per_category"].items():
            cells = []
            for method in summary["methods"]:
                stat = per_method[method][metric]
                cells.append("-" if stat["n"] == 0 else f"{_format_stat(metric, stat)}, n={stat['n']}")
            rows.append([str(category), *cells])
        tables.append((metric, header, rows))
    return tables


def _delta_title(summary: dict) -> str:
    return f"Difference from {summary['baseline']!r}, paired by prompt and seed (mean ± CI (wins/pairs))"


# --- plain text ---------------------------------------------------------------------------------


def format_summary_table(summary: dict) -> str:
    """The summary as aligned plain-text tables: one row per method, then deltas vs baseline."""
    parts = [_text_table(*_main_table(summary))]
    if summary["deltas"]:
        parts.append(_delta_title(summary) + ":\n" + _text_table(*_delta_table(summary)))
    return "\n\n".join(parts)


def _text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --- Markdown -----------------------------------------------------------------------------------


def write_markdown(
    summary: dict, path: str | os.PathLike, title: str = "Benchmark results", run_info: dict | None = None
) -> Path:
    """Write the summary as a Markdown report (atomically) and return its path."""
    pct = f"{summary['confidence'] * 100:g}%"  # 0.975 -> 97.5%, not 98%
    lines = [f"# {_md_text(title)}", ""]
    if run_info:
        lines += ["## Run", "", *_md_table(["setting", "value"], [[str(k), str(v)] for k, v in run_info.items()]), ""]
    lines += [f"## Results (mean ± {pct} CI)", "", *_md_table(*_main_table(summary)), ""]
    if summary["deltas"]:
        lines += [f"## {_md_text(_delta_title(summary))}", "", *_md_table(*_delta_table(summary)), ""]
    for metric, header, rows in _category_tables(summary):
        lines += [f"## By category: {metric}", "", *_md_table(header, rows), ""]
    if summary.get("agreement"):
        lines += [f"## {_AGREEMENT_TITLE}", "", *_md_table(*_agreement_table(summary)), ""]
    lines += ["## How to read this", "", _HOW_TO_READ.format(pct=pct), ""]
    lines += ["## Failures", ""]
    failures = summary["failures"]
    lines += [_md_failure(f) for f in failures] if failures else ["None."]
    if summary.get("not_applicable"):
        lines += ["", "## Not applicable", "", _not_applicable_text(summary["not_applicable"])]
    return _write_atomic(path, "\n".join(lines) + "\n")


def _not_applicable_text(entries: list[dict]) -> str:
    """One line per method and reason: images a method cannot make (left out of its means)."""
    counts: dict[tuple, int] = {}
    for e in entries:
        reason = str(e["error"] or "").split(";")[0].split(" for prompt")[0]
        counts[(e["method"], reason)] = counts.get((e["method"], reason), 0) + 1
    return "\n".join(f"- `{m}`: {n} image(s): {_md_text(reason)}" for (m, reason), n in counts.items())


def _md_text(text: str) -> str:
    # A pipe would split a table cell and a newline would end the row.
    return str(text).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(_md_text(c) for c in header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_md_text(c) for c in row) + " |" for row in rows]


def _md_failure(failure: dict) -> str:
    return (
        f"- `{failure['method']}` / `{failure['prompt_id']}` / seed {failure['seed']}: "
        f"{_md_text(failure['error'] or 'no error message')}"
    )


# --- HTML ---------------------------------------------------------------------------------------

_CSS = """
body { font-family: sans-serif; margin: 1.5em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
.grid td { font-size: 12px; }
.grid img { display: block; margin-bottom: 3px; }
.error { color: #b00; max-width: 16em; }
.note { color: #666; font-style: italic; }
"""


def write_html(
    records: Sequence[dict],
    summary: dict,
    run_dir: str | os.PathLike,
    path: str | os.PathLike,
    title: str = "Benchmark results",
    run_info: dict | None = None,
    thumb_size: int = 128,
    max_prompts: int | None = None,
) -> Path:
    """Write one self-contained HTML page (atomically) and return its path.

    The summary tables, then per prompt a grid: methods side by side, one row per seed, each
    cell the image thumbnail, the attention heatmap (when saved) and a few metrics.
    """
    esc = html.escape
    pct = f"{summary['confidence'] * 100:g}%"  # 0.975 -> 97.5%, not 98%
    body = [f"<h1>{esc(title)}</h1>"]
    if run_info:
        body += ["<h2>Run</h2>", _html_table(["setting", "value"], [[str(k), str(v)] for k, v in run_info.items()])]
    body += [f"<h2>Results (mean ± {pct} CI)</h2>", _html_table(*_main_table(summary))]
    if summary["deltas"]:
        body += [f"<h2>{esc(_delta_title(summary))}</h2>", _html_table(*_delta_table(summary))]
    for metric, header, rows in _category_tables(summary):
        body += [f"<h2>By category: {esc(metric)}</h2>", _html_table(header, rows)]
    if summary.get("agreement"):
        body += [f"<h2>{_AGREEMENT_TITLE}</h2>", _html_table(*_agreement_table(summary))]
    body += ["<h2>How to read this</h2>", f"<p>{esc(_HOW_TO_READ.format(pct=pct)).replace('*', '')}</p>"]
    body += _html_failures(summary["failures"])
    if summary.get("not_applicable"):
        lines = _not_applicable_text(summary["not_applicable"]).splitlines()
        body += ["<h2>Not applicable</h2>", "<ul>" + "".join(f"<li>{esc(x[2:])}</li>" for x in lines) + "</ul>"]
    body += _html_prompts(records, summary["methods"], Path(run_dir), thumb_size, max_prompts)
    page = (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{esc(title)}</title>\n'
        f"<style>{_CSS}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )
    return _write_atomic(path, page)


def _html_table(header: list[str], rows: list[list[str]], escape: bool = True) -> str:
    cell = html.escape if escape else str
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _html_failures(failures: list[dict]) -> list[str]:
    if not failures:
        return ["<h2>Failures</h2>", "<p>None.</p>"]
    rows = [[str(f["method"]), str(f["prompt_id"]), str(f["seed"]), str(f["error"] or "")] for f in failures]
    return ["<h2>Failures</h2>", _html_table(["method", "prompt", "seed", "error"], rows)]


def _html_prompts(records, methods, run_dir: Path, thumb_size: int, max_prompts: int | None) -> list[str]:
    prompt_ids = _unique(r.get("prompt_id") for r in records)
    shown = prompt_ids if max_prompts is None else prompt_ids[:max_prompts]
    parts = ["<h2>Images</h2>"]
    for prompt_id in shown:
        own = [r for r in records if r.get("prompt_id") == prompt_id]
        parts.append(_html_prompt_section(own, methods, run_dir, thumb_size))
    if len(shown) < len(prompt_ids):
        left_out = len(prompt_ids) - len(shown)
        parts.append(f'<p class="note">{left_out} more prompt(s) not shown (max_prompts={max_prompts}).</p>')
    return parts


def _html_prompt_section(records: list[dict], methods: list, run_dir: Path, thumb_size: int) -> str:
    esc = html.escape
    first = records[0]
    details = [f"id: {esc(str(first.get('prompt_id')))}"]
    if first.get("category") is not None:
        details.append(f"category: {esc(str(first['category']))}")
    if first.get("token_groups"):
        groups = ", ".join("[" + " ".join(map(str, g)) + "]" for g in first["token_groups"])
        details.append(f"token groups: {esc(groups)}")
    by_cell = {(r.get("method"), r.get("seed")): r for r in records}  # a re-run's later record wins
    rows = []
    for seed in _unique(r.get("seed") for r in records):
        cells = [_html_cell(by_cell.get((m, seed)), run_dir, thumb_size) for m in methods]
        rows.append([esc(f"seed {seed}"), *cells])
    # The cells are built (and escaped) HTML already, so they must not be escaped again.
    grid = _html_table(["", *map(str, methods)], rows, escape=False)
    grid = grid.replace("<table>", '<table class="grid">', 1)
    return f"<section>\n<h3>{esc(str(first.get('prompt')))}</h3>\n<p>{' · '.join(details)}</p>\n{grid}\n</section>"


def _html_cell(record: dict | None, run_dir: Path, thumb_size: int) -> str:
    if record is None:
        return '<span class="note">not run</span>'
    if record.get("status") == NOT_APPLICABLE:
        return f'<div class="note">not applicable: {html.escape(str(record.get("error") or ""))}</div>'
    if record.get("status") != "ok":
        return f'<div class="error">failed: {html.escape(str(record.get("error") or "no error message"))}</div>'
    parts = [_html_image(record.get("image"), run_dir, thumb_size, "image")]
    if record.get("attention"):
        parts.append(_html_image(record["attention"], run_dir, thumb_size, "attention"))
    parts.append(_html_metrics_line(record))
    return "".join(parts)


def _html_image(relative: str | None, run_dir: Path, thumb_size: int, kind: str) -> str:
    if not relative:
        return '<div class="note">no image</div>'
    file = run_dir / relative
    if not file.is_file():
        return f'<div class="error">missing: {html.escape(str(relative))}</div>'
    try:
        uri = _thumbnail_uri(file, thumb_size, heatmap=(kind == "attention"))
    except OSError as error:  # a truncated or corrupt file should not sink the whole report
        return f'<div class="error">unreadable: {html.escape(str(relative))} ({html.escape(str(error))})</div>'
    return f'<img src="{uri}" alt="{html.escape(kind)}: {html.escape(str(relative))}">'


def _thumbnail_uri(file: Path, thumb_size: int, heatmap: bool) -> str:
    """A base64 JPEG ``data:`` URI: images fit in thumb_size², heatmap strips get its height."""
    from PIL import Image

    with Image.open(file) as image:
        image = image.convert("RGB")
    if heatmap:
        width = max(1, round(image.width * thumb_size / image.height))
        image = image.resize((width, thumb_size), Image.Resampling.BILINEAR)
    elif max(image.size) * 2 <= thumb_size:
        # small images (ShapesWorld's 32 px) are enlarged by whole pixels, not left as specks
        factor = thumb_size // max(image.size)
        image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    else:
        image.thumbnail((thumb_size, thumb_size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    # JPEG for heatmaps too: a page of hundreds of cells stays a few MB rather than tens.
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _html_metrics_line(record: dict) -> str:
    shown = [("CLIP", "clip_score"), ("min-obj", "min_object_similarity"), ("binding", "binding_text_score")]
    values = [(label, metric, metric_value(record, metric)) for label, metric in shown]
    text = " · ".join(f"{label} {_format_number(metric, v)}" for label, metric, v in values if v is not None)
    oracle = record.get("oracle")
    if oracle is not None:  # ShapesWorld: the exact verdict first, with the oracle's reasons
        verdict = "oracle: correct" if oracle.get("success") else "oracle: wrong (" + "; ".join(oracle.get("reasons") or []) + ")"
        text = verdict + (" · " + text if text else "")
    return f"<div>{html.escape(text)}</div>" if text else ""


# --- files --------------------------------------------------------------------------------------


def _write_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write through a temporary file in the same folder, so readers never see half a report."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
    return path
