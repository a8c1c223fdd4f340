"""The report of the ShapesWorld training evidence: ``training.json`` (the issue's schema),
``training.md`` (tables from the same numbers), a chart per experiment
(:func:`.report_charts.write_chart`) and a grid of example images per experiment."""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from pathlib import Path

from ..atomic_io import save_image_atomic, write_json_atomic, write_text_atomic
from .report_charts import write_chart

__all__ = ["example_grid", "format_stat", "merge_results", "training_markdown", "write_report"]


def format_stat(stat: dict) -> str:
    mean, low, high = stat.get("mean"), stat.get("ci_low"), stat.get("ci_high")
    if mean is None or not math.isfinite(mean):
        return "n/a"
    if low is None or not math.isfinite(low):
        return f"{mean:.3f} (n={stat.get('n', 0)})"
    return f"{mean:.3f} [{low:.3f}, {high:.3f}] (n={stat.get('n', 0)})"


def _verdict(low: float, high: float) -> str:
    return "better" if low > 0 else ("worse" if high < 0 else "no clear difference")


def _bounds(stat: dict | None) -> tuple[float, float] | None:
    low, high = (stat or {}).get("ci_low"), (stat or {}).get("ci_high")
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return None
    return low, high


def _delta(stat: dict, across: dict | None = None, prompts: dict | None = None) -> str:
    """``"+0.05 [+0.01, +0.09] (better)"``. The verdict is read from the widest sampling unit
    given: ``across`` (the training seeds as the samples), else ``prompts`` (the prompts as
    the samples): the images of one trained model, or of one prompt, are not independent
    draws, so the pooled interval alone overstates certainty."""
    delta = stat.get("delta")
    if delta is None or not math.isfinite(delta):
        return "n/a"
    pooled = _bounds(stat)
    if pooled is None:
        return f"{delta:+.3f}"
    text = f"{delta:+.3f} [{pooled[0]:+.3f}, {pooled[1]:+.3f}]"
    verdict = pooled
    if _bounds(prompts) is not None:
        verdict = _bounds(prompts)
        text += f" over images; over prompts [{verdict[0]:+.3f}, {verdict[1]:+.3f}]"
    if _bounds(across) is not None:
        verdict = _bounds(across)
        text += "" if _bounds(prompts) else " over images"
        text += f"; across training seeds [{verdict[0]:+.3f}, {verdict[1]:+.3f}]"
    return f"{text} ({_verdict(*verdict)})"


def merge_results(path: Path, new: dict) -> dict:
    """The file's experiments updated with ``new`` (a ``--only`` run keeps the others)."""
    path = Path(path)
    results = json.loads(path.read_text()) if path.exists() else {}
    results.update(new)
    return results


def markdown_sections(text: str) -> dict[str, str]:
    """``{experiment: its "## experiment" section}`` of a ``training.md``."""
    sections, name = {}, None
    for line in text.splitlines():
        if line.startswith("## "):
            name = line[3:].strip()
            sections[name] = []
        elif name is not None:
            sections[name].append(line)
    return {name: "\n".join([f"## {name}", *lines]).rstrip("\n") + "\n" for name, lines in sections.items()}


