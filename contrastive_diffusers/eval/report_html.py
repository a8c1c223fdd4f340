"""The benchmark report as one self-contained HTML page (images embedded as base64 thumbnails):
first the pictures (the main metric per category and method as a chart with its intervals,
:mod:`.report_charts`, and a grid of the same prompts and seeds across methods), then the
summary tables and, per prompt, the methods' images side by side with their heatmaps."""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Sequence

from .report import (
    AGREEMENT_TITLE,
    HOW_TO_READ,
    JUDGE_AGREEMENT_TITLE,
    agreement_table,
    category_tables,
    coverage_note,
    delta_table,
    delta_title,
    format_number,
    judge_agreement_table,
    judge_tables,
    main_table,
    not_applicable_counts,
    write_report_file,
)
from .report_charts import chart_svg, series_from_summary
from .report_grid import comparison_cells, grid_sample, verdict
from .stats import metric_value
from .summary import NOT_APPLICABLE, unique

__all__ = ["chart_metric", "comparison_grid", "html_table", "image_tag", "write_html"]

# The metric the chart shows: the first of these the run has.
_CHART_METRICS = ("oracle_success", "binding_accuracy", "min_object_similarity", "clip_score")

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
    body += _html_overview(records, summary, Path(run_dir), pct, max_prompts)
    if run_info:
        body += ["<h2>Run</h2>", html_table(["setting", "value"], [[str(k), str(v)] for k, v in run_info.items()])]
    body += [f"<h2>Results (mean ± {pct} CI)</h2>", html_table(*main_table(summary))]
    note = coverage_note(summary)
    body += [f'<p class="note">{esc(note)}</p>'] if note else []
    if summary["deltas"]:
        body += [f"<h2>{esc(delta_title(summary))}</h2>", html_table(*delta_table(summary))]
    for metric, header, rows in category_tables(summary):
        body += [f"<h2>By category: {esc(metric)}</h2>", html_table(header, rows)]
    if summary.get("agreement"):
        body += [f"<h2>{AGREEMENT_TITLE}</h2>", html_table(*agreement_table(summary))]
    for judge_title, header, rows, notes in judge_tables(summary):
        body += [f"<h2>{esc(judge_title)} (the benchmark's own judge)</h2>"]
        body += [html_table(header, rows)] if rows else []
        body += [f'<p class="note">{esc(note)}</p>' for note in notes]
    if summary.get("judge_agreement"):
        body += [f"<h2>{JUDGE_AGREEMENT_TITLE}</h2>", html_table(*judge_agreement_table(summary))]
    body += ["<h2>How to read this</h2>", f"<p>{esc(HOW_TO_READ.format(pct=pct))}</p>"]
    body += _html_failures(summary["failures"])
    if summary.get("not_applicable"):
        items = [f"<li><code>{esc(m)}</code>: {n} image(s): {esc(reason)}</li>"
                 for m, reason, n in not_applicable_counts(summary["not_applicable"])]
        body += ["<h2>Not applicable</h2>", "<ul>" + "".join(items) + "</ul>"]
    body += _html_prompts(records, summary["methods"], Path(run_dir), thumb_size, max_prompts)
    page = (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{esc(title)}</title>\n'
        f"<style>{_CSS}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )
    return write_report_file(path, page)


def chart_metric(summary: dict) -> str | None:
    """The metric the report's chart shows: the oracle where there is one, else a CLIP metric."""
    return next((m for m in _CHART_METRICS if m in summary["metrics"]), summary["metrics"][0] if summary["metrics"] else None)


def _html_overview(records, summary: dict, run_dir: Path, pct: str, max_prompts: int | None) -> list[str]:
    """The pictures above the tables: the chart and the grid of the same prompts across methods."""
    parts = []
    metric = chart_metric(summary)
    if metric is not None:
        label = "per category" if summary.get("per_category") else "over all images"
        parts += [f"<h2>{html.escape(metric)} {label} (mean, {pct} interval)</h2>",
                  chart_svg(series_from_summary(summary, metric), metric=metric)]
    shown = unique(r.get("prompt_id") for r in records)[:max_prompts]  # the prompts the page shows
    sample = grid_sample([r for r in records if r.get("prompt_id") in shown])
    if sample:
        parts += ["<h2>The same prompts and seeds across methods</h2>",
                  comparison_grid(records, summary["methods"], sample, run_dir)]
    return parts


def comparison_grid(records, methods: Sequence[str], pairs: Sequence[tuple[str, int]], run_dir: Path,
                    thumb_size: int = 96, labels: dict | None = None) -> str:
    """An HTML table: one row per (prompt id, seed), one column per method, each cell the image
    (no heatmap) with the oracle's verdict where there is one. ``labels``: column titles.
    The same cells as :func:`.report_grid.comparison_png`."""
    rows = []
    for first, cells in comparison_cells(records, methods, pairs):
        head = (f"{html.escape(str(first.get('prompt', first.get('prompt_id'))))}<br>"
                f"<span class=\"note\">seed {first['seed']}</span>")
        shown = []
        for record in cells:
            if record is None or record.get("status") != "ok":
                status = "not run" if record is None else str(record.get("status")).replace("_", " ")
                shown.append(f'<span class="note">{html.escape(status)}</span>')
                continue
            judged = verdict(record)
            mark = "" if judged is None else "<div>correct</div>" if judged else '<div class="error">wrong</div>'
            shown.append(image_tag(record.get("image"), run_dir, thumb_size) + mark)
        rows.append([head, *shown])
    header = ["prompt", *[str((labels or {}).get(m, m)) for m in methods]]
    return html_table(header, rows, escape=False).replace("<table>", '<table class="grid">', 1)


def html_table(header: list[str], rows: list[list[str]], escape: bool = True) -> str:
    cell = html.escape if escape else str
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _html_failures(failures: list[dict]) -> list[str]:
    if not failures:
        return ["<h2>Failures</h2>", "<p>None.</p>"]
    rows = [[str(f["method"]), str(f["prompt_id"]), str(f["seed"]), str(f["error"] or "")] for f in failures]
    return ["<h2>Failures</h2>", html_table(["method", "prompt", "seed", "error"], rows)]


def _html_prompts(records, methods, run_dir: Path, thumb_size: int, max_prompts: int | None) -> list[str]:
    prompt_ids = unique(r.get("prompt_id") for r in records)
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
    for seed in unique(r.get("seed") for r in records):
        cells = [_html_cell(by_cell.get((m, seed)), run_dir, thumb_size) for m in methods]
        rows.append([esc(f"seed {seed}"), *cells])
    # The cells are built (and escaped) HTML already, so they must not be escaped again.
    grid = html_table(["", *map(str, methods)], rows, escape=False)
    grid = grid.replace("<table>", '<table class="grid">', 1)
    return f"<section>\n<h3>{esc(str(first.get('prompt')))}</h3>\n<p>{' · '.join(details)}</p>\n{grid}\n</section>"


def _html_cell(record: dict | None, run_dir: Path, thumb_size: int) -> str:
    if record is None:
        return '<span class="note">not run</span>'
    if record.get("status") == NOT_APPLICABLE:
        return f'<div class="note">not applicable: {html.escape(str(record.get("error") or ""))}</div>'
    if record.get("status") != "ok":
        return f'<div class="error">failed: {html.escape(str(record.get("error") or "no error message"))}</div>'
    parts = [image_tag(record.get("image"), run_dir, thumb_size)]
    if record.get("attention"):
        parts.append(image_tag(record["attention"], run_dir, thumb_size, "attention"))
    parts.append(_html_metrics_line(record))
    return "".join(parts)


def image_tag(relative: str | None, run_dir: Path, thumb_size: int, kind: str = "image") -> str:
    """An ``<img>`` with the file (relative to ``run_dir``) embedded as a thumbnail; ``kind``
    "attention" scales a heatmap strip to the thumbnail's height."""
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
    shown = [("CLIP", "clip_score"), ("min-obj", "min_object_similarity"), ("binding", "binding_text_score"),
             ("B-VQA", "bvqa"), ("GenEval", "geneval_correct")]
    values = [(label, metric, metric_value(record, metric)) for label, metric in shown]
    text = " · ".join(f"{label} {format_number(metric, v)}" for label, metric, v in values if v is not None)
    oracle = record.get("oracle")
    if oracle is not None:  # ShapesWorld: the exact verdict first, with the oracle's reasons
        verdict = "oracle: correct" if oracle.get("success") else "oracle: wrong (" + "; ".join(oracle.get("reasons") or []) + ")"
        text = verdict + (" · " + text if text else "")
    return f"<div>{html.escape(text)}</div>" if text else ""
