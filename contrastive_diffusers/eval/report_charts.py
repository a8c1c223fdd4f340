"""Pictures for the reports: a grouped bar chart of a metric per category and method with
its confidence intervals, as inline SVG (the HTML report) or PNG (the README), without a
plotting library.

The chart is laid out once (:func:`chart_layout`: rectangles, lines and texts in pixels) and
drawn by two small renderers, :func:`chart_svg` and :func:`chart_png`, so both show the same
picture. Its input (:func:`series_from_summary`, :func:`series_from_evidence`) is
``{method: {category: {"mean", "ci_low", "ci_high", "n"}}}``, the form of ``evidence.json``.
"""

from __future__ import annotations

import html
import math
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["chart_layout", "chart_png", "chart_svg", "series_from_evidence", "series_from_summary", "write_chart"]

# Colour-blind-safe (Okabe-Ito) colours, one per method in order.
_PALETTE = ("#555555", "#E69F00", "#56B4E9", "#009E73", "#CC79A7", "#0072B2", "#D55E00", "#F0E442", "#999999")
_BAR_W, _BAR_GAP, _GROUP_GAP = 14, 2, 22
_LEFT, _RIGHT, _TOP, _BOTTOM = 48, 12, 28, 40
_PLOT_H, _LEGEND_ROW = 180, 16
_CHAR_W = 6.5  # a generous mean advance of 11 px sans-serif: labels are given this much room


@dataclass(frozen=True)
class Shape:
    """One primitive: ``kind`` is "rect" (x, y, w, h), "line" (x, y to x2, y2) or "text" (x, y; anchor)."""

    kind: str
    x: float
    y: float
    w: float = 0.0
    h: float = 0.0
    color: str = "#000000"
    text: str = ""
    anchor: str = "start"  # text: "start", "middle" or "end"


#: Metrics whose values lie in [0, 1] (success rates, shares, probabilities): a mean of them
#: cannot leave [0, 1], so a t-interval of few values is drawn clipped to it.
UNIT_INTERVAL_METRICS = ("oracle_success", "quality", "binding_accuracy", "binding_text_score",
                         "replace_object_score", "bvqa", "geneval_correct")
#: The values each bounded metric can take (CLIPScore is 100 * max(cosine, 0)).
METRIC_BOUNDS = {**{m: (0.0, 1.0) for m in UNIT_INTERVAL_METRICS}, "clip_score": (0.0, 100.0)}


def series_from_summary(summary: dict, metric: str) -> dict:
    """``{method: {category: stat}}`` of ``metric`` from a bench summary (:func:`~.summary.summarize`);
    one category "all" when the records have no categories. Intervals of
    bounded metrics are clipped to the values they can take (:data:`METRIC_BOUNDS`)."""
    low, high = METRIC_BOUNDS.get(metric, (-math.inf, math.inf))

    def stat(entry: dict) -> dict:
        mean, half = entry.get("mean"), entry.get("half_width")
        if mean is None:
            return {"mean": None, "ci_low": None, "ci_high": None, "n": entry.get("n", 0)}
        if half is None:  # one value: no spread estimate, so no whisker (not a zero-width one)
            return {"mean": mean, "ci_low": None, "ci_high": None, "n": entry.get("n", 0)}
        return {"mean": mean, "ci_low": max(mean - half, low), "ci_high": min(mean + half, high), "n": entry.get("n", 0)}

    if summary.get("per_category"):
        return {
            method: {category: stat(per_method[method][metric]) for category, per_method in summary["per_category"].items()}
            for method in summary["methods"]
        }
    return {m: {"all": stat(summary["per_method"][m]["metrics"][metric])} for m in summary["methods"]}


def series_from_evidence(evidence: dict) -> dict:
    """The ``methods`` block of ``evidence.json``, which already has the chart's form."""
    return evidence["methods"]


