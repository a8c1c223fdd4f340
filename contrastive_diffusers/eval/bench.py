"""Scripted benchmarks: model x guidance methods x prompt set x seeds -> images, metrics, reports.

:func:`run_benchmark` checks its whole input first (prompt set, model, CLIP model, captioner,
token groups, the folder's earlier settings), then works in three stages, each resumable:

1. **generate**: one image per (method, prompt, seed), with a CPU generator seeded per image so
   that a seed means the same starting noise for every method, on every device and in every
   process. Each image is written as ``<run>/<method>/<prompt-id>/<seed>.png`` (and
   ``<seed>-attention.png``, the last guided step's maps) and then described by a record
   ``<seed>.json`` beside it. A re-run skips every image whose record says ``"ok"`` for the
   same prompt and token groups.
2. **score**: the records without metrics, or scored by another CLIP model or captioner, are
   scored in batches with :func:`~.metrics.image_metrics` and rewritten; prompts that carry
   a ShapesWorld spec (``metadata["spec"]``) are also checked by the world's oracle
   (``oracle_success``, exact), with or without a CLIP model.
3. **report** (main process only): every record of the folder gathered into ``metrics.jsonl``,
   ``summary.json``, ``summary.md`` and a self-contained ``report.html``.

Every file is written to a temporary name and renamed, so killing the run at any moment
loses at most the image in progress. Several runs may fill one folder (more methods, prompts
or seeds); see :mod:`.run_folder` for what they must share. Under ``accelerate launch`` /
``torchrun`` each process takes every n-th (prompt, seed) pair (all methods of a pair stay on
one process) and the main process gathers the records once all are done; the run folder must
be on a file system every process sees.

:func:`score_run` runs stages 2 and 3 alone on an existing folder (the ``score`` command).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any, Sequence

from ..atomic_io import atomic_path, jsonable, save_image_atomic, write_json_atomic, write_jsonl_atomic
from ..shapes.embedded import EMBEDDED_CLIP, EMBEDDED_MODEL
from .prompts import PromptItem, contrast_set, load_prompt_set
from .report import NOT_APPLICABLE
from .run_folder import (
    BenchInputError,
    Ledger,
    gather,
    new_record,
    read_record,
    record_path,
    remove_stale_temporaries,
)

DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch16"  # the Attend-and-Excite protocol's CLIP
TINY_CLIP = "tiny-clip"  # random weights, offline: exercises the machinery only
AUTO = "auto"  # clip_model: the world's CLIP for the embedded model, DEFAULT_CLIP_MODEL otherwise


def default_clip_model(model) -> str:
    """The CLIP that means something for ``model``: the world's own for the embedded ShapesWorld
    model (an OpenAI CLIP has never seen 32 px flat shapes), the A&E protocol's otherwise."""
    return EMBEDDED_CLIP if model == EMBEDDED_MODEL else DEFAULT_CLIP_MODEL


def default_prompt_set(model) -> str:
    return "shapes" if model == EMBEDDED_MODEL else "attend_and_excite"
# Processes wait for each other at the end of generation; a long share must not time out.
_PROCESS_GROUP_TIMEOUT = timedelta(hours=24)

__all__ = ["BenchConfig", "BenchResult", "BenchInputError", "run_benchmark", "score_run", "DEFAULT_CLIP_MODEL",
           "TINY_CLIP"]


