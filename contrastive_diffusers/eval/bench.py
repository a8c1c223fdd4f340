"""Scripted benchmarks: model x guidance methods x prompt set x seeds -> images, metrics, reports.

:func:`run_benchmark` checks its whole input first (prompt set, model, CLIP model, captioner,
token groups, the folder's earlier settings), then works in three stages, each resumable:

1. **generate**: one image per (method, prompt, seed), with a CPU generator seeded per image so
   that a seed means the same starting noise for every method, on every device and in every
   process. Each image is written as ``<run>/<method>/<prompt-id>/<seed>.png`` (and
   ``<seed>-attention.png``, the last guided step's maps) and then described by a record
   ``<seed>.json`` beside it. A re-run skips every image whose record says ``"ok"`` for the
   same prompt and token groups. With ``seed_batch`` > 1 the missing seeds of one method and
   prompt are drawn up to that many per pipeline call, each from its own generator.
2. **score**: the records without metrics, or scored by another CLIP model or captioner, are
   scored in batches with :func:`~.metrics.image_metrics` and rewritten; prompts that carry
   a ShapesWorld spec (``metadata["spec"]``) are also checked by the world's oracle
   (``oracle_success``, exact), with or without a CLIP model. Then each of the benchmarks'
   own judges named in ``judges`` (:mod:`.judges`: T2I-CompBench's B-VQA, GenEval) scores
   the images it has not judged with its present settings; its metrics join the CLIP ones.
3. **report** (main process only): every record of the folder gathered into ``metrics.jsonl``,
   ``summary.json``, ``summary.md`` and a self-contained ``report.html``, with each judge's
   own table (its paper's per-category numbers) under ``summary["judges"]``.

Every file is written to a temporary name and renamed, so killing the run at any moment
loses at most the image in progress. Several runs may fill one folder (more methods, prompts
or seeds); see :mod:`.run_folder` for what they must share. Under ``accelerate launch`` /
``torchrun`` each process takes every n-th (prompt, seed) pair (all methods of a pair stay on
one process) and the main process gathers the records once all are done; the run folder must
be on a file system every process sees.

:func:`score_run` runs stages 2 and 3 alone on an existing folder (the ``score`` command).
The set-up and the first two stages are in :mod:`.bench_setup`, :mod:`.bench_generate` and
:mod:`.bench_score`; the images themselves are made by :func:`contrastive_diffusers.runs.make_image`,
as ``generate`` makes them.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from ..atomic_io import write_json_atomic, write_jsonl_atomic
from ..models.names import EMBEDDED_CLIP, TINY_CLIP, TINY_MODELS, default_clip_model
from ..prompts import PromptItem
from ..records import versions
from .bench_config import AUTO, BenchConfig, BenchResult
from .bench_generate import generate_stage, judge_metadata
from .bench_score import score_stage
from .bench_setup import (
    check_baseline,
    contrast_captions_for,
    device_for,
    load_captioner,
    load_scorer,
    process_state,
    scorer_key,
    setup_run,
)
from .judges import load_judges
from .report import format_summary_table, write_markdown
from .report_html import write_html
from .run_folder import (
    BENCH_FILE,
    BenchInputError,
    Ledger,
    drop_clip_metrics,
    gather,
    read_record,
    record_path,
    remove_stale_temporaries,
)
from .summary import summarize

__all__ = ["BenchConfig", "BenchResult", "BenchInputError", "run_benchmark", "score_run"]


def _refresh_contrast_captions(paths) -> None:
    """Records keep the contrast captions they were scored with; when the captions made now
    differ (a newer version makes them differently), store the new ones and drop the metrics,
    as a bench resume does, so that ``score`` never re-scores with stale captions."""
    for path in paths:
        record = read_record(path)  # None: missing or damaged (scoring skips it; bench redoes it)
        if record is None or record.get("contrast_captions") is None:  # or a --no-contrast folder
            continue
        item = PromptItem(record["prompt_id"], record["prompt"], record.get("category"))
        captions = contrast_captions_for(item, record.get("token_groups"))
        if captions != record["contrast_captions"]:
            record["contrast_captions"] = captions
            drop_clip_metrics(record)
            write_json_atomic(path, record)


# ============================================================================ stage 3: report


def _judge_tables(records: list[dict], judges) -> dict:
    """Each judge's own table; a judge whose results the folder holds but that this call did not
    load (``--judge`` left out) gets a note instead."""
    tables = {judge.name: judge.summarize(records) for judge in judges}
    for name in dict.fromkeys(n for r in records for n in (r.get("judges") or {})):
        if name not in tables:
            tables[name] = {"title": name, "columns": [], "rows": [], "notes": [
                f"the folder holds {name} results; run again with --judge {name} to print its table"]}
    return tables


def _write_reports(run_dir: Path, records: list[dict], ledger: Ledger, run_info: dict, max_prompts, quiet: bool,
                   judges=(), baseline=None):
    summary = summarize(records, baseline=baseline)
    summary["judges"] = _judge_tables(records, judges)
    files = {
        "metrics": run_dir / "metrics.jsonl",
        "summary": run_dir / "summary.json",
        "markdown": run_dir / "summary.md",
        "html": run_dir / "report.html",
    }
    write_jsonl_atomic(files["metrics"], records)
    write_json_atomic(files["summary"], summary)
    title = f"Benchmark: {run_info.get('model')} on {_prompt_sets(ledger, run_info)}"
    shown = _display_info(ledger, run_info)
    write_markdown(summary, files["markdown"], title=title, run_info=shown)
    write_html(records, summary, run_dir, files["html"], title=title, run_info=shown, max_prompts=max_prompts)
    if not quiet:
        print(format_summary_table(summary))
        print(f"report: {files['html']}  (table: {files['markdown']}, per image: {files['metrics']})")
    return summary, files


def _negative_prompt_shown(generation: dict) -> str:
    negative = generation.get("negative_prompt")
    if not negative:
        return "none"
    true_cfg = generation.get("true_cfg_scale")
    return f"{negative!r}" + (f" (true CFG scale {true_cfg})" if true_cfg else "")


def _prompt_sets(ledger: Ledger, run_info: dict) -> str:
    """The prompt sets of every run the folder holds (runs may add prompts from other sets)."""
    sets = [run.get("run_info", {}).get("prompt_set") for run in ledger.data["runs"]] + [run_info.get("prompt_set")]
    return ", ".join(str(s) for s in dict.fromkeys(sets) if s is not None)


def _display_info(ledger: Ledger, run_info: dict) -> dict:
    """The run's settings as the reports show them: one short line each."""
    data = ledger.data
    generation = data["fingerprint"]["generation"]
    shown = {
        "model": run_info.get("model"),
        "prompt set": f"{_prompt_sets(ledger, run_info)} ({len(data['prompts'])} prompts in the folder)",
        "methods": ", ".join(data["methods"]),
        "seeds": ", ".join(str(s) for s in data["seeds"]),
        "steps": generation.get("num_inference_steps"),
        "scheduler": data["fingerprint"].get("scheduler") or "the model's own",
        "size": f"{generation.get('height')} x {generation.get('width')}",
        "guidance scale": generation.get("guidance_scale"),
        "negative prompt": _negative_prompt_shown(generation),
        "CLIP model": run_info.get("clip_model") or "none (not scored)",
        "captioner": run_info.get("captioner") or "none",
        "judges": ", ".join(f"{name} ({', '.join(f'{k}: {v}' for k, v in settings.items() if k != 'name')})"
                            for name, settings in (run_info.get("judges") or {}).items()) or "none",
        "device": f"{run_info.get('device')}, {data['fingerprint'].get('dtype')}",
        "versions": ", ".join(f"{k} {v}" for k, v in versions().items()),
    }
    if run_info.get("model") in TINY_MODELS or run_info.get("clip_model") == TINY_CLIP:
        shown["note"] = "random-weight test models: these numbers exercise the machinery and mean nothing"
    return shown


