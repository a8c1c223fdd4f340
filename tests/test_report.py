"""Benchmark statistics and reports on hand-built records: t quantiles, intervals, paired deltas,
the Markdown report and the self-contained HTML page."""

import base64
import io
import json
import math
import statistics
from html.parser import HTMLParser

import pytest
from PIL import Image

from contrastive_diffusers import atomic_io
from contrastive_diffusers.eval.report import coverage_note, format_summary_table, write_markdown
from contrastive_diffusers.eval.report_html import write_html
from contrastive_diffusers.eval.summary import summarize
from contrastive_diffusers.eval.stats import MeanCI, mean_ci, metric_value, paired_differences, t_quantile

# Two-sided 95% t critical values from printed tables, for hand-computed intervals.
T975 = {1: 12.7062047362, 2: 4.3026527297, 3: 3.1824463053, 5: 2.5705818366}

# --- t quantile ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "p, df, expected",
    [
        (0.975, 1, 12.7062047),
        (0.975, 4, 2.7764451),
        (0.975, 30, 2.0422725),
        (0.975, 1e6, 1.9599664),  # normal 1.9599640 + (z³+z)/(4·df)
        (0.95, 10, 1.8124611),
        (0.995, 2, 9.9248432),
        (0.75, 1, 1.0),  # Cauchy: tan(pi/4)
    ],
)
def test_t_quantile_known_values(p, df, expected):
    assert t_quantile(p, df) == pytest.approx(expected, abs=1e-6)
    assert t_quantile(1 - p, df) == pytest.approx(-expected, abs=1e-6)  # symmetry


def test_t_quantile_median_and_closed_forms():
    assert t_quantile(0.5, 3) == 0.0
    for p in (0.01, 0.3, 0.9, 0.999999):
        # df=1 is Cauchy, df=2 has t = (2p-1) / sqrt(2p(1-p)).
        assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
        assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9)


@pytest.mark.parametrize("p, df", [(0.0, 3), (1.0, 3), (-0.1, 3), (0.5, 0), (0.9, -2), (0.9, float("nan"))])
def test_t_quantile_rejects_bad_arguments(p, df):
    with pytest.raises(ValueError, match="p must|df must"):
        t_quantile(p, df)


def test_t_quantile_matches_scipy_on_a_grid():
    stats = pytest.importorskip("scipy.stats")
    for df in (0.5, 1, 1.5, 2, 3, 5, 9, 29, 100, 1e4, 99_999, 2e5, 1e8):
        for p in (1e-9, 1e-4, 0.01, 0.025, 0.1, 0.4, 0.6, 0.9, 0.975, 0.995, 1 - 1e-7):
            expected = stats.t.ppf(p, df)
            assert t_quantile(p, df) == pytest.approx(expected, rel=1e-7, abs=1e-8), (p, df)


# --- mean_ci ------------------------------------------------------------------------------------


def test_mean_ci_hand_computed():
    ci = mean_ci([1.0, 2.0, 3.0, 4.0])
    half_width = T975[3] * math.sqrt(5 / 3) / 2  # s² = (2.25 + 0.25 + 0.25 + 2.25) / 3
    assert (ci.mean, ci.n) == (2.5, 4)
    assert ci.half_width == pytest.approx(half_width, rel=1e-9)
    assert (ci.low, ci.high) == pytest.approx((2.5 - half_width, 2.5 + half_width))
    # 90%: t_{0.95, 3} = 2.3533634
    assert mean_ci([1.0, 2.0, 3.0, 4.0], confidence=0.9).half_width == pytest.approx(2.3533634 * math.sqrt(5 / 3) / 2)


def test_mean_ci_small_samples():
    one = mean_ci([7.0])
    assert one.mean == 7.0 and one.n == 1 and math.isnan(one.half_width)  # no spread estimate, not 0
    empty = mean_ci([])
    assert empty.n == 0 and math.isnan(empty.mean)
    assert mean_ci([3.0, 3.0]) == MeanCI(3.0, 0.0, 2)
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([1.0, 2.0], confidence=95)


def test_metric_value_skips_failed_bools_and_non_finite():
    ok = {"status": "ok", "metrics": {"a": 1, "b": True, "c": float("nan"), "d": "x", "e": None, "f": 0.5}}
    assert [metric_value(ok, k) for k in "abcdef"] == [1.0, None, None, None, None, 0.5]
    assert metric_value({**ok, "status": "failed"}, "f") is None
    assert metric_value({"status": "ok", "metrics": None}, "f") is None