@dataclass
class BenchConfig:
    """What to run. ``prompt_set``: a built-in set name, a prompt file, or a list of
    :class:`PromptItem` (``None``: ``"shapes"`` for the embedded model, else
    ``"attend_and_excite"``). ``clip_model``: hub id, folder, ``"tiny-clip"``,
    ``"embedded-clip"``, ``"auto"`` (:func:`default_clip_model`), a ``ClipScorer``, or
    ``None`` to skip scoring. ``captioner``: hub id or folder of a BLIP captioning model, a
    ``Captioner``, or ``None``."""

    output_dir: Path
    model: str = "embedded"
    methods: Sequence[str] = ("none", "conform")
    prompt_set: Any = None
    seeds: Sequence[int] = (0,)
    num_prompts: int | None = None  # the first N prompts of the set
    steps: int = 50
    guidance_scale: float | None = None  # None: 7.5 for SD, 5.0 for SDXL
    height: int | None = None
    width: int | None = None
    attn_res: tuple[int, int] | None = None
    negative_prompt: str | None = None
    device: str = "auto"
    dtype: str | None = None  # None: float16 on CUDA, float32 elsewhere
    clip_model: Any = AUTO
    captioner: Any = None
    contrast: bool = True
    heatmaps: bool = True
    report_max_prompts: int | None = 100
    progress: bool = True

    def __post_init__(self):
        self.output_dir = Path(self.output_dir)
        if self.prompt_set is None:
            self.prompt_set = default_prompt_set(self.model)
        if isinstance(self.clip_model, str) and self.clip_model == AUTO:
            self.clip_model = default_clip_model(self.model)
        self.methods = list(dict.fromkeys(self.methods))
        self.seeds = list(dict.fromkeys(int(s) for s in self.seeds))
        if not self.methods:
            raise BenchInputError("BenchConfig needs at least one method (e.g. ['none', 'conform']).")
        if not self.seeds:
            raise BenchInputError("BenchConfig needs at least one seed.")
        if self.num_prompts is not None and self.num_prompts < 1:
            raise BenchInputError(f"num_prompts must be at least 1, got {self.num_prompts}.")
        if self.steps < 1:
            raise BenchInputError(f"steps must be at least 1, got {self.steps}.")

    def settings(self) -> dict:
        """The plain settings (no scorer or captioner objects: those are named, not copied)."""
        skip = ("clip_model", "captioner", "prompt_set")
        return jsonable({f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip})


@dataclass
class BenchResult:
    run_dir: Path
    records: list[dict]  # every record of the folder (main process; empty elsewhere)
    summary: dict | None  # None on the other processes
    generated: int  # images this process made in this call (0 on a finished re-run)
    scored: int  # records this process scored in this call
    failed: int = 0
    files: dict = field(default_factory=dict)


# ============================================================================ set-up


@dataclass
class _Item:
    """A prompt of the run with what its images need."""

    prompt: PromptItem
    spec: Any  # token groups as the pipelines take them: word lists or "auto"
    words: list[list[str]] | None  # the resolved groups' words; None when they did not resolve
    errors: dict  # method -> why its token groups failed to resolve (a failure)
    not_applicable: dict  # method -> why it cannot apply to this prompt (e.g. one object for CONFORM)
    contrast: dict | None  # perturbation -> caption


@dataclass
class _Setup:
    state: Any
    items: list[_Item]
    methods: dict
    pipe: Any
    options: dict
    scorer: Any
    captioner: Any
    scorer_key: dict
    ledger: Ledger
    run_info: dict


def _load_items(config: BenchConfig) -> list[PromptItem]:
    source = config.prompt_set
    items = list(load_prompt_set(str(source)) if isinstance(source, (str, os.PathLike)) else source)
    if not items:
        raise BenchInputError(f"The prompt set {source!r} holds no prompts.")
    ids = [item.id for item in items]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise BenchInputError(f"Prompt ids must be unique in a run; repeated: {', '.join(duplicates[:5])}.")
    if config.num_prompts and config.num_prompts > len(items):
        print(f"warning: the prompt set has {len(items)} prompts; --num-prompts {config.num_prompts} uses all of them",
              file=sys.stderr)
    return items[: config.num_prompts] if config.num_prompts else items