def _requested(ledger: Ledger) -> set:
    """Every (method, prompt id, seed) some run of the folder asked for."""
    return {
        (method, prompt_id, seed)
        for run in ledger.data["runs"]
        for prompt_id in run["prompt_ids"]
        for seed in run["seeds"]
        for method in run["methods"]
    }


def _finish(run_dir: Path, state, ledger: Ledger, run_info: dict, key, counts, max_prompts, quiet,
            judges=(), baseline=None) -> BenchResult:
    """Main process: gather every record of the folder, write the reports and the final status."""
    generated, scored = counts
    if not state.is_main_process:
        return BenchResult(run_dir, [], None, generated, scored)
    records = gather(run_dir, ledger, _requested(ledger), key)
    summary, files = _write_reports(run_dir, records, ledger, run_info, max_prompts, quiet, judges, baseline)
    failed = sum(r["status"] == "failed" for r in records)
    ledger.save(status="finished" if not failed else "finished with failures", failed=failed, last_run=run_info)
    return BenchResult(run_dir, records, summary, generated, scored, failed, files)


# ============================================================================ the runs


def _progress_factory(enabled: bool, state):
    from tqdm.auto import tqdm

    suffix = f" [{state.process_index + 1}/{state.num_processes}]" if state.num_processes > 1 else ""

    def make(total: int, desc: str, unit: str):
        return tqdm(total=total, desc=desc + suffix, unit=unit, disable=not enabled, dynamic_ncols=True)

    return make


