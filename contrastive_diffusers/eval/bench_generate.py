"""Stage 1 of a benchmark run: one image per (method, prompt, seed), each described by a record
beside it; a re-run skips every image whose record is still valid."""

from __future__ import annotations

import sys
from pathlib import Path

from ..atomic_io import write_json_atomic
from ..runs import make_image
from .bench_setup import BenchItem, BenchSetup
from .run_folder import new_record, read_record, record_path
from .summary import NOT_APPLICABLE


def _record_for(name: str, item: BenchItem, seed: int) -> dict:
    p = item.prompt
    record = new_record(name, p.id, p.prompt, p.category, seed, item.words, item.contrast)
    record["spec"] = p.metadata.get("spec")  # ShapesWorld: what the oracle checks
    return record


def _make_image(setup: BenchSetup, name: str, item: BenchItem, seed: int) -> dict:
    import torch

    record = _record_for(name, item, seed)
    if name in item.errors:
        record["error"] = item.errors[name]
        return record
    if name in item.not_applicable:
        record.update(status=NOT_APPLICABLE, error=item.not_applicable[name])
        return record
    stem = f"{name}/{item.prompt.id}/{seed}"
    try:
        made = make_image(setup.images, name, item.prompt.prompt, seed, item.groups, stem)
    except ValueError as err:  # the pipeline rejecting this input: record it, go on with the others
        record["error"] = str(err)
        return record
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        record["error"] = "out of GPU memory: use a smaller --height/--width or --dtype float16"
        return record
    record["seconds"] = made.seconds
    record["process"] = f"{setup.state.process_index}/{setup.state.num_processes}"
    record.update(image=made.image, status="ok")
    if made.guidance is not None:
        record["guidance"] = made.guidance
        if made.attention is not None:
            record["attention"] = made.attention
    return record


def _still_valid(run_dir: Path, record: dict | None, name: str, item: BenchItem) -> bool:
    """A finished image of this prompt with these token groups (plain images do not use them)."""
    return bool(
        record
        and record.get("status") == "ok"
        and (run_dir / record["image"]).is_file()
        and record.get("prompt") == item.prompt.prompt
        and (name == "none" or record.get("token_groups") == item.words)
    )


def _refresh(path: Path, record: dict, item: BenchItem) -> None:
    """Bring a kept record's scoring inputs up to date; changed inputs mean new metrics."""
    if record.get("token_groups") != item.words or record.get("contrast_captions") != item.contrast:
        record.update(token_groups=item.words, contrast_captions=item.contrast, metrics=None)
        write_json_atomic(path, record)


def generate_stage(run_dir: Path, setup: BenchSetup, shard, progress) -> int:
    """Make the images of this process's (prompt, seed) pairs that have no valid record yet;
    returns how many were made."""
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
        record = _make_image(setup, name, item, seed)
        write_json_atomic(path, record)
        if record["status"] == "ok":
            generated += 1
        elif record["status"] == "failed":
            print(f"warning: {name} / {item.prompt.id} / seed {seed} failed: {record['error']}", file=sys.stderr)
        bar.update(1)
    bar.close()
    return generated
