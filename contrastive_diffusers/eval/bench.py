"""Scripted benchmarks: model x guidance methods x prompt set x seeds -> images, metrics, reports.

:func:`run_benchmark` does the whole job in three stages, each resumable:

1. **generate**: one image per (method, prompt, seed), with a CPU generator seeded per image so
   that a seed means the same starting noise for every method, on every device and in every
   process. Each image is written as ``<run>/<method>/<prompt-id>/<seed>.png`` (and
   ``<seed>-attention.png``, the last guided step's maps) and then described by a record
   ``<seed>.json`` beside it. A re-run skips every image whose record says ``"ok"``.
2. **score**: the records without metrics (or scored by another CLIP model) are scored in
   batches with :func:`~.metrics.image_metrics` and rewritten.
3. **report** (main process only): every record of the run gathered into ``metrics.jsonl``,
   ``summary.json``, ``summary.md`` and a self-contained ``report.html``.

Every file is written to a temporary name and renamed, so killing the run at any moment
loses at most the image in progress. Under ``accelerate launch`` / ``torchrun`` each process
takes every n-th (prompt, seed) pair (all methods of a pair stay on one process) and the
main process gathers the records once all are done; the run folder must be on a file system
every process sees.

:func:`score_run` runs stages 2 and 3 alone on an existing run folder (``score`` command).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..atomic_io import atomic_path, jsonable, read_json, save_image_atomic, write_json_atomic, write_jsonl_atomic
from .prompts import PromptItem, contrast_set, load_prompt_set

DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch16"  # the Attend-and-Excite protocol's CLIP
TINY_CLIP = "tiny-clip"  # random weights, offline: exercises the machinery only
BENCH_FILE = "bench.json"

__all__ = ["BenchConfig", "BenchResult", "run_benchmark", "score_run", "DEFAULT_CLIP_MODEL", "TINY_CLIP"]


@dataclass
class BenchConfig:
    """What to run. ``prompt_set``: a built-in set name, a prompt file, or a list of
    :class:`PromptItem`. ``clip_model``: hub id, folder, ``"tiny-clip"``, a ``ClipScorer``, or
    ``None`` to skip scoring. ``captioner``: hub id or folder of a BLIP captioning model, a
    ``Captioner``, or ``None``."""

    output_dir: Path
    model: str = "tiny-sd1"
    methods: Sequence[str] = ("none", "conform")
    prompt_set: Any = "attend_and_excite"
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
    clip_model: Any = DEFAULT_CLIP_MODEL
    captioner: Any = None
    contrast: bool = True
    heatmaps: bool = True
    report_max_prompts: int | None = 100
    progress: bool = True

    def __post_init__(self):
        self.output_dir = Path(self.output_dir)
        self.methods = list(dict.fromkeys(self.methods))
        self.seeds = list(dict.fromkeys(int(s) for s in self.seeds))
        if not self.methods:
            raise ValueError("BenchConfig needs at least one method (e.g. ['none', 'conform']).")
        if not self.seeds:
            raise ValueError("BenchConfig needs at least one seed.")
        if self.num_prompts is not None and self.num_prompts < 1:
            raise ValueError(f"num_prompts must be at least 1, got {self.num_prompts}.")
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}.")


@dataclass
class BenchResult:
    run_dir: Path
    records: list[dict]  # the gathered records (main process); this process's share elsewhere
    summary: dict | None
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
    errors: dict  # method -> why the groups cannot drive it
    contrast: dict | None  # perturbation -> caption


def _load_items(config: BenchConfig) -> list[PromptItem]:
    items = config.prompt_set if not isinstance(config.prompt_set, (str, Path)) else load_prompt_set(str(config.prompt_set))
    items = list(items)
    if not items:
        raise ValueError(f"The prompt set {config.prompt_set!r} holds no prompts.")
    ids = [item.id for item in items]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"Prompt ids must be unique in a run; repeated: {', '.join(duplicates[:5])}.")
    return items[: config.num_prompts] if config.num_prompts else items


def _prepare_items(pipe, items: list[PromptItem], methods: dict, want_contrast: bool) -> list[_Item]:
    """Resolve each prompt's token groups once; a prompt whose groups fail is recorded per method, not dropped."""
    from ..guidance.tokens import resolve_groups

    tokenizer = getattr(pipe, "tokenizer", None) or getattr(pipe, "tokenizer_2", None)
    prepared = []
    for item in items:
        spec = item.token_groups or "auto"
        errors, words = {}, None
        try:
            groups = resolve_groups(tokenizer, item.prompt, spec)
            words = [list(g.words) for g in groups]
        except ValueError as err:
            groups, message = None, str(err)
            errors = {name: message for name, method in methods.items() if method is not None}
        for name, method in methods.items():
            if method is not None and groups is not None:
                try:
                    method.validate_groups(groups, item.prompt)
                except ValueError as err:
                    errors[name] = str(err)
        prepared.append(_Item(item, spec, words, errors, _contrast_captions(item, words) if want_contrast else None))
    return prepared


