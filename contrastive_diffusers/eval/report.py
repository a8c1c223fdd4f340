"""Reports of a benchmark summary (:func:`~.summary.summarize`) as text and Markdown, and the
tables every report shares (the HTML page, :mod:`.report_html`, builds on them).

- :func:`format_summary_table`: the summary as plain-text tables for the console.
- :func:`write_markdown`: a Markdown report of the summary.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

from ..atomic_io import write_text_atomic

__all__ = ["coverage_note", "format_summary_table", "judge_tables", "md_table", "not_applicable_counts",
           "write_markdown"]

_DECIMALS = {"clip_score": 2, "full_similarity": 4, "min_object_similarity": 4, "text_text_similarity": 4,
             "bvqa": 4, "t2i_clip": 4}
_DEFAULT_DECIMALS = 3  # probabilities and accuracies (quality, binding_*) and unknown metrics
_CATEGORY_METRICS = ("oracle_success", "clip_score", "min_object_similarity", "bvqa", "geneval_correct")
HOW_TO_READ = (
    "Each cell is the mean over images with the half-width of its {pct} t-interval over prompts "
    "(mean ± t · s/√n with one seed per prompt; with several, the cluster-robust interval that "
    "counts prompts, not images, as independent draws; with one prompt, over its seeds; "
    "\"n/a\" when only one image; ± 0 when "
    "every image has the same value or every prompt's mean is the same (its seeds may differ), "
    "which is no certainty: for a 0/1 metric the exact interval is wider; the chart draws the "
    "same intervals cut at the values a metric can take, 0 and 1 for rates, 100 for CLIPScore). "
    "Differences from the "
    "baseline are paired: each image is compared with the baseline's image of the same prompt "
    "and seed, and (a↑ b↓ of n) counts the pairs where the method scored higher (a) and lower "
    "(b); the rest are ties. Binding accuracy is the fraction of "
    "binding contrast captions (the prompt with the attributes or the objects swapped) that "
    "CLIP ranks below the image's own prompt; binding text score is 1 when all of them are "
    "(Winoground-style text score); replace-object score is 1 when the prompt beats the one "
    "with an object replaced (presence, not binding). Failed images are left out of the means "
    "and listed under Failures."
)
AGREEMENT_TITLE = "Agreement of CLIP with the oracle"
JUDGE_AGREEMENT_TITLE = "Agreement of the benchmarks' judges with the oracle"


def agreement_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    rows = [
        [name, "n/a" if v["r"] is None else f"{v['r']:+.3f}", str(v["n"])]
        for name, v in summary.get("agreement", {}).items()
    ]
    return ["method", "r (CLIP min-object similarity vs oracle success)", "n"], rows


def judge_agreement_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """Per judge metric and method: correlation with the oracle, accuracy of the judge's
    verdict (score >= 0.5) against it, images."""
    rows = []
    for metric, per_group in summary.get("judge_agreement", {}).items():
        for name, v in per_group.items():
            r = "n/a" if v["r"] is None else f"{v['r']:+.3f}"
            accuracy = "n/a" if v["accuracy"] is None else f"{v['accuracy']:.3f}"
            rows.append([metric, name, r, accuracy, str(v["n"])])
    return ["judge metric", "method", "r (vs oracle success)", "accuracy (score >= 0.5 vs oracle)", "n"], rows


def judge_tables(summary: dict) -> list[tuple[str, list[str], list[list[str]], list[str]]]:
    """Each judge's own table (:meth:`~.judges.Judge.summarize`) as (title, header, rows, notes),
    numbers with 4 decimals as the benchmarks print them."""
    tables = []
    for name, table in summary.get("judges", {}).items():
        rows = [[_judge_cell(c) for c in row] for row in table["rows"]]
        tables.append((table.get("title") or name, list(table["columns"]), rows, list(table.get("notes") or [])))
    return tables


def _judge_cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


# --- table building (shared by the text, Markdown and HTML renderers) ---------------------------


def format_number(metric: str, value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    decimals = _DECIMALS.get(metric, _DEFAULT_DECIMALS)
    return f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"


def _format_stat(metric: str, stat: dict, signed: bool = False) -> str:
    """``"23.10 ± 0.45"``; ``"-"`` when there is no value at all."""
    if stat["mean"] is None:
        return "-"
    return f"{format_number(metric, stat['mean'], signed)} ± {format_number(metric, stat['half_width'])}"


def main_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """One row per method: each metric's mean ± CI, then the images it was to draw (the
    prompts it applies to, times seeds), of them the failed ones, and the not applicable. A metric with fewer values than the images left (unscored ones) says how
    many its mean rests on: ``"0.52 ± 0.03 (n=40)"``."""
    header = ["method", *summary["metrics"], "images", "failed"]
    with_na = any(info.get("n_not_applicable") for info in summary["per_method"].values())
    header += ["not applicable"] if with_na else []
    rows = []
    for method in summary["methods"]:
        info = summary["per_method"][method]
        scorable = info["n_images"] - info["n_failed"] - info.get("n_not_applicable", 0)
        cells = []
        for m in summary["metrics"]:
            stat = info["metrics"][m]
            n = stat.get("n", scorable)
            cells.append(_format_stat(m, stat) + (f" (n={n})" if stat["mean"] is not None and n < scorable else ""))
        applied = info["n_images"] - info.get("n_not_applicable", 0)  # records include the prompts it skipped
        rows.append([str(method), *cells, str(applied), str(info["n_failed"])])
        rows[-1] += [str(info.get("n_not_applicable", 0))] if with_na else []
    return header, rows


def delta_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """Rows of ``"+0.52 ± 0.30 (7↑ 2↓ of 10)"``: paired mean difference, CI, the pairs where the
    method scored higher and lower (ties are the rest)."""
    header = ["method", *summary["metrics"]]
    rows = []
    for method, per_metric in summary["deltas"].items():
        cells = []
        for metric in summary["metrics"]:
            stat = per_metric[metric]
            cell = _format_stat(metric, stat, signed=True)
            cells.append(cell if stat["n"] == 0 else f"{cell} ({stat['wins']}↑ {stat['losses']}↓ of {stat['n']})")
        rows.append([str(method), *cells])
    return header, rows


def category_tables(summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
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


def delta_title(summary: dict) -> str:
    return f"Difference from {summary['baseline']}, paired by prompt and seed (mean ± CI (higher↑ lower↓ of pairs))"


def coverage_note(summary: dict) -> str | None:
    """A warning when the methods' means rest on different images (a method not applicable to
    some prompts, failures, or seeds and prompts added for some methods only): their means are
    then not comparable, their paired differences are."""
    coverage = summary.get("coverage") or {}
    if not coverage:
        return None
    parts = [f"{method}: {c['images']} image(s), {c['shared']} of them with a {summary['baseline']} image of the "
             f"same prompt and seed ({summary['baseline']}: {c['baseline_images']})" for method, c in coverage.items()]
    return ("The means above rest on different images (" + "; ".join(parts) + "), so they are not comparable "
            "with each other; the paired differences compare the same prompts and seeds.")


# --- plain text ---------------------------------------------------------------------------------


def format_summary_table(summary: dict) -> str:
    """The summary as aligned plain-text tables: one row per method, then deltas vs baseline."""
    parts = [_text_table(*main_table(summary))]
    note = coverage_note(summary)
    parts += [note] if note else []
    if summary["deltas"]:
        parts.append(delta_title(summary) + ":\n" + _text_table(*delta_table(summary)))
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
        lines += ["## Run", "", *md_table(["setting", "value"], [[str(k), str(v)] for k, v in run_info.items()]), ""]
    lines += [f"## Results (mean ± {pct} CI)", "", *md_table(*main_table(summary)), ""]
    note = coverage_note(summary)
    lines += [_md_text(note), ""] if note else []
    if summary["deltas"]:
        lines += [f"## {_md_text(delta_title(summary))}", "", *md_table(*delta_table(summary)), ""]
    for metric, header, rows in category_tables(summary):
        lines += [f"## By category: {metric}", "", *md_table(header, rows), ""]
    if summary.get("agreement"):
        lines += [f"## {AGREEMENT_TITLE}", "", *md_table(*agreement_table(summary)), ""]
    for title, header, rows, notes in judge_tables(summary):
        lines += [f"## {_md_text(title)} (the benchmark's own judge)", ""]
        lines += [*md_table(header, rows), ""] if rows else []
        lines += [*(f"- {_md_text(note)}" for note in notes), ""] if notes else []
    if summary.get("judge_agreement"):
        lines += [f"## {JUDGE_AGREEMENT_TITLE}", "", *md_table(*judge_agreement_table(summary)), ""]
    lines += ["## How to read this", "", HOW_TO_READ.format(pct=pct), ""]
    lines += ["## Failures", ""]
    failures = summary["failures"]
    lines += [_md_failure(f) for f in failures] if failures else ["None."]
    if summary.get("not_applicable"):
        lines += ["", "## Not applicable", "", not_applicable_text(summary["not_applicable"])]
    return write_report_file(path, "\n".join(lines) + "\n")


def not_applicable_counts(entries: list[dict]) -> list[tuple[str, str, int]]:
    """(method, reason, images) per method and reason: images a method cannot make (left out
    of its means)."""
    counts = Counter((str(e["method"]), str(e["error"] or "").split(";")[0].split(" for prompt")[0]) for e in entries)
    return [(method, reason, n) for (method, reason), n in counts.items()]


def not_applicable_text(entries: list[dict]) -> str:
    """One Markdown list line per method and reason (:func:`not_applicable_counts`)."""
    return "\n".join(f"- {_md_code(m)}: {n} image(s): {_md_text(reason)}"
                     for m, reason, n in not_applicable_counts(entries))


def _md_text(text: str) -> str:
    # A pipe would split a table cell and a newline would end the row; <, > and & would be read
    # as HTML (a prompt "a <b>red</b> car" would turn bold, an error "<oom>" vanish).
    text = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _md_code(text) -> str:
    """``text`` as a code span: fenced with more backticks than it holds in a row, so a backtick
    in a method name or prompt id cannot end the span early."""
    text = str(text).replace("\r", " ").replace("\n", " ")
    run = max((len(r) for r in re.findall("`+", text)), default=0)
    fence = "`" * (run + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(_md_text(c) for c in header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_md_text(c) for c in row) + " |" for row in rows]


def _md_failure(failure: dict) -> str:
    return (
        f"- {_md_code(failure['method'])} / {_md_code(failure['prompt_id'])} / seed {failure['seed']}: "
        f"{_md_text(failure['error'] or 'no error message')}"
    )


# --- files --------------------------------------------------------------------------------------


def write_report_file(path: str | os.PathLike, text: str) -> Path:
    """Write through a temporary file in the same folder, so readers never see half a report."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
    return path