# --- hand-built run -----------------------------------------------------------------------------

PROMPTS = [
    ("ae-animals-0", "a cat and a dog", "animals", [["cat"], ["dog"]]),
    ("ae-objects-0", "a <b>red</b> car", "objects", [["red", "car"]]),
    ("ae-animals-1", "a bird and a bear", "animals", [["bird"], ["bear"]]),
]
# clip_score per (prompt index, seed). Paired deltas vs "none":
#   conform: 1, 3, 0, 3, -1, 5  -> 4 wins of 6;  ebama (p0 failed / unscored): 1, 1, 2, -1 -> 3 wins of 4
CLIP = {
    "none": {(0, 0): 20, (0, 1): 22, (1, 0): 30, (1, 1): 32, (2, 0): 24, (2, 1): 26},
    "conform": {(0, 0): 21, (0, 1): 25, (1, 0): 30, (1, 1): 35, (2, 0): 23, (2, 1): 31},
    "ebama": {(1, 0): 31, (1, 1): 33, (2, 0): 26, (2, 1): 25},
}
BINDING = {("none", 0, 0): 0.5, ("none", 0, 1): 0.0, ("conform", 0, 0): 1.0, ("conform", 0, 1): 0.5}
ERROR = "out of memory <oom>"
MISSING = "conform/ae-objects-0/1.png"
HEATMAP = "none/ae-animals-0/0-attention.png"


def make_record(method, prompt_index, seed):
    prompt_id, prompt, category, groups = PROMPTS[prompt_index]
    record = {
        "method": method,
        "prompt_id": prompt_id,
        "prompt": prompt,
        "category": category,
        "seed": seed,
        "image": f"{method}/{prompt_id}/{seed}.png",
        "attention": None,
        "status": "ok",
        "error": None,
        "seconds": 1.0,
        "token_groups": groups,
        "metrics": None,
    }
    if (prompt_index, seed) in CLIP[method]:
        clip = CLIP[method][(prompt_index, seed)]
        record["metrics"] = {
            "clip_score": float(clip),
            "min_object_similarity": clip / 100,
            "quality": None,  # never measured: must not become a column
            "binding_accuracy": BINDING.get((method, prompt_index, seed)),
            "flag": True,  # a bool is not a score
        }
    return record


@pytest.fixture()
def records():
    out = [make_record("none", p, s) for p in range(3) for s in range(2)]
    # Reversed, so pairing by position instead of by (prompt, seed) would give other deltas.
    out += [make_record("conform", p, s) for p in reversed(range(3)) for s in reversed(range(2))]
    out += [make_record("ebama", p, s) for p in range(3) for s in range(2)]
    failed = out[12]
    assert (failed["method"], failed["prompt_id"], failed["seed"]) == ("ebama", "ae-animals-0", 0)
    failed.update(status="failed", error=ERROR, image=None)
    out[0]["attention"] = HEATMAP
    out[0]["metrics"]["zeta"] = 0.25  # unknown metrics: after the canonical ones, alphabetically
    out[1]["metrics"]["aesthetic"] = 5.5
    return out


@pytest.fixture()
def run_dir(tmp_path, records):
    folder = tmp_path / "run"
    for i, record in enumerate(records):
        if record["image"] and record["image"] != MISSING:
            file = folder / record["image"]
            file.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (32, 24), (10 * i, 100, 200)).save(file)
    Image.new("RGB", (64, 32), (255, 0, 0)).save(folder / HEATMAP)  # a strip of two 32x32 tiles
    return folder


def expected_stat(values, prompts=None):
    """(mean, half-width, n) by hand: over prompts, t_{0.975, G-1} * sqrt(G/(G-1) * sum_g S_g^2 / N^2)
    with S_g the sum of a prompt's deviations from the mean (one value per prompt: s/sqrt(n))."""
    n = len(values)
    prompts = list(range(n)) if prompts is None else prompts
    mean = statistics.fmean(values)
    if len(set(prompts)) in (1, n):  # one value per prompt, or one prompt: over the values
        return mean, None if n < 2 else T975[n - 1] * statistics.stdev(values) / math.sqrt(n), n
    sums = {g: sum(v - mean for v, q in zip(values, prompts) if q == g) for g in set(prompts)}
    g = len(sums)
    half_width = T975[g - 1] * math.sqrt(g / (g - 1) * sum(x * x for x in sums.values()) / n**2)
    return mean, half_width, n