def _value_range(series: dict) -> tuple[float, float, float]:
    """The axis: ``(low, high, grid step)``, low and high multiples of the step."""
    values = [v for cats in series.values() for s in cats.values() for v in (s.get("ci_low"), s.get("ci_high"), s.get("mean"))
              if v is not None and math.isfinite(v)]
    low, high = min(values, default=0.0), max(values, default=1.0)
    if 0.0 <= low and high <= 1.0:  # a rate: the whole [0, 1] scale, so charts compare by eye
        return 0.0, 1.0, 0.25
    low, high = min(low, 0.0), max(high, 0.0)
    if high <= low:
        low, high = low - 1.0, high + 1.0
    step = _tick_step((high - low) / 4)  # round grid values (20, 40, ...), not 28.69, 57.38
    return step * math.floor(low / step + 1e-9), step * math.ceil(high / step - 1e-9), step


def _tick_step(raw: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least ``raw``."""
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw * (1 - 1e-9))


def chart_layout(series: dict, title: str = "", metric: str = "") -> tuple[int, int, list[Shape]]:
    """``(width, height, shapes)`` of the grouped bar chart: one group per category, one bar per
    method (the mean), a whisker from ``ci_low`` to ``ci_high``, ``n`` under each bar's group."""
    methods = list(series)
    categories = list(dict.fromkeys(c for cats in series.values() for c in cats))
    group_w = len(methods) * (_BAR_W + _BAR_GAP) - _BAR_GAP  # the bars side by side
    # Each category's slot fits its bars and its label ("animal_object" is wider than two bars).
    slots = [max(group_w, len(str(c)) * _CHAR_W + 4) + _GROUP_GAP for c in categories]
    starts = [sum(slots[:i]) for i in range(len(slots))]
    plot_w = max(240, sum(slots) or group_w + _GROUP_GAP)
    columns = max(1, min(3, plot_w // 110))
    legend_rows = math.ceil(len(methods) / columns)
    width = _LEFT + plot_w + _RIGHT
    height = _TOP + _PLOT_H + _BOTTOM + legend_rows * _LEGEND_ROW
    low, high, step = _value_range(series)

    def y_of(value: float) -> float:
        return _TOP + _PLOT_H * (high - value) / (high - low)

    title = f"{title} ({metric})" if title and metric else title or metric
    shapes = [Shape("text", width / 2, 16, text=title, anchor="middle")] if title else []
    for k in range(round((high - low) / step) + 1):  # horizontal grid lines with their values
        value = low + step * k
        shapes.append(Shape("line", _LEFT, y_of(value), _LEFT + plot_w, y_of(value), color="#dddddd"))
        shapes.append(Shape("text", _LEFT - 4, y_of(value) + 4, text=f"{value:.{_decimals(step)}f}", anchor="end",
                            color="#444444"))
    shapes.append(Shape("line", _LEFT, y_of(0.0), _LEFT + plot_w, y_of(0.0), color="#888888"))
    for ci, category in enumerate(categories):
        x0 = _LEFT + starts[ci] + (slots[ci] - group_w) / 2  # the bars centred in the slot
        ns = []
        for mi, method in enumerate(methods):
            stat = series[method].get(category) or {}
            mean = stat.get("mean")
            if mean is None:
                continue
            x = x0 + mi * (_BAR_W + _BAR_GAP)
            top, bottom = sorted((y_of(mean), y_of(0.0)))
            shapes.append(Shape("rect", x, top, _BAR_W, max(bottom - top, 0.5), color=_PALETTE[mi % len(_PALETTE)]))
            lo, hi = stat.get("ci_low"), stat.get("ci_high")
            if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
                mid = x + _BAR_W / 2
                shapes.append(Shape("line", mid, y_of(max(lo, low)), mid, y_of(min(hi, high))))
                for v in (lo, hi):
                    if low <= v <= high:
                        shapes.append(Shape("line", mid - 4, y_of(v), mid + 4, y_of(v)))
            ns.append(stat.get("n", 0))
        label_y = _TOP + _PLOT_H + 14
        shapes.append(Shape("text", x0 + group_w / 2, label_y, text=str(category), anchor="middle"))
        if ns:
            n_text = f"n={ns[0]}" if len(set(ns)) == 1 else f"n={min(ns)}-{max(ns)}"
            shapes.append(Shape("text", x0 + group_w / 2, label_y + 13, text=n_text, anchor="middle", color="#666666"))
    legend_y = _TOP + _PLOT_H + _BOTTOM
    column_w = plot_w / columns
    for mi, method in enumerate(methods):
        x = _LEFT + (mi % columns) * column_w
        y = legend_y + (mi // columns) * _LEGEND_ROW
        shapes.append(Shape("rect", x, y, 10, 10, color=_PALETTE[mi % len(_PALETTE)]))
        shapes.append(Shape("text", x + 14, y + 9, text=str(method)))
    return int(width), int(height), shapes


def _decimals(step: float) -> int:
    """Decimals that show every multiple of ``step`` exactly (0.25 -> 2, 20 -> 0, 2.5 -> 1)."""
    for decimals in range(6):
        if abs(round(step, decimals) - step) < 1e-9 * max(1.0, step):
            return decimals
    return 6


def chart_svg(series: dict, title: str = "", metric: str = "") -> str:
    """The chart as an ``<svg>`` element (inline in HTML, or a file of its own)."""
    width, height, shapes = chart_layout(series, title, metric)
    esc = html.escape
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
             f'<rect width="{width}" height="{height}" fill="#ffffff"/>']
    for s in shapes:
        if s.kind == "rect":
            parts.append(f'<rect x="{s.x:.1f}" y="{s.y:.1f}" width="{s.w:.1f}" height="{s.h:.1f}" fill="{s.color}"/>')
        elif s.kind == "line":
            parts.append(f'<line x1="{s.x:.1f}" y1="{s.y:.1f}" x2="{s.w:.1f}" y2="{s.h:.1f}" stroke="{s.color}"/>')
        else:
            parts.append(f'<text x="{s.x:.1f}" y="{s.y:.1f}" text-anchor="{s.anchor}" fill="{s.color}">{esc(s.text)}</text>')
    return "\n".join(parts + ["</svg>"])


def chart_png(series: dict, path: str | os.PathLike, title: str = "", metric: str = "", scale: int = 2) -> Path:
    """The same chart as a PNG (drawn with PIL at ``scale`` times the SVG's size)."""
    from PIL import Image, ImageDraw, ImageFont

    from ..atomic_io import save_image_atomic

    width, height, shapes = chart_layout(series, title, metric)
    image = Image.new("RGB", (width * scale, height * scale), "white")
    draw = ImageDraw.Draw(image)
    try:
        font = ImageFont.load_default(size=11 * scale)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        font = ImageFont.load_default()
    for s in shapes:
        if s.kind == "rect":
            draw.rectangle([s.x * scale, s.y * scale, (s.x + s.w) * scale, (s.y + s.h) * scale], fill=s.color)
        elif s.kind == "line":
            draw.line([s.x * scale, s.y * scale, s.w * scale, s.h * scale], fill=s.color, width=max(1, scale // 2 + 1))
        else:
            text = s.text.encode("latin-1", "replace").decode("latin-1")
            anchor = {"start": "ls", "middle": "ms", "end": "rs"}[s.anchor]  # on the baseline, as SVG
            draw.text((s.x * scale, s.y * scale), text, fill=s.color, font=font, anchor=anchor)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image_atomic(image, path)
    return path


def write_chart(series: dict, path: str | os.PathLike, title: str = "", metric: str = "") -> Path:
    """Write the chart as ``.svg`` or ``.png``, chosen by the file name."""
    path = Path(path)
    if path.suffix.lower() == ".png":
        return chart_png(series, path, title, metric)
    if path.suffix.lower() != ".svg":
        raise ValueError(f"write_chart writes .svg or .png files, got {path.name!r}.")
    from ..atomic_io import write_text_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, chart_svg(series, title, metric) + "\n")
    return path