def _prepare_items(pipe, items: list[PromptItem], methods: dict, want_contrast: bool) -> list[_Item]:
    """Resolve each prompt's token groups once; a prompt whose groups fail is recorded per method, not dropped."""
    from ..guidance.tokens import resolve_groups

    tokenizer = getattr(pipe, "tokenizer", None) or getattr(pipe, "tokenizer_2", None)
    prepared = []
    for item in items:
        spec = item.token_groups or "auto"
        errors, not_applicable, words, groups = {}, {}, None, None
        try:
            groups = resolve_groups(tokenizer, item.prompt, spec)
            words = [list(g.words) for g in groups]
        except ValueError as err:
            errors = {name: str(err) for name, method in methods.items() if method is not None}
        for name, method in methods.items():
            if method is not None and groups is not None:
                try:
                    method.validate_groups(groups, item.prompt)
                except ValueError as err:
                    not_applicable[name] = str(err)
        contrast = _contrast_captions(item, words) if want_contrast else None
        prepared.append(_Item(item, spec, words, errors, not_applicable, contrast))
    return prepared


def _contrast_captions(item: PromptItem, words) -> dict | None:
    if not words:
        return None
    try:
        variants = contrast_set(PromptItem(item.id, item.prompt, item.category, words))
    except ValueError:  # a group word not found as a whole word: no contrast captions for it
        return None
    return {v.metadata["perturbation"]: v.prompt for v in variants} or None


def _name_of(model) -> str | None:
    """How records name a scorer or captioner: the id or folder, or the loaded object's name."""
    if model is None:
        return None
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    return getattr(model, "name", None) or type(model).__name__


def _load_scorer(clip_model, device: str):
    from .clip_score import ClipScorer

    if clip_model is None or not isinstance(clip_model, (str, os.PathLike)):
        return clip_model
    if clip_model == TINY_CLIP:
        from ..testing import tiny_clip

        return ClipScorer(*tiny_clip(), device=device, name=TINY_CLIP)
    if clip_model == EMBEDDED_CLIP:
        from ..shapes.embedded import embedded_clip_dir

        try:
            folder = embedded_clip_dir()
        except FileNotFoundError as err:
            raise OSError(str(err)) from None
        # the name, not the install path, goes into the records
        return ClipScorer.from_pretrained(folder, device=device, name=EMBEDDED_CLIP)
    return ClipScorer.from_pretrained(clip_model, device=device)


def _load_captioner(captioner, device: str):
    if captioner is None or not isinstance(captioner, (str, os.PathLike)):
        return captioner
    from .captioner import Captioner

    return Captioner.from_pretrained(captioner, device=device)


def _scorer_key(clip_model, captioner) -> dict:
    """What a record's metrics depend on besides the image: re-score when it changes."""
    return {"clip": _name_of(clip_model), "captioner": _name_of(captioner) if clip_model is not None else None}


def _state():
    from accelerate import PartialState

    from ..distributed import needs_cpu_process_group

    return PartialState(cpu=needs_cpu_process_group(), timeout=_PROCESS_GROUP_TIMEOUT)


def _device_for(config_device: str, state) -> str:
    from ..loading import resolve_device

    if config_device == "auto" and state.num_processes > 1:
        return str(state.device)  # accelerate gave each process its own GPU (or the CPU)
    return resolve_device(config_device)


def _setup(config: BenchConfig) -> _Setup:
    """Everything that can fail on the user's input, before anything is written."""
    from ..loading import load_pipeline, resolve_dtype
    from ..runs import build_methods, generation_options

    state = _state()
    try:
        items = _load_items(config)
        methods = build_methods(config.methods)
        device = _device_for(config.device, state)
        dtype, dtype_name = resolve_dtype(config.dtype, device)
        pipe = load_pipeline(config.model, device, dtype, quiet=True)
        scorer = _load_scorer(config.clip_model, device)
        captioner = _load_captioner(config.captioner, device) if scorer is not None else None
    except OSError as err:  # missing prompt file, CLIP or captioner folder
        raise BenchInputError(str(err)) from None
    options = generation_options(
        pipe, config.height, config.width, config.steps, config.guidance_scale, config.negative_prompt
    )
    fingerprint = {
        "model": config.model,
        "pipeline": type(pipe).__name__,
        "dtype": dtype_name,
        "generation": {**options, "attn_res": list(config.attn_res) if config.attn_res else None},
    }
    ledger = Ledger.load(config.output_dir)
    ledger.merge(
        fingerprint,
        {name: (m.config() if m is not None else None) for name, m in methods.items()},
        {item.id: item.prompt for item in items},
        {item.id: item.category for item in items},
        config.seeds,
    )
    prepared = _prepare_items(pipe, items, methods, config.contrast)
    key = _scorer_key(config.clip_model, config.captioner)
    run_info = {
        "model": config.model,
        "prompt_set": str(config.prompt_set) if isinstance(config.prompt_set, (str, os.PathLike)) else "(items)",
        "clip_model": key["clip"],
        "captioner": key["captioner"],
        "device": device,
    }
    return _Setup(state, prepared, methods, pipe, options, scorer, captioner, key, ledger, run_info)