def assert_stat(stat, values, prompts=None):
    mean, half_width, n = expected_stat(values, prompts)
    assert stat["n"] == n and stat["n_prompts"] == len(set(range(n) if prompts is None else prompts))
    assert stat["mean"] == pytest.approx(mean, rel=1e-12)
    assert stat["half_width"] == (None if half_width is None else pytest.approx(half_width, rel=1e-9))


# The fixture's clip_score values in the tests' order: two seeds of each prompt, so prompt labels
# in pairs (the intervals count prompts, not images); the paired deltas in conform's order.
BY_SEED_PAIRS = [0, 0, 1, 1, 2, 2]
CONFORM_ORDER = [2, 2, 1, 1, 0, 0]


# --- summarize ----------------------------------------------------------------------------------


def test_summary_methods_metrics_and_counts(records):
    summary = summarize(records)
    assert summary["methods"] == ["none", "conform", "ebama"]
    assert summary["metrics"] == ["clip_score", "min_object_similarity", "binding_accuracy", "aesthetic", "zeta"]
    assert summary["baseline"] == "none"
    counts = {m: [s[k] for k in ("n_images", "n_failed", "n_scored")] for m, s in summary["per_method"].items()}
    assert counts == {"none": [6, 0, 6], "conform": [6, 0, 6], "ebama": [6, 1, 4]}
    json.dumps(summary, allow_nan=False)  # no NaN anywhere


def test_summary_means_and_intervals(records):
    per_method = summarize(records)["per_method"]
    assert_stat(per_method["none"]["metrics"]["clip_score"], [20, 22, 30, 32, 24, 26], BY_SEED_PAIRS)
    assert_stat(per_method["ebama"]["metrics"]["clip_score"], [31, 33, 26, 25], [1, 1, 2, 2])  # failed / unscored left out
    assert_stat(per_method["conform"]["metrics"]["binding_accuracy"], [1.0, 0.5], [0, 0])  # None values left out; one prompt: over its seeds
    assert per_method["ebama"]["metrics"]["binding_accuracy"] == {"mean": None, "half_width": None, "n": 0, "n_prompts": 0}
    assert per_method["none"]["metrics"]["zeta"] == {"mean": 0.25, "half_width": None, "n": 1, "n_prompts": 1}


def test_summary_per_category(records):
    per_category = summarize(records)["per_category"]
    assert list(per_category) == ["animals", "objects"]
    assert_stat(per_category["animals"]["none"]["clip_score"], [20, 22, 24, 26], [0, 0, 2, 2])
    assert_stat(per_category["objects"]["conform"]["clip_score"], [30, 35], [1, 1])
    assert_stat(per_category["animals"]["ebama"]["clip_score"], [26, 25], [2, 2])


def test_paired_differences_pair_by_prompt_and_seed(records):
    # In conform's record order: (p2, 1), (p2, 0), (p1, 1), (p1, 0), (p0, 1), (p0, 0).
    assert paired_differences(records, "clip_score", "conform", "none") == [5, -1, 3, 0, 3, 1]
    assert paired_differences(records, "clip_score", "ebama", "none") == [1, 1, 2, -1]
    assert paired_differences(records, "clip_score", "none", "ebama") == [-1, -1, -2, 1]
    assert paired_differences(records, "binding_accuracy", "conform", "none") == [0.5, 0.5]


def test_summary_deltas_and_wins(records):
    deltas = summarize(records)["deltas"]
    assert list(deltas) == ["conform", "ebama"]
    conform = deltas["conform"]["clip_score"]
    assert_stat(conform, [5, -1, 3, 0, 3, 1], CONFORM_ORDER)
    assert conform["wins"] == 4 and conform["losses"] == 1  # one tie
    ebama = deltas["ebama"]["clip_score"]
    assert_stat(ebama, [1, 1, 2, -1], [1, 1, 2, 2])
    assert ebama["wins"] == 3 and ebama["losses"] == 1
    assert deltas["ebama"]["binding_accuracy"] == {"mean": None, "half_width": None, "n": 0, "n_prompts": 0, "wins": 0,
                                                    "losses": 0}