def _contrast_captions(item: PromptItem, words) -> dict | None:
    if not words:
        return None
    try:
        variants = contrast_set(PromptItem(item.id, item.prompt, item.category, words))
    except ValueError:  # a group word not found as a whole word: no contrast captions for it
        return None
    return {v.metadata["perturbation"]: v.prompt for v in variants} or None


def _fingerprint(config: BenchConfig, pipe, methods: dict, dtype_name: str, options: dict) -> dict:
    """What must not change between the runs that fill one folder."""
    return {
        "model": config.model,
        "pipeline": type(pipe).__name__,
        "dtype": dtype_name,
        "generation": {**options, "attn_res": list(config.attn_res) if config.attn_res else None},
        "methods": {name: (m.config() if m is not None else None) for name, m in methods.items()},
    }


def _check_same_run(run_dir: Path, fingerprint: dict, items: list[PromptItem]) -> None:
    path = run_dir / BENCH_FILE
    if not path.exists():
        return
    previous = read_json(path)
    old = previous.get("fingerprint", {})
    new = jsonable(fingerprint)
    for key in ("model", "pipeline", "dtype", "generation"):
        if old.get(key) != new[key]:
            raise ValueError(
                f"{run_dir} holds a run made with different settings ({key}: {old.get(key)!r} there, "
                f"{new[key]!r} now). Resume with the same settings, or choose another output folder."
            )
    for name, method_config in new["methods"].items():
        if name in old.get("methods", {}) and old["methods"][name] != method_config:
            raise ValueError(
                f"{run_dir} holds images of method {name!r} made with another configuration; "
                "resume with the same method settings, or choose another output folder."
            )
    old_prompts = previous.get("prompts", {})
    for item in items:
        if item.id in old_prompts and old_prompts[item.id] != item.prompt:
            raise ValueError(
                f"{run_dir} has prompt id {item.id!r} as {old_prompts[item.id]!r}, the prompt set now says "
                f"{item.prompt!r}; use another output folder for a changed prompt set."
            )


# ============================================================================ stage 1: generate


def _record_path(run_dir: Path, method: str, prompt_id: str, seed: int) -> Path:
    return run_dir / method / prompt_id / f"{seed}.json"


def _read_record(path: Path) -> dict | None:
    try:
        return read_json(path)
    except FileNotFoundError:
        return None
    except ValueError:  # cannot happen with atomic writes, but a hand-edited file must not stop the run
        return None


def _base_record(method: str, item: _Item, seed: int) -> dict:
    prompt = item.prompt
    return {
        "method": method,
        "prompt_id": prompt.id,
        "prompt": prompt.prompt,
        "category": prompt.category,
        "seed": seed,
        "image": None,
        "attention": None,
        "status": "failed",
        "error": None,
        "seconds": None,
        "token_groups": item.words,
        "contrast_captions": item.contrast,
        "guidance": None,
        "metrics": None,
        "scorer": None,
    }