def run_benchmark(config: BenchConfig) -> BenchResult:
    """Generate, score and report; see the module docstring. Bad input raises
    :class:`BenchInputError` (or ``LoadError`` for the model), both ``ValueError``, before
    anything is written."""
    setup = setup_run(config)
    state, ledger, run_dir = setup.state, setup.ledger, config.output_dir
    judges = _load_judges(config.judges, config.judge_options, setup.run_info["device"])
    _check_judge_input(judges, [(i.prompt.id, i.prompt.prompt, judge_metadata(i.prompt)) for i in setup.items],
                       "fix it in the prompt file, or leave --judge out.")
    setup.run_info["judges"] = {judge.name: judge.settings() for judge in judges}
    progress = _progress_factory(config.progress, state)
    if state.is_main_process:
        if run_dir.exists():
            remove_stale_temporaries(run_dir)
        ledger.data["runs"].append({
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "methods": list(setup.methods),
            "prompt_ids": [item.prompt.id for item in setup.items],
            "seeds": list(config.seeds),
            "settings": config.settings(),
            "run_info": setup.run_info,
        })
        ledger.save(status="running")
    state.wait_for_everyone()  # the folder exists and is clean before any process writes to it

    pairs = [(item, seed) for item in setup.items for seed in config.seeds]
    shard = pairs[state.process_index :: state.num_processes]
    try:
        generated = generate_stage(run_dir, setup, shard, progress, config.seed_batch)
        setup.images = None  # free the generator's memory before scoring
        paths = [record_path(run_dir, name, item.prompt.id, seed) for item, seed in shard for name in setup.methods]
        scored = score_stage(run_dir, paths, setup.scorer, setup.captioner, setup.scorer_key, False, progress, judges)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: what finished is kept, and the folder says so
        if state.is_main_process:
            ledger.save(status="interrupted")
        raise
    state.wait_for_everyone()
    return _finish(run_dir, state, ledger, setup.run_info, setup.scorer_key, (generated, scored),
                   config.report_max_prompts, not config.progress, judges, setup.baseline)


def _load_judges(names, options: dict, device: str) -> list:
    """The run's judges, loaded before anything is written; a model that cannot be loaded is the
    user's input error."""
    try:
        return load_judges(names, options, device)
    except OSError as err:
        raise BenchInputError(str(err)) from None