def test_summary_failures_are_listed(records):
    assert summarize(records)["failures"] == [
        {"method": "ebama", "prompt_id": "ae-animals-0", "seed": 0, "error": ERROR}
    ]


def test_baseline_choice(records):
    assert summarize(records, baseline="conform")["baseline"] == "conform"
    assert list(summarize(records, baseline="conform")["deltas"]) == ["none", "ebama"]
    without_none = [r for r in records if r["method"] != "none"]
    assert summarize(without_none)["baseline"] == "conform"
    single = summarize([r for r in records if r["method"] == "none"])
    assert single["baseline"] is None and single["deltas"] == {}
    assert "Difference" not in format_summary_table(single)
    with pytest.raises(ValueError, match="'sdxl'"):
        summarize(records, baseline="sdxl")


def test_coverage_names_methods_whose_means_rest_on_other_images(records, tmp_path):
    # ebama failed on one image that `none` drew: its means are over other images than none's.
    summary = summarize(records)
    assert summary["coverage"] == {"ebama": {"images": 5, "baseline_images": 6, "shared": 5}}
    note = coverage_note(summary)
    assert "ebama: 5 image(s), 5 of them with a none image of the same prompt and seed (none: 6)" in note
    assert note in format_summary_table(summary)
    assert note in write_markdown(summary, tmp_path / "r.md").read_text(encoding="utf-8")
    # A method not applicable to a prompt (CONFORM and a single object) draws fewer images too.
    for record in records:
        if record["method"] == "conform" and record["prompt_id"] == "ae-objects-0":
            record.update(status="not_applicable", metrics=None, error="needs two groups")
    assert summarize(records)["coverage"]["conform"] == {"images": 4, "baseline_images": 6, "shared": 4}
    # The same images everywhere: no note.
    same = [r for r in records if r["method"] == "none"] + [{**r, "method": "copy"} for r in records
                                                             if r["method"] == "none"]
    assert summarize(same)["coverage"] == {} and coverage_note(summarize(same)) is None


def test_markdown_escapes_html_and_backticks(records, tmp_path):
    for record in records:
        if record["method"] == "ebama":
            record["method"] = "m`x<b>"
    records[0]["category"] = "<i>cats</i>"
    text = write_markdown(summarize(records), tmp_path / "r.md").read_text(encoding="utf-8")
    outside_code = text.replace("``m`x<b>``", "")
    assert "<b>" not in outside_code and "<i>" not in outside_code
    assert "| m`x&lt;b&gt; |" in text and "| &lt;i&gt;cats&lt;/i&gt; |" in text
    assert "- ``m`x<b>`` / `ae-animals-0` / seed 0: out of memory &lt;oom&gt;" in text  # code spans stay literal


def test_records_without_a_category_beside_others_are_a_category_of_their_own(records):
    for record in records:
        if record["prompt_id"] == "ae-objects-0":
            record["category"] = None
    per_category = summarize(records)["per_category"]
    assert list(per_category) == ["animals", "(no category)"]
    assert_stat(per_category["(no category)"]["none"]["clip_score"], [30, 32], [1, 1])


def test_summary_of_categoryless_records_has_no_category_table(records):
    for record in records:
        record["category"] = None
    assert summarize(records)["per_category"] == {}


# --- text and Markdown --------------------------------------------------------------------------


def cell(values, decimals, prompts=None, signed=False, wins=None):
    mean, half_width, n = expected_stat(values, prompts)
    text = f"{mean:+.{decimals}f}" if signed else f"{mean:.{decimals}f}"
    text += " ± n/a" if half_width is None else f" ± {half_width:.{decimals}f}"
    losses = sum(v < 0 for v in values)
    return text if wins is None else f"{text} ({wins}↑ {losses}↓ of {n})"


def test_formatted_cells_by_hand():
    # The helper above against literal numbers, so the report assertions rest on known strings.
    assert cell([20, 22, 30, 32, 24, 26], 2) == "25.67 ± 4.86"  # six prompts
    assert cell([20, 22, 30, 32, 24, 26], 2, BY_SEED_PAIRS) == "25.67 ± 12.50"  # three prompts, two seeds each
    assert cell([5, -1, 3, 0, 3, 1], 2, CONFORM_ORDER, signed=True, wins=4) == "+1.83 ± 0.72 (4↑ 1↓ of 6)"
    assert cell([1.0, 0.5], 3, [0, 0]) == "0.750 ± 3.177"  # one prompt: over its two seeds