def _make_image(run_dir: Path, pipe, name: str, method, item: _Item, seed: int, options, config) -> dict:
    from ..guidance.visualize import save_output_heatmaps
    from ..runs import generate_image, guidance_summary

    record = _base_record(name, item, seed)
    if name in item.errors:
        record["error"] = item.errors[name]
        return record
    stem = f"{name}/{item.prompt.id}/{seed}"
    start = time.perf_counter()
    try:
        output = generate_image(
            pipe, item.prompt.prompt, seed, options, method, item.spec, config.attn_res, config.heatmaps
        )
    except ValueError as err:  # the pipeline rejecting this input: record it, go on with the others
        record["error"] = str(err)
        return record
    record["seconds"] = round(time.perf_counter() - start, 3)
    save_image_atomic(output.images[0], run_dir / f"{stem}.png")
    record.update(image=f"{stem}.png", status="ok")
    if method is not None:
        record["guidance"] = guidance_summary(output.guidance_records or [])
        if config.heatmaps and output.attention_maps:
            with atomic_path(run_dir / f"{stem}-attention.png") as tmp:
                save_output_heatmaps(output, tmp)
            record["attention"] = f"{stem}-attention.png"
    return record


def _generate(run_dir, pipe, methods, options, config, shard, progress) -> int:
    jobs = [(name, item, seed) for item, seed in shard for name in methods]
    todo = []
    for name, item, seed in jobs:
        record = _read_record(_record_path(run_dir, name, item.prompt.id, seed))
        if not (record and record.get("status") == "ok" and (run_dir / record["image"]).is_file()):
            todo.append((name, item, seed))
    bar = progress(total=len(todo), desc="generate", unit="img")
    generated = 0
    for name, item, seed in todo:
        path = _record_path(run_dir, name, item.prompt.id, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = _make_image(run_dir, pipe, name, methods[name], item, seed, options, config)
        write_json_atomic(path, record)
        if record["status"] == "ok":
            generated += 1
        else:
            print(f"warning: {name} / {item.prompt.id} / seed {seed} failed: {record['error']}", file=sys.stderr)
        bar.update(1)
    bar.close()
    return generated


# ============================================================================ stage 2: score


def _scorer_name(clip_model) -> str:
    return clip_model if isinstance(clip_model, str) else getattr(clip_model, "name_or_path", type(clip_model).__name__)


def _load_scorer(clip_model, device: str):
    from .clip_score import ClipScorer

    if not isinstance(clip_model, str):
        return clip_model
    if clip_model == TINY_CLIP:
        from ..testing import tiny_clip

        return ClipScorer(*tiny_clip(), device=device)
    return ClipScorer.from_pretrained(clip_model, device=device)


def _load_captioner(captioner, device: str):
    if captioner is None or not isinstance(captioner, str):
        return captioner
    from .captioner import Captioner

    return Captioner.from_pretrained(captioner, device=device)


def _open_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError) as err:
        raise OSError(f"cannot read image {path}: {err}") from None


def _score(run_dir: Path, paths: list[Path], scorer, scorer_name: str, captioner, force: bool, progress) -> int:
    """Score the records at ``paths`` that need it; an unreadable image becomes a failed record."""
    from .metrics import image_metrics

    pending = []
    for path in paths:
        record = _read_record(path)
        if record and record["status"] == "ok" and (force or record.get("scorer") != scorer_name or record["metrics"] is None):
            pending.append((path, record))
    batch_size = getattr(scorer, "batch_size", 16)
    bar = progress(total=len(pending), desc="score", unit="img")
    for start in range(0, len(pending), batch_size):
        readable = []
        for path, record in pending[start : start + batch_size]:
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
            results = image_metrics(
                scorer,
                images,
                [r["prompt"] for r in records],
                token_groups=[r["token_groups"] for r in records],
                contrast_captions=[r["contrast_captions"] for r in records],
                captions=captions,
            )
            for i, ((path, record, _), result) in enumerate(zip(readable, results)):
                record.update(result, scorer=scorer_name, caption=captions[i] if captions else None)
                write_json_atomic(path, record)
        bar.update(len(pending[start : start + batch_size]))
    bar.close()
    return len(pending)


# ============================================================================ stage 3: report


def _gather(run_dir: Path, jobs: list[tuple[str, str, int]], item_by_id: dict) -> list[dict]:
    records = []
    for name, prompt_id, seed in jobs:
        record = _read_record(_record_path(run_dir, name, prompt_id, seed))
        if record is None:
            item = item_by_id[prompt_id]
            record = _base_record(name, item, seed)
            record["error"] = "no record: the process that owned this image stopped before making it; re-run to finish"
        records.append(record)
    return records


