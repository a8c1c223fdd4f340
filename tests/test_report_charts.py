"""The report pictures: the chart with intervals (SVG and PNG from one layout) and heatmap
strips without a copy of the image."""

import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from contrastive_diffusers.eval.report_charts import chart_layout, chart_svg, series_from_summary, write_chart
from contrastive_diffusers.guidance.visualize import attention_grid

SERIES = {
    "none": {"two_object": {"mean": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 48}},
    "conform": {"two_object": {"mean": 0.75, "ci_low": 0.5, "ci_high": 1.0, "n": 48}},
}


def test_bars_and_whiskers_sit_at_their_values():
    width, height, shapes = chart_layout(SERIES)
    bars = [s for s in shapes if s.kind == "rect" and s.w == 14]
    assert len(bars) == 2
    zero = bars[0].y + bars[0].h  # a rate: the scale is [0, 1], 180 px high
    assert bars[0].h == pytest.approx(0.5 * 180) and bars[1].h == pytest.approx(0.75 * 180)
    whisker = [s for s in shapes if s.kind == "line" and s.x == s.w == bars[1].x + 7][0]
    assert {round(zero - whisker.y, 6), round(zero - whisker.h, 6)} == {round(0.5 * 180, 6), round(1.0 * 180, 6)}
    assert any(s.kind == "text" and s.text == "n=48" for s in shapes)


def test_svg_and_png(tmp_path):
    svg = chart_svg(SERIES, title="t <1>", metric="oracle_success")
    root = ET.fromstring(svg)  # well-formed, the title escaped
    assert root.tag.endswith("svg") and "t &lt;1&gt; (oracle_success)" in svg
    png = write_chart(SERIES, tmp_path / "c.png")
    width, height, _ = chart_layout(SERIES)
    assert Image.open(png).size == (2 * width, 2 * height)
    with pytest.raises(ValueError, match=".svg or .png"):
        write_chart(SERIES, tmp_path / "c.jpg")


def test_series_from_summary_reads_half_widths():
    summary = {"methods": ["none"], "per_category": {"a": {"none": {"m": {"mean": 0.5, "half_width": 0.1, "n": 4}}}}}
    assert series_from_summary(summary, "m") == {"none": {"a": {"mean": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 4}}}
    # a success rate's interval stops at 0 and 1 (0.5 +- 0.919 over 4 images), another metric's does not
    rate = {"methods": ["none"], "per_category": {"a": {"none": {"oracle_success": {"mean": 0.5, "half_width": 0.919, "n": 4},
                                                                    "m": {"mean": 0.5, "half_width": 0.919, "n": 4}}}}}
    assert series_from_summary(rate, "oracle_success")["none"]["a"] == {"mean": 0.5, "ci_low": 0.0, "ci_high": 1.0, "n": 4}
    assert series_from_summary(rate, "m")["none"]["a"]["ci_low"] == pytest.approx(-0.419)
    # one value has no interval: no whisker, not a zero-width one
    single = {"methods": ["none"], "per_category": {"a": {"none": {"m": {"mean": 2.0, "half_width": None, "n": 1}}}}}
    assert series_from_summary(single, "m") == {"none": {"a": {"mean": 2.0, "ci_low": None, "ci_high": None, "n": 1}}}
    spread = {"methods": ["none"], "per_category": {"a": {"none": {"m": {"mean": 2.0, "half_width": 0.5, "n": 2}}}}}

    def vertical_lines(summary):
        return sum(s.kind == "line" and s.x == s.w for s in chart_layout(series_from_summary(summary, "m"))[2])

    assert vertical_lines(spread) == vertical_lines(single) + 1  # the whisker


def test_long_category_labels_get_room_and_grid_values_are_round():
    categories = ["animal_object", "object_object", "animals"]
    series = {m: {c: {"mean": 20.0 + i, "ci_low": 15.0, "ci_high": 104.0, "n": 4} for i, c in enumerate(categories)}
              for m in ("none", "conform")}
    width, _, shapes = chart_layout(series)
    labels = sorted((s for s in shapes if s.kind == "text" and s.text in categories), key=lambda s: s.x)
    spans = [(s.x - len(s.text) * 3.25, s.x + len(s.text) * 3.25) for s in labels]  # centred, 6.5 px a letter
    assert all(left[1] <= right[0] for left, right in zip(spans, spans[1:]))  # no two labels overlap
    assert spans[-1][1] <= width
    bars = sorted((s for s in shapes if s.kind == "rect" and s.w == 14), key=lambda s: s.x)
    for label, pair in zip(labels, (bars[0::2][i:i + 1] + bars[1::2][i:i + 1] for i in range(3))):
        assert label.x == pytest.approx((pair[0].x + pair[1].x + 14) / 2)  # bars centred under their label
    grid = [s.text for s in shapes if s.kind == "text" and s.anchor == "end"]
    assert grid == ["0", "50", "100", "150"]  # 0..104 on round values, not 0, 26.00, 52.00, ...
    summary = {"methods": ["none"], "per_category": {"a": {"none": {"clip_score": {"mean": 99.0, "half_width": 3.0, "n": 4}}}}}
    assert series_from_summary(summary, "clip_score")["none"]["a"]["ci_high"] == 100.0  # CLIPScore stops at 100


def test_heatmap_strip_without_the_image():
    image = Image.new("RGB", (32, 32), (255, 0, 0))
    maps = [np.eye(4), np.ones((4, 4))]
    with_image = attention_grid(image, maps, ["red", "car"])
    without = attention_grid(image, maps, ["red", "car"], include_image=False)
    assert with_image.width == 3 * 128 and without.width == 2 * 128
    # the strip without the image is the one with it, less its first tile
    assert np.array_equal(np.asarray(with_image)[:, 128:], np.asarray(without))