def test_text_table(records):
    text = format_summary_table(summarize(records))
    lines = text.splitlines()
    metrics = ["clip_score", "min_object_similarity", "binding_accuracy", "aesthetic", "zeta"]
    assert lines[0].split() == ["method", *metrics, "images", "failed"]
    none_row = next(line for line in lines if line.startswith("none "))
    assert "25.67 ± 12.50" in none_row and "0.2567 ± 0.1250" in none_row and "0.250 ± n/a (n=1)" in none_row
    assert none_row.split()[-2:] == ["6", "0"]
    ebama_row = next(line for line in lines if line.startswith("ebama "))
    assert ebama_row.split()[-2:] == ["6", "1"]
    assert "Difference from none," in text
    assert "+1.83 ± 0.72 (4↑ 1↓ of 6)" in text


def test_markdown_report(records, tmp_path):
    summary = summarize(records)
    path = write_markdown(summary, tmp_path / "report.md", title="Run 1", run_info={"model": "tiny|sd", "steps": 2})
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Run 1\n")
    assert "| model | tiny\\|sd |" in text and "| steps | 2 |" in text
    conform_binding = cell([1.0, 0.5], 3, [0, 0])
    assert f"| conform | {cell([21, 25, 30, 35, 23, 31], 2, BY_SEED_PAIRS)} | " in text
    # binding, aesthetic, zeta, images, failed; a metric with fewer values than scorable images says n
    assert f"| {conform_binding} (n=2) | - | - | 6 | 0 |" in text
    assert (f"| ebama | {cell([31, 33, 26, 25], 2, [1, 1, 2, 2])} (n=4) | "
            f"{cell([0.31, 0.33, 0.26, 0.25], 4, [1, 1, 2, 2])} (n=4) | - | - | - "
            "| 6 | 1 |") in text
    assert f"| conform | {cell([5, -1, 3, 0, 3, 1], 2, CONFORM_ORDER, signed=True, wins=4)} |" in text
    assert f"| ebama | {cell([1, 1, 2, -1], 2, [1, 1, 2, 2], signed=True, wins=3)} |" in text
    # Per-category tables for the two main metrics: categories as rows, methods as columns.
    assert "## By category: clip_score" in text and "## By category: min_object_similarity" in text
    one_prompt = [1, 1]
    assert (f"| objects | {cell([30, 32], 2, one_prompt)}, n=2 | {cell([30, 35], 2, one_prompt)}, n=2 | "
            f"{cell([31, 33], 2, one_prompt)}, n=2 |") in text
    assert "## How to read this" in text and "paired" in text and "Winoground" in text
    assert "- `ebama` / `ae-animals-0` / seed 0: out of memory &lt;oom&gt;" in text  # not read as an HTML tag
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]  # no temporary file left


def test_write_is_atomic(records, tmp_path, monkeypatch):
    path = tmp_path / "report.md"
    path.write_text("old report", encoding="utf-8")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic_io.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_markdown(summarize(records), path)
    assert path.read_text(encoding="utf-8") == "old report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


# --- HTML ---------------------------------------------------------------------------------------


class PageParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


def parse(path):
    parser = PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


def decode(source):
    assert source.startswith("data:image/jpeg;base64,")
    return Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1])))


def test_html_page(records, run_dir, tmp_path):
    summary = summarize(records)
    path = write_html(
        records, summary, run_dir, tmp_path / "index.html", title="Run <1>", run_info={"steps": 2}, thumb_size=16
    )
    text = path.read_text(encoding="utf-8")
    page = parse(path)
    # 16 images on disk (18 records - 1 failed - 1 missing file) + 1 heatmap, and above the
    # tables the overview grid's 8 (3 prompts at seed 0 x 3 methods - ebama's failed one).
    assert len(page.sources) == 17 + 8
    assert all(s.startswith("data:image/") for s in page.sources)  # self-contained
    assert "http" not in " ".join(page.sources) and "link" not in page.tags and "script" not in page.tags
    sizes = [decode(s).size for s in page.sources]
    assert sizes.count((16, 12)) == 16  # 32x24 images fit into 16x16
    assert (32, 16) in sizes  # the heatmap strip is scaled to the thumbnail height
    # Escaping: the title and the prompt with markup appear as text, never as tags.
    assert "<title>Run &lt;1&gt;</title>" in text
    assert "a &lt;b&gt;red&lt;/b&gt; car" in text and "<b>" not in text and "b" not in page.tags
    assert f"failed: {ERROR.replace('<', '&lt;').replace('>', '&gt;')}" in text
    assert f"missing: {MISSING}" in text
    assert "token groups: [red car]" in text and "category: objects" in text
    assert "CLIP 20.00 · min-obj 0.2000" in text
    assert text.count("<section>") == 3
    assert cell([20, 22, 30, 32, 24, 26], 2, BY_SEED_PAIRS) in text  # the summary table is on the page too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.html", "run"]  # no temporary file left