def _write_reports(run_dir: Path, records: list[dict], run_info: dict, max_prompts, quiet: bool) -> tuple[dict, dict]:
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
    shown = _display_info(run_info)
    report.write_markdown(summary, files["markdown"], title=title, run_info=shown)
    report.write_html(records, summary, run_dir, files["html"], title=title, run_info=shown, max_prompts=max_prompts)
    if not quiet:
        print(report.format_summary_table(summary))
        print(f"report: {files['html']}  (table: {files['markdown']}, per image: {files['metrics']})")
    return summary, files


def _display_info(run_info: dict) -> dict:
    """The run's settings as the reports show them: one short line each."""
    from ..loading import TINY_MODELS

    generation = run_info.get("fingerprint", {}).get("generation", {})
    shown = {
        "model": run_info.get("model"),
        "prompt set": f"{run_info.get('prompt_set')} ({len(run_info.get('prompts', {}))} prompts)",
        "methods": ", ".join(run_info.get("methods", [])),
        "seeds": ", ".join(str(s) for s in run_info.get("seeds", [])),
        "steps": generation.get("num_inference_steps"),
        "size": f"{generation.get('height')} x {generation.get('width')}",
        "guidance scale": generation.get("guidance_scale"),
        "CLIP model": run_info.get("clip_model"),
        "captioner": run_info.get("captioner") or "none",
        "device": f"{run_info.get('device')}, {run_info.get('fingerprint', {}).get('dtype')}",
        "versions": ", ".join(f"{k} {v}" for k, v in run_info.get("versions", {}).items()),
    }
    if run_info.get("model") in TINY_MODELS or run_info.get("clip_model") == TINY_CLIP:
        shown["note"] = "random-weight test models: these numbers exercise the machinery and mean nothing"
    return shown


# ============================================================================ the runs


def _progress_factory(enabled: bool, state):
    from tqdm.auto import tqdm

    suffix = f" [{state.process_index + 1}/{state.num_processes}]" if state.num_processes > 1 else ""

    def make(total: int, desc: str, unit: str):
        return tqdm(total=total, desc=desc + suffix, unit=unit, disable=not enabled, dynamic_ncols=True)

    return make


def _device_for(config_device: str, state) -> str:
    from ..loading import resolve_device

    if config_device == "auto" and state.num_processes > 1:
        return str(state.device)  # accelerate gave each process its own GPU (or the CPU)
    return resolve_device(config_device)


def run_benchmark(config: BenchConfig) -> BenchResult:
    """Generate, score and report; see the module docstring. Raises ``ValueError`` (bad input)
    or ``LoadError`` (model) before anything is written."""
    from accelerate import PartialState

    from ..loading import load_pipeline, resolve_dtype
    from ..runs import build_methods, generation_options

    state = PartialState()
    progress = _progress_factory(config.progress, state)
    items = _load_items(config)
    methods = build_methods(config.methods)
    device = _device_for(config.device, state)
    dtype, dtype_name = resolve_dtype(config.dtype, device)
    pipe = load_pipeline(config.model, device, dtype, quiet=True)
    options = generation_options(
        pipe, config.height, config.width, config.steps, config.guidance_scale, config.negative_prompt
    )
    fingerprint = _fingerprint(config, pipe, methods, dtype_name, options)
    run_dir = config.output_dir
    _check_same_run(run_dir, fingerprint, items)
    prepared = _prepare_items(pipe, items, methods, config.contrast)
    state.wait_for_everyone()  # every process has checked the folder before any writes to it

    run_info = {**_run_info(config, items, device), "fingerprint": fingerprint}
    if state.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / BENCH_FILE, {**run_info, "status": "running"})
    state.wait_for_everyone()

    pairs = [(item, seed) for item in prepared for seed in config.seeds]
    shard = pairs[state.process_index :: state.num_processes]
    generated = _generate(run_dir, pipe, methods, options, config, shard, progress)
    del pipe  # free the generator's memory before CLIP loads

    scored = 0
    if config.clip_model is not None:
        paths = [_record_path(run_dir, n, item.prompt.id, seed) for item, seed in shard for n in methods]
        scorer = _load_scorer(config.clip_model, device)
        captioner = _load_captioner(config.captioner, device)
        scored = _score(run_dir, paths, scorer, _scorer_name(config.clip_model), captioner, False, progress)
    state.wait_for_everyone()
    counts = (generated, scored)
    return _finish(run_dir, state, pairs, list(methods), run_info, counts, config.report_max_prompts, not config.progress)


