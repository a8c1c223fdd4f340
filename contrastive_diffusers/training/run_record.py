"""``training_run.json``: the record of a run (arguments, seed, tokens, versions, per-step
metrics, summary), rewritten atomically while it trains and with its final status."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..atomic_io import write_json_atomic
from .. import records

if TYPE_CHECKING:
    from .trainer import Trainer

RUN_FILE = "training_run.json"


def jsonable(value):
    """``value`` as JSON data; a non-finite float is a number that is undefined (``null``)."""
    return records.jsonable(value, non_finite="null")


def versions() -> dict:
    return records.versions("accelerate")


def peak_memory_mb(device: torch.device) -> float:
    """CUDA peak allocated memory, else the process's peak resident set size (Linux/macOS)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
        import sys

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 2**20 if sys.platform == "darwin" else rss / 2**10
    except (ImportError, OSError):
        return float("nan")


def previous_metrics(output_dir: Path, step: int) -> list[dict]:
    """The metrics of the earlier record up to ``step`` (a resumed run continues its curve)."""
    previous = output_dir / RUN_FILE
    if not previous.exists():
        return []
    try:
        return [r for r in json.loads(previous.read_text(encoding="utf-8")).get("metrics", []) if r["step"] <= step]
    except (json.JSONDecodeError, KeyError, TypeError):
        return []


def write_run_record(trainer: Trainer, status: str, step: int) -> None:
    """Write the record (main process only)."""
    if not trainer.accelerator.is_main_process:
        return
    args = trainer.args
    tokens = [
        {
            "token": t,
            "initializer_token": w,
            "token_ids": [info.token_ids[i] for info in trainer.infos],
            "initializer_pieces": [list(info.initializer_pieces[i]) for info in trainer.infos],
        }
        for i, (t, w) in enumerate(zip(args.placeholder_tokens, args.initializer_tokens))
    ]
    times = [r["step_time_s"] for r in trainer.metrics[1:] if "step_time_s" in r] or [
        r["step_time_s"] for r in trainer.metrics if "step_time_s" in r
    ]
    record = {
        "method": trainer.method.name,
        "status": status,
        "global_step": step,
        "args": jsonable({k: v for k, v in vars(args).items() if not callable(v)}),
        "seed": trainer.seed,
        "effective_learning_rate": trainer.effective_lr,
        "num_processes": trainer.accelerator.num_processes,
        "mixed_precision": trainer.accelerator.mixed_precision,
        "sdxl": trainer.models.sdxl,
        "prediction_type": trainer.models.noise_scheduler.config.prediction_type,
        "num_examples": len(trainer.data),
        "tokens": tokens,
        "resumed_with_changed_settings": jsonable(
            {k: {"checkpoint": old, "run": new} for k, (old, new) in trainer.resumed_changes.items()}
        ),
        "method_settings": jsonable(trainer.method.run_record()),
        "versions": versions(),
        "summary": {
            "median_step_time_s": statistics.median(times) if times else None,
            "peak_memory_mb": jsonable(peak_memory_mb(trainer.device)),
            "device": str(trainer.device),
        },
        "metrics": jsonable(trainer.metrics),
    }
    write_json_atomic(trainer.output_dir / RUN_FILE, record)