# ============================================================================ stage 1: generate


def _record_for(name: str, item: _Item, seed: int) -> dict:
    p = item.prompt
    record = new_record(name, p.id, p.prompt, p.category, seed, item.words, item.contrast)
    record["spec"] = p.metadata.get("spec")  # ShapesWorld: what the oracle checks
    return record


def _make_image(run_dir: Path, setup: _Setup, name: str, item: _Item, seed: int, config: BenchConfig) -> dict:
    import torch

    from ..guidance.visualize import save_output_heatmaps
    from ..runs import generate_image, guidance_summary

    record = _record_for(name, item, seed)
    if name in item.errors:
        record["error"] = item.errors[name]
        return record
    if name in item.not_applicable:
        record.update(status=NOT_APPLICABLE, error=item.not_applicable[name])
        return record
    method = setup.methods[name]
    stem = f"{name}/{item.prompt.id}/{seed}"
    start = time.perf_counter()
    try:
        output = generate_image(setup.pipe, item.prompt.prompt, seed, setup.options, method, item.spec,
                                config.attn_res, config.heatmaps)
    except ValueError as err:  # the pipeline rejecting this input: record it, go on with the others
        record["error"] = str(err)
        return record
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        record["error"] = "out of GPU memory: use a smaller --height/--width or --dtype float16"
        return record
    record["seconds"] = round(time.perf_counter() - start, 3)
    record["process"] = f"{setup.state.process_index}/{setup.state.num_processes}"
    save_image_atomic(output.images[0], run_dir / f"{stem}.png")
    record.update(image=f"{stem}.png", status="ok")
    if method is not None:
        record["guidance"] = guidance_summary(output.guidance_records or [])
        if config.heatmaps and output.attention_maps:
            with atomic_path(run_dir / f"{stem}-attention.png") as tmp:
                save_output_heatmaps(output, tmp)
            record["attention"] = f"{stem}-attention.png"
    return record


def _still_valid(run_dir: Path, record: dict | None, name: str, item: _Item) -> bool:
    """A finished image of this prompt with these token groups (plain images do not use them)."""
    return bool(
        record
        and record.get("status") == "ok"
        and (run_dir / record["image"]).is_file()
        and record.get("prompt") == item.prompt.prompt
        and (name == "none" or record.get("token_groups") == item.words)
    )


def _refresh(path: Path, record: dict, item: _Item) -> None:
    """Bring a kept record's scoring inputs up to date; changed inputs mean new metrics."""
    if record.get("token_groups") != item.words or record.get("contrast_captions") != item.contrast:
        record.update(token_groups=item.words, contrast_captions=item.contrast, metrics=None)
        write_json_atomic(path, record)