def test_html_not_applicable_list_and_coverage_note(records, run_dir, tmp_path):
    for record in records:
        if record["method"] == "conform" and record["prompt_id"] == "ae-objects-0":
            record.update(status="not_applicable", metrics=None, image=None, error="needs two groups | one given")
    summary = summarize(records)
    text = write_html(records, summary, run_dir, tmp_path / "index.html").read_text(encoding="utf-8")
    # HTML, not the Markdown list's syntax: no backticks, no escaped pipe.
    assert "<li><code>conform</code>: 2 image(s): needs two groups | one given</li>" in text
    assert "`" not in text and "\\|" not in text
    assert coverage_note(summary).replace("(", "") in text.replace("(", "")


def test_html_grid_columns_are_methods_and_rows_are_seeds(records, run_dir, tmp_path):
    text = write_html(records, summarize(records), run_dir, tmp_path / "index.html").read_text(encoding="utf-8")
    section = text.split("<section>")[1]
    assert "<tr><th></th><th>none</th><th>conform</th><th>ebama</th></tr>" in section
    rows = section.split("<tr>")[2:]
    assert [r.split("</td>")[0] for r in rows] == ["<td>seed 0", "<td>seed 1"]
    # Seed 0 of the first prompt: ebama's cell is the failure, after none's and conform's images.
    cells = rows[0].split("<td>")[2:]
    assert "CLIP 20.00" in cells[0] and "CLIP 21.00" in cells[1] and "failed:" in cells[2]


def test_html_max_prompts(records, run_dir, tmp_path):
    path = write_html(records, summarize(records), run_dir, tmp_path / "index.html", max_prompts=2)
    text = path.read_text(encoding="utf-8")
    assert text.count("<section>") == 2
    assert "a bird and a bear" not in text
    assert "1 more prompt(s) not shown (max_prompts=2)" in text
    # Prompts 1-2: none 4, conform 3 (one file missing), ebama 3 (one failed), + the heatmap;
    # + the overview grid's 5 (the same two prompts at seed 0, ebama's first failed).
    assert len(parse(path).sources) == 11 + 5


def test_image_cells_show_the_oracle_verdict_and_enlarge_small_images(tmp_path):
    from contrastive_diffusers.eval.report_html import _html_metrics_line, _thumbnail_uri

    wrong = {"status": "ok", "metrics": {"oracle_success": 0.0, "clip_score": 21.0},
             "oracle": {"success": False, "reasons": ["expected 1 blue square, found 0"]}}
    line = _html_metrics_line(wrong)
    assert line.startswith("<div>oracle: wrong (expected 1 blue square, found 0) · CLIP 21")
    assert "oracle: correct" in _html_metrics_line({**wrong, "oracle": {"success": True, "reasons": []}})
    assert "oracle" not in _html_metrics_line({"status": "ok", "metrics": {"clip_score": 21.0}})

    Image.new("RGB", (32, 32), (200, 10, 10)).save(tmp_path / "small.png")
    uri = _thumbnail_uri(tmp_path / "small.png", 160, heatmap=False)
    thumb = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert thumb.size == (160, 160)  # 5x, whole pixels


def test_prompt_intervals_refuse_labels_that_do_not_match_the_values():
    from contrastive_diffusers.eval.stats import prompt_mean_ci

    # one prompt label short: with one prompt left the interval would silently be over seeds
    with pytest.raises(ValueError, match="3 values but 2 prompt labels"):
        prompt_mean_ci([0.0, 1.0, 1.0], ["a", "a"])
    interval, n_prompts = prompt_mean_ci([0.0, 1.0, 1.0], ["a", "a", "a"])
    assert n_prompts == 1 and interval.mean == pytest.approx(2 / 3)