def training_markdown(results: dict, details: dict, header: str = "", examples: Collection[str] = (),
                      kept: dict[str, str] | None = None) -> str:
    """Tables of every experiment: method and baselines (mean, 95% interval, n) with the paired
    difference, then each arm's secondary metrics; ``examples`` names the experiments whose
    example grid was written. An experiment without details (a ``--only`` call in a fresh work
    folder that ran others) keeps its section of ``kept`` (the earlier training.md's) as written."""
    lines = ["# Training evidence in ShapesWorld", ""]
    if header:
        lines += [header, ""]
    for name, entry in results.items():
        if name not in details and name in (kept or {}):
            lines.append(kept[name])
            continue
        sizes, call = entry.get("sizes"), entry.get("last_call")
        lines += [f"## {name}", "", f"Metric: {entry['metric']}; {entry['minutes']:.1f} minutes.", "",
                  *([f"Sizes: {', '.join(f'{k}={v}' for k, v in sizes.items())}.", ""] if sizes else []),
                  *([f"Last call: `{call['command']}` on {call['machine']}, {call['date']}.", ""] if call else []),
                  "| arm | mean [95% CI] (n) | method − arm, paired [95% CI] |", "|---|---|---|",
                  f"| **{name}** (method) | {format_stat(entry['method'])} | |"]
        for baseline, stat in entry["baselines"].items():
            across = entry.get("across_training_seeds", {}).get(baseline)
            prompts = entry.get("paired_by_prompt", {}).get(baseline)
            lines.append(f"| {baseline} | {format_stat(stat)} | {_delta(entry['paired'][baseline], across, prompts)} |")
        for baseline, per_seed in entry.get("by_training_seed", {}).items():
            across = entry.get("across_training_seeds", {}).get(baseline, {})
            lines += ["", f"Each training seed's paired difference from {baseline}: " + "; ".join(
                f"seed {k}: {_delta(stat)}" for k, stat in per_seed.items()) + "; their mean, with the training "
                f"seeds as the samples: {_delta({'delta': across.get('mean'), **across})}."]
        arms = details.get(name, {}).get("arms", {})
        keys = sorted({k for rates in arms.values() for k in rates})
        if arms and keys:
            lines += ["", "| arm | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
            for arm, rates in arms.items():
                cells = [f"{rates[k]['mean']:.3f}" if k in rates and rates[k]["n"] else "" for k in keys]
                lines.append(f"| {arm} | " + " | ".join(cells) + " |")
            if name in examples:
                lines += ["", f"Examples (`training-{name}-examples.png`, first seed): one row per arm, top to "
                          "bottom: " + ", ".join(sorted(arms)) + "."]
        lines.append("")
    return "\n".join(lines)


def example_grid(examples_dir: Path, path: Path, per_arm: int = 6, scale: int = 2) -> Path | None:
    """One row per arm of its first example images (``examples_dir/<arm>/*.png``), upscaled."""
    from PIL import Image

    examples_dir = Path(examples_dir)
    rows = [(d.name, sorted(d.glob("*.png"))[:per_arm]) for d in sorted(examples_dir.iterdir()) if d.is_dir()] \
        if examples_dir.exists() else []
    rows = [(name, files) for name, files in rows if files]
    if not rows:
        return None
    names = sorted({f.name for _, files in rows for f in files})[:per_arm]
    first = Image.open(rows[0][1][0])
    side = first.width * scale
    grid = Image.new("RGB", (side * len(names), side * len(rows)), (255, 255, 255))
    for r, (_, files) in enumerate(rows):
        by_name = {f.name: f for f in files}
        for c, name in enumerate(names):
            if name in by_name:
                image = Image.open(by_name[name]).convert("RGB").resize((side, side), Image.NEAREST)
                grid.paste(image, (c * side, r * side))
    save_image_atomic(grid, path)
    return path


def write_report(results: dict, details: dict, output_dir: Path, results_dir: Path, header: str = "") -> list[Path]:
    """Write ``training.json``, ``training.md``, the charts and example grids into ``results_dir``."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    written, examples = [], []
    for name in results:
        arms = details.get(name, {}).get("arms", {})
        series = {arm: {k.split("/", 1)[1]: v for k, v in rates.items() if k.startswith("success/")} or
                  {"all": rates["success"]} for arm, rates in arms.items() if "success" in rates}
        if series:
            written.append(write_chart(series, results_dir / f"training-{name}.png", f"{name}: oracle success",
                                       "success"))
        grid = example_grid(Path(output_dir) / name / "examples", results_dir / f"training-{name}-examples.png")
        if grid is not None:
            written.append(grid)
            examples.append(name)
    markdown = results_dir / "training.md"
    kept = markdown_sections(markdown.read_text(encoding="utf-8")) if markdown.exists() else {}
    write_json_atomic(results_dir / "training.json", results)
    write_text_atomic(markdown, training_markdown(results, details, header, examples, kept) + "\n")
    return [results_dir / "training.json", results_dir / "training.md", *written]