def _generate(run_dir: Path, setup: _Setup, config: BenchConfig, shard, progress) -> int:
    todo = []
    for item, seed in shard:
        for name in setup.methods:
            path = record_path(run_dir, name, item.prompt.id, seed)
            record = read_record(path)
            if _still_valid(run_dir, record, name, item):
                _refresh(path, record, item)
            else:
                todo.append((name, item, seed))
    bar = progress(total=len(todo), desc="generate", unit="img")
    generated = 0
    for name, item, seed in todo:
        path = record_path(run_dir, name, item.prompt.id, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = _make_image(run_dir, setup, name, item, seed, config)
        write_json_atomic(path, record)
        if record["status"] == "ok":
            generated += 1
        elif record["status"] == "failed":
            print(f"warning: {name} / {item.prompt.id} / seed {seed} failed: {record['error']}", file=sys.stderr)
        bar.update(1)
    bar.close()
    return generated


# ============================================================================ stage 2: score


def _open_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError) as err:
        raise OSError(f"cannot read image {path}: {err}") from None


def _oracle_metrics(image, spec: dict) -> tuple[dict, dict]:
    """ShapesWorld's exact check of one image: ``oracle_success`` and why it failed."""
    from ..shapes.oracle import check

    result = check(image, spec)
    return {"oracle_success": float(result.success)}, {"success": result.success, "reasons": list(result.reasons)}


def _score(run_dir: Path, paths: list[Path], scorer, captioner, key: dict, force: bool, progress) -> int:
    """Score the records at ``paths`` that need it: CLIP metrics when there is a scorer, the
    oracle where a record has a spec. An unreadable image becomes a failed record."""
    from .metrics import image_metrics

    pending = []
    for path in paths:
        record = read_record(path)
        if not (record and record["status"] == "ok") or (scorer is None and not record.get("spec")):
            continue
        if force or record["metrics"] is None or record.get("scorer") != key:
            pending.append((path, record))
    batch_size = getattr(scorer, "batch_size", 16)
    bar = progress(total=len(pending), desc="score", unit="img")
    for start in range(0, len(pending), batch_size):
        batch = pending[start : start + batch_size]
        readable = []
        for path, record in batch:
            try:
                readable.append((path, record, _open_image(run_dir / record["image"])))
            except OSError as err:
                record.update(status="failed", error=f"{err} (re-run the benchmark to regenerate it)", metrics=None)
                write_json_atomic(path, record)
                print(f"warning: {err}", file=sys.stderr)
        if readable:
            images = [image for _, _, image in readable]
            records = [record for _, record, _ in readable]
            captions = captioner.caption(images) if captioner is not None else None
            results = [{"metrics": {}} for _ in records]
            if scorer is not None:
                results = image_metrics(
                    scorer,
                    images,
                    [r["prompt"] for r in records],
                    token_groups=[r["token_groups"] for r in records],
                    contrast_captions=[r["contrast_captions"] for r in records],
                    captions=captions,
                )
            for i, ((path, record, image), result) in enumerate(zip(readable, results)):
                if record.get("spec"):
                    oracle_metrics, result["oracle"] = _oracle_metrics(image, record["spec"])
                    result["metrics"] = {**oracle_metrics, **result["metrics"]}
                record.update(result, scorer=key, caption=captions[i] if captions else None)
                write_json_atomic(path, record)
        bar.update(len(batch))
    bar.close()
    return len(pending)


# ============================================================================ stage 3: report


def _write_reports(run_dir: Path, records: list[dict], ledger: Ledger, run_info: dict, max_prompts, quiet: bool):
    from . import report

    summary = report.summarize(records)
    files = {
        "metrics": run_dir / "metrics.jsonl",
        "summary": run_dir / "summary.json",
        "markdown": run_dir / "summary.md",
        "html": run_dir / "report.html",
    }
    write_jsonl_atomic(files["metrics"], records)
    write_json_atomic(files["summary"], summary)
    title = f"Benchmark: {run_info.get('model')} on {run_info.get('prompt_set')}"
    shown = _display_info(ledger, run_info)
    report.write_markdown(summary, files["markdown"], title=title, run_info=shown)
    report.write_html(records, summary, run_dir, files["html"], title=title, run_info=shown, max_prompts=max_prompts)
    if not quiet:
        print(report.format_summary_table(summary))
        print(f"report: {files['html']}  (table: {files['markdown']}, per image: {files['metrics']})")
    return summary, files


