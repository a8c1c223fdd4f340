"""The report of a ``tune`` run: ``report.md`` (the search table, the confirmation tables)
and ``report.html`` (the same, with the confirmation as a chart and the test images of
plain generation, the paper defaults and the tuned setting side by side)."""

from __future__ import annotations

import html
from collections import Counter
from pathlib import Path

from .report import md_table, write_report_file
from .report_charts import chart_svg
from .report_html import comparison_grid, html_table

__all__ = ["confirmation_rows", "search_rows", "write_tune_report"]

_GRID_PROMPTS = 12


def _number(value, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def search_rows(state: dict) -> tuple[list[str], list[list[str]]]:
    header = ["#", "settings (changes to the paper defaults)", "last rung", "images", "mean (last rung)",
              "means by rung", "status"]
    rows = [[str(r["candidate"]), r["label"], str(r["rung"]), _images(r), _number(r["mean"]),
             " / ".join(_number(m) for m in r.get("rung_means", [])) or "-", r["status"]]
            for r in state.get("search", [])]
    return header, rows


def _images(row: dict) -> str:
    """``"12"``, or ``"12 (2 failed, counted as 0 or the rung's lowest score)"``."""
    failed = row.get("failed") or 0  # rows of folders made before failures were counted have none
    return f"{row['images']} ({failed} failed, counted as 0 or the rung's lowest score)" if failed else str(row["images"])


def _interval(stat: dict, key: str = "mean", signed: bool = False) -> str:
    if stat.get(key) is None:
        return "-"
    if stat.get("ci_low") is None:
        return f"{_number(stat[key], signed)} (n={stat['n']})"
    return f"{_number(stat[key], signed)} [{_number(stat['ci_low'], signed)}, {_number(stat['ci_high'], signed)}] (n={stat['n']})"


def confirmation_rows(confirmation: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """Two tables: each arm's mean per category, and the paired differences."""
    methods, paired = confirmation["methods"], confirmation["paired"]
    categories = list(next(iter(methods.values())))
    means = [[arm, *[_interval(methods[arm][c]) for c in categories]] for arm in methods]
    deltas = [[name, *[_interval(paired[name][c], "delta", signed=True) for c in categories]] for name in paired]
    return [
        ("Test split: mean with 95% interval", ["arm", *categories], means),
        ("Test split: difference, paired by prompt and seed (95% interval)", ["comparison", *categories], deltas),
    ]


def _summary_lines(config, state: dict) -> list[str]:
    plan = state.get("plan", {})
    chosen = state.get("chosen")
    lines = [
        f"model {config.model}, method {config.method}, metric {config.metric}, {config.steps} steps, "
        f"seeds {', '.join(map(str, config.seeds))}, budget {config.budget} images.",
        f"Search: {plan.get('rule')}; {plan.get('candidates')} candidates, train prompts per rung "
        f"{plan.get('prompts_per_rung')}, {plan.get('images')} images counted against the budget"
        + (f" ({plan['drawn']} drawn: survivors reuse their images of earlier rungs)" if "drawn" in plan else "")
        + f"; confirmation on {plan.get('test_prompts')} "
        "test prompts.",
    ]
    if chosen is not None:
        from .tune_space import candidate_label

        maps = state.get("attn_res")
        calls = ([f"--attn-res {maps[0]} {maps[1]}"] if maps else []) + (
            ["--text-sequence t5"] if config.text_sequence == "t5" else [])
        lines.append(f"Chosen: {candidate_label(chosen)}, written to {state.get('method_file')}"
                     + (f"; generate with {' '.join(calls)}" if calls else "") + ".")
    return lines


def write_tune_report(config, state: dict, records: list[dict]) -> dict:
    """Write ``report.md`` and ``report.html`` into the tune folder; returns their paths."""
    out = Path(config.output_dir)
    title = f"Tuning {config.method} for {config.model}"
    lines = _summary_lines(config, state)
    failed = Counter(r["method"] for r in records if r.get("status") == "failed")
    if failed:
        lines.append("Failed test images, left out of the tables below (their errors: confirm/summary.md): "
                     + ", ".join(f"{arm} {n}" for arm, n in failed.items()) + ".")
    md = [f"# {title}", "", *lines, "", "## Search (train split)", "", *md_table(*search_rows(state)), ""]
    page = [f"<h1>{html.escape(title)}</h1>", *[f"<p>{html.escape(x)}</p>" for x in lines]]
    confirmation = state.get("confirmation")
    if confirmation:
        arms = list(confirmation["methods"])
        page += ["<h2>Test split: plain, paper defaults and tuned</h2>",
                 chart_svg(confirmation["methods"], metric=config.metric)]
        pairs = list(dict.fromkeys((r["prompt_id"], r["seed"]) for r in records))[:_GRID_PROMPTS]
        labels = {arms[0]: "plain", arms[1]: f"{arms[1]} (paper defaults)", arms[2]: f"{arms[2]} (tuned)"}
        page += [comparison_grid(records, arms, pairs, out / "confirm", labels=labels)]
        for heading, header, rows in confirmation_rows(confirmation):
            md += [f"## {heading}", "", *md_table(header, rows), ""]
            page += [f"<h2>{html.escape(heading)}</h2>", html_table(header, rows)]
    page += ["<h2>Search (train split)</h2>", html_table(*search_rows(state))]
    css = "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin:.5em 0 1.5em}" \
          "th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}.note{color:#666}.error{color:#b00}"
    document = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
                f"<style>{css}</style>\n</head>\n<body>\n" + "\n".join(page) + "\n</body>\n</html>\n")
    return {"markdown": write_report_file(out / "report.md", "\n".join(md) + "\n"),
            "html": write_report_file(out / "report.html", document)}