def _check_judge_input(judges, rows, fix: str) -> None:
    """A prompt whose evaluation row a judge cannot read is refused before the first image is
    drawn or judged, not after. ``rows``: ``(prompt id, prompt, judge metadata)``."""
    for judge in judges:
        for prompt_id, prompt, metadata in rows:
            problem = judge.input_problem(metadata)
            if problem:
                raise BenchInputError(
                    f"prompt {prompt_id!r} ({prompt!r}): {problem} The {judge.name} judge reads this row; {fix}")


def _loadable(clip_name) -> str | None:
    """A folder's recorded CLIP model, if it names one that loads by name: a built-in, a folder
    that exists from here, or a hub id; not the name of an object a Python caller passed."""
    if not isinstance(clip_name, str):
        return None
    if clip_name in (TINY_CLIP, EMBEDDED_CLIP) or Path(clip_name).is_dir():
        return clip_name
    return clip_name if re.fullmatch(r"[\w.-]+/[\w.-]+", clip_name) and not Path(clip_name).exists() else None


def score_run(
    run_dir,
    clip_model: Any = AUTO,
    captioner: Any = None,
    force: bool = False,
    device: str = "auto",
    progress: bool = True,
    report_max_prompts: int | None = 100,
    judges=(),
    judge_options: dict | None = None,
    baseline: str | None = None,
) -> BenchResult:
    """Score (or, with ``force``, re-score) the images of an existing benchmark folder and
    rewrite its reports; ``judges`` / ``judge_options`` / ``baseline`` as in :class:`BenchConfig`. Images that
    cannot be read become failed records, listed in the reports; nothing is generated."""
    run_dir = Path(run_dir)
    # bench.json first: Ledger.load would call another command's folder one bench cannot reuse
    ledger = Ledger.load(run_dir) if (run_dir / BENCH_FILE).exists() else None
    if ledger is None or not ledger.exists:
        raise BenchInputError(
            f"{run_dir} is not a benchmark folder (no {BENCH_FILE}); pass the output folder of a `bench` run."
        )
    baseline = check_baseline(baseline, ledger.data["methods"])
    if clip_model is None:
        raise BenchInputError("score_run needs a CLIP model (a hub id, a folder or 'tiny-clip').")
    if isinstance(clip_model, str) and clip_model == AUTO:  # the folder's own CLIP: nothing re-scored for it
        last = ledger.data.get("last_run", {})
        clip_model = _loadable(last.get("clip_model")) or default_clip_model(last.get("model"))
    state = process_state()
    device = device_for(device, state)
    try:
        scorer, captioner_model = load_scorer(clip_model, device), load_captioner(captioner, device)
    except OSError as err:
        raise BenchInputError(str(err)) from None
    judges = _load_judges(judges, judge_options or {}, device)
    key = scorer_key(clip_model, captioner)
    pairs = list(dict.fromkeys((prompt_id, seed) for _, prompt_id, seed in ledger.all_jobs()))
    shard = pairs[state.process_index :: state.num_processes]
    paths = [record_path(run_dir, m, prompt_id, seed) for prompt_id, seed in shard for m in ledger.data["methods"]]
    # every process checks every row, so that all refuse together (not one while the rest wait)
    every = [record_path(run_dir, m, prompt_id, seed) for prompt_id, seed in pairs for m in ledger.data["methods"]]
    records = [r for r in map(read_record, every) if r is not None] if judges else []
    _check_judge_input(judges, [(r["prompt_id"], r["prompt"], r.get("judge_metadata")) for r in records],
                       "fix it in the prompt file and run bench on this folder with it (nothing is redrawn), or "
                       "leave --judge out.")
    _refresh_contrast_captions(paths)
    scored = score_stage(run_dir, paths, scorer, captioner_model, key, force, _progress_factory(progress, state),
                         judges)
    state.wait_for_everyone()
    last = ledger.data.get("last_run", {})
    run_info = {**last, "clip_model": key["clip"], "captioner": key["captioner"], "device": device,
                "judges": {judge.name: judge.settings() for judge in judges}}
    return _finish(run_dir, state, ledger, run_info, key, (0, scored), report_max_prompts, not progress, judges,
                   baseline)
