"""Stage 1 of a benchmark run: one image per (method, prompt, seed), each described by a record
beside it; a re-run skips every image whose record is still valid."""

from __future__ import annotations

import sys
from pathlib import Path

from ..atomic_io import write_json_atomic
from ..prompts import PromptItem
from ..records import jsonable
from ..runs import make_images
from .bench_setup import BenchItem, BenchSetup
from .run_folder import drop_clip_metrics, drop_judge_results, new_record, read_record, record_path
from .summary import NOT_APPLICABLE


def judge_metadata(prompt: PromptItem) -> dict | None:
    """What a benchmark's judge reads besides the prompt (GenEval: tag, include, exclude)."""
    return {k: v for k, v in prompt.metadata.items() if k != "spec"} or None


#: The error of an image that decoded to NaN or infinite pixels (fp16 overflow, a diverging update).
NONFINITE_IMAGE = ("the image decoded to NaN or infinite pixels (written black); in float16 try --dtype bfloat16 or "
                   "float32, with guidance a smaller step size")


def _record_for(name: str, item: BenchItem, seed: int) -> dict:
    p = item.prompt
    record = new_record(name, p.id, p.prompt, p.category, seed, item.words, item.contrast)
    record["token_positions"] = item.positions  # where guidance read the groups: resume compares them
    record["spec"] = p.metadata.get("spec")  # ShapesWorld: what the oracle checks
    record["judge_metadata"] = judge_metadata(p)
    return record


def _make_images(setup: BenchSetup, name: str, item: BenchItem, seeds: list[int]) -> list[dict]:
    """The records of this method's images of this prompt at ``seeds``, drawn in one pipeline
    call; a method with an error, or one that does not apply to the prompt, draws nothing."""
    import torch

    records = [_record_for(name, item, seed) for seed in seeds]
    if name in item.errors:
        for record in records:
            record["error"] = item.errors[name]
        return records
    if name in item.not_applicable:
        for record in records:
            record.update(status=NOT_APPLICABLE, error=item.not_applicable[name])
        return records
    stems = [f"{name}/{item.prompt.id}/{seed}" for seed in seeds]
    try:
        made = make_images(setup.images, name, item.prompt.prompt, seeds, item.groups, stems)
    except ValueError as err:  # the pipeline rejecting this input: record it, go on with the others
        for record in records:
            record["error"] = str(err)
        return records
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        error = "out of GPU memory: use a smaller --height/--width or --dtype float16"
        if len(seeds) > 1:
            error += ", or a smaller --seed-batch"
        for record in records:
            record["error"] = error
        return records
    for record, image in zip(records, made):
        record["seconds"] = image.seconds
        record["process"] = f"{setup.state.process_index}/{setup.state.num_processes}"
        if image.guidance is not None:
            record["guidance"] = image.guidance
            if image.attention is not None:
                record["attention"] = image.attention
        if image.nonfinite:  # scored, the black image would pass for a drawn one
            record.update(image=image.image, error=NONFINITE_IMAGE)
            continue
        record.update(image=image.image, status="ok")
    return records


def seed_batches(todo: list, size: int) -> list[tuple[str, BenchItem, list[int]]]:
    """``(method, item, seeds)`` calls for the ``(method, item, seed)`` images to draw: the
    seeds of one method and prompt in groups of at most ``size``, in the order their first
    image comes in ``todo`` (with ``size=1``, one call per image in ``todo``'s order)."""
    if size == 1:
        return [(name, item, [seed]) for name, item, seed in todo]
    groups: dict = {}
    for name, item, seed in todo:
        groups.setdefault((name, item.prompt.id), (name, item, []))[2].append(seed)
    return [
        (name, item, seeds[i : i + size])
        for name, item, seeds in groups.values()
        for i in range(0, len(seeds), size)
    ]


def _still_valid(run_dir: Path, record: dict | None, name: str, item: BenchItem) -> bool:
    """A finished image of this prompt with these token groups at these token positions (plain
    images do not use them; records written before positions were recorded are kept on their words)."""
    return bool(
        record
        and record.get("status") == "ok"
        and (run_dir / record["image"]).is_file()
        and record.get("prompt") == item.prompt.prompt
        and (name == "none" or (record.get("token_groups") == item.words
                                and record.get("token_positions", item.positions) == item.positions))
    )


def _refresh(path: Path, record: dict, item: BenchItem) -> None:
    """Bring a kept record's scoring inputs up to date; changed inputs mean new metrics (a
    changed category or evaluation row, new judge verdicts too: T2I-CompBench picks its metric
    by category, GenEval reads the row)."""
    changed = False
    if record.get("token_groups") != item.words or record.get("contrast_captions") != item.contrast:
        record.update(token_groups=item.words, contrast_captions=item.contrast)
        drop_clip_metrics(record)
        changed = True
    if record["method"] == "none" and record.get("token_positions") != item.positions:  # descriptive only
        record["token_positions"] = item.positions
        changed = True
    # as written to the record (tuples as lists), so an unchanged row compares equal
    judged_on = jsonable({"category": item.prompt.category, "judge_metadata": judge_metadata(item.prompt)})
    if any(record.get(key) != value for key, value in judged_on.items()):
        record.update(judged_on)
        drop_judge_results(record)
        changed = True
    if changed:
        write_json_atomic(path, record)


def generate_stage(run_dir: Path, setup: BenchSetup, shard, progress, seed_batch: int = 1) -> int:
    """Make the images of this process's (prompt, seed) pairs that have no valid record yet,
    up to ``seed_batch`` seeds of a method and prompt per pipeline call; returns how many
    were made."""
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
    for name, item, seeds in seed_batches(todo, seed_batch):
        for record in _make_images(setup, name, item, seeds):
            generated += _write(run_dir, record, bar)
    bar.close()
    return generated


def _write(run_dir: Path, record: dict, bar) -> bool:
    """Write a record beside its image; whether it is a made image."""
    path = record_path(run_dir, record["method"], record["prompt_id"], record["seed"])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, record)
    if record["status"] == "failed":
        print(f"warning: {record['method']} / {record['prompt_id']} / seed {record['seed']} failed: {record['error']}",
              file=sys.stderr)
    bar.update(1)
    return record["status"] == "ok"