def _display_info(ledger: Ledger, run_info: dict) -> dict:
    """The run's settings as the reports show them: one short line each."""
    from ..loading import TINY_MODELS
    from ..runs import versions

    data = ledger.data
    generation = data["fingerprint"]["generation"]
    shown = {
        "model": run_info.get("model"),
        "prompt set": f"{run_info.get('prompt_set')} ({len(data['prompts'])} prompts in the folder)",
        "methods": ", ".join(data["methods"]),
        "seeds": ", ".join(str(s) for s in data["seeds"]),
        "steps": generation.get("num_inference_steps"),
        "size": f"{generation.get('height')} x {generation.get('width')}",
        "guidance scale": generation.get("guidance_scale"),
        "CLIP model": run_info.get("clip_model") or "none (not scored)",
        "captioner": run_info.get("captioner") or "none",
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


def _finish(run_dir: Path, state, ledger: Ledger, run_info: dict, key, counts, max_prompts, quiet) -> BenchResult:
    """Main process: gather every record of the folder, write the reports and the final status."""
    generated, scored = counts
    if not state.is_main_process:
        return BenchResult(run_dir, [], None, generated, scored)
    records = gather(run_dir, ledger, _requested(ledger), key)
    summary, files = _write_reports(run_dir, records, ledger, run_info, max_prompts, quiet)
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
    setup = _setup(config)
    state, ledger, run_dir = setup.state, setup.ledger, config.output_dir
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
    generated = _generate(run_dir, setup, config, shard, progress)
    setup.pipe = None  # free the generator's memory before scoring

    paths = [record_path(run_dir, name, item.prompt.id, seed) for item, seed in shard for name in setup.methods]
    scored = _score(run_dir, paths, setup.scorer, setup.captioner, setup.scorer_key, False, progress)
    state.wait_for_everyone()
    return _finish(run_dir, state, ledger, setup.run_info, setup.scorer_key, (generated, scored),
                   config.report_max_prompts, not config.progress)


def score_run(
    run_dir,
    clip_model: Any = AUTO,
    captioner: Any = None,
    force: bool = False,
    device: str = "auto",
    progress: bool = True,
    report_max_prompts: int | None = 100,
) -> BenchResult:
    """Score (or, with ``force``, re-score) the images of an existing benchmark folder and
    rewrite its reports. Images that cannot be read become failed records, listed in the
    reports; nothing is generated."""
    run_dir = Path(run_dir)
    ledger = Ledger.load(run_dir)
    if not ledger.exists:
        raise BenchInputError(
            f"{run_dir} is not a benchmark folder (no bench.json); pass the output folder of a `bench` run."
        )
    if clip_model is None:
        raise BenchInputError("score_run needs a CLIP model (a hub id, a folder or 'tiny-clip').")
    if isinstance(clip_model, str) and clip_model == AUTO:
        clip_model = default_clip_model(ledger.data.get("last_run", {}).get("model"))
    state = _state()
    device = _device_for(device, state)
    try:
        scorer, captioner_model = _load_scorer(clip_model, device), _load_captioner(captioner, device)
    except OSError as err:
        raise BenchInputError(str(err)) from None
    key = _scorer_key(clip_model, captioner)
    pairs = list(dict.fromkeys((prompt_id, seed) for _, prompt_id, seed in ledger.all_jobs()))
    shard = pairs[state.process_index :: state.num_processes]
    paths = [record_path(run_dir, m, prompt_id, seed) for prompt_id, seed in shard for m in ledger.data["methods"]]
    scored = _score(run_dir, paths, scorer, captioner_model, key, force, _progress_factory(progress, state))
    state.wait_for_everyone()
    last = ledger.data.get("last_run", {})
    run_info = {**last, "clip_model": key["clip"], "captioner": key["captioner"], "device": device}
    return _finish(run_dir, state, ledger, run_info, key, (0, scored), report_max_prompts, not progress)