def _finish(run_dir, state, pairs, method_names, run_info, counts, max_prompts, quiet) -> BenchResult:
    """Main process: gather every record of the run, write the reports and the final status."""
    generated, scored = counts
    if not state.is_main_process:
        return BenchResult(run_dir, [], None, generated, scored)
    jobs = [(name, item.prompt.id, seed) for item, seed in pairs for name in method_names]
    item_by_id = {item.prompt.id: item for item, _ in pairs}
    records = _gather(run_dir, jobs, item_by_id)
    summary, files = _write_reports(run_dir, records, run_info, max_prompts, quiet)
    failed = sum(r["status"] != "ok" for r in records)
    status = "finished" if not failed else "finished with failures"
    write_json_atomic(run_dir / BENCH_FILE, {**run_info, "status": status, "failed": failed})
    return BenchResult(run_dir, records, summary, generated, scored, failed, files)


def _run_info(config: BenchConfig, items: list[PromptItem], device: str) -> dict:
    from ..runs import versions

    prompt_set = config.prompt_set if isinstance(config.prompt_set, (str, Path)) else "(items)"
    return {
        "model": config.model,
        "prompt_set": str(prompt_set),
        "prompts": {item.id: item.prompt for item in items},
        "methods": list(config.methods),
        "seeds": list(config.seeds),
        "steps": config.steps,
        "clip_model": _scorer_name(config.clip_model) if config.clip_model is not None else None,
        "captioner": _scorer_name(config.captioner) if config.captioner is not None else None,
        "device": device,
        "versions": versions(),
        "config": {k: v for k, v in asdict(config).items() if k not in ("clip_model", "captioner", "prompt_set")},
    }


def score_run(
    run_dir,
    clip_model: Any = DEFAULT_CLIP_MODEL,
    captioner: Any = None,
    force: bool = False,
    device: str = "auto",
    progress: bool = True,
    report_max_prompts: int | None = 100,
) -> BenchResult:
    """Score (or, with ``force``, re-score) the images of an existing benchmark folder and
    rewrite its reports. Images that cannot be read become failed records, listed in the
    reports; nothing is generated."""
    from accelerate import PartialState

    run_dir = Path(run_dir)
    if not (run_dir / BENCH_FILE).is_file():
        raise FileNotFoundError(
            f"{run_dir} is not a benchmark folder (no {BENCH_FILE}); pass the output folder of a `bench` run."
        )
    state = PartialState()
    info = read_json(run_dir / BENCH_FILE)
    prompts = info["prompts"]
    method_names, seeds = info["methods"], info["seeds"]
    pairs = [(prompt_id, seed) for prompt_id in prompts for seed in seeds]
    shard = pairs[state.process_index :: state.num_processes]
    paths = [_record_path(run_dir, n, prompt_id, seed) for prompt_id, seed in shard for n in method_names]
    device = _device_for(device, state)
    make_progress = _progress_factory(progress, state)
    scored = _score(
        run_dir, paths, _load_scorer(clip_model, device), _scorer_name(clip_model),
        _load_captioner(captioner, device), force, make_progress,
    )
    state.wait_for_everyone()
    info.update(clip_model=_scorer_name(clip_model), captioner=_scorer_name(captioner) if captioner else None)
    items = {pid: _Item(PromptItem(pid, text), "auto", None, {}, None) for pid, text in prompts.items()}
    fake_pairs = [(items[pid], seed) for pid, seed in pairs]
    return _finish(run_dir, state, fake_pairs, method_names, info, (0, scored), report_max_prompts, not progress)
