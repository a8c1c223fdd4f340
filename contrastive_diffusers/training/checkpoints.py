"""accelerate checkpoints of a run: ``checkpoint-<step>/`` folders with ``save_state`` and a
``training_state.json`` (step, seed, method, tokens, the settings the steps depend on and the
method's own state), written last so that a folder without it is an unfinished save; resuming
(``--resume_from_checkpoint latest|PATH``) with ``load_state``, warning of changed settings;
pruning to ``--checkpoints_total_limit``."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..atomic_io import write_json_atomic
from .run_record import RUN_FILE, jsonable, previous_metrics

if TYPE_CHECKING:
    from .trainer import Trainer

STATE_FILE = "training_state.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
#: Options that do not change what a step computes: a resumed run may change them silently.
#: (Seed, method and tokens are checked on their own; gradient checkpointing and xformers
#: change the arithmetic only by rounding.)
_FREE_OPTIONS = frozenset(
    {
        "output_dir",
        "resume_from_checkpoint",
        "checkpointing_steps",
        "checkpoints_total_limit",
        "save_steps",
        "validation_prompt",
        "num_validation_images",
        "validation_steps",
        "validation_num_inference_steps",
        "report_to",
        "logging_dir",
        "command",
        "seed",
        "placeholder_token",
        "placeholder_tokens",
        "gradient_checkpointing",
        "enable_xformers_memory_efficient_attention",
    }
)


def checkpoint_path(output_dir: Path, step: int) -> Path:
    """The folder of the checkpoint saved at ``step``."""
    return output_dir / f"checkpoint-{step}"


def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of the ``checkpoint-<step>`` folders, oldest first."""
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    return sorted(found)


def resolve_checkpoint(output_dir: Path, value: str | None) -> Path | None:
    """The checkpoint to resume from: ``latest`` (``None`` when there is none yet) or a path."""
    if value is None:
        return None
    if value == "latest":
        # A checkpoint is complete once its state file is written (last): a run killed while
        # saving leaves a folder without it, which is skipped.
        found = [p for _, p in list_checkpoints(output_dir) if (p / STATE_FILE).exists()]
        return found[-1] if found else None
    for candidate in (Path(value), output_dir / value):
        if candidate.is_dir():
            if not (candidate / STATE_FILE).exists():
                raise ValueError(f"{candidate} is not a checkpoint of this trainer (no {STATE_FILE}).")
            return candidate
    raise ValueError(
        f"--resume_from_checkpoint {value!r}: no such folder (looked at {value} and {output_dir / value}); "
        "pass 'latest' or an existing checkpoint folder."
    )


def step_settings(trainer: Trainer) -> dict:
    """The settings the steps of a run depend on: its options but the free ones, the number of
    processes, the data's size and the resolved mixed precision. ``--max_train_steps`` counts
    only where the learning-rate schedule depends on it."""
    args, acc = trainer.args, trainer.accelerator
    settings = {k: v for k, v in vars(args).items() if k not in _FREE_OPTIONS and not callable(v)}
    if args.lr_scheduler in ("constant", "constant_with_warmup"):
        settings.pop("max_train_steps", None)
    settings.update(
        num_processes=acc.num_processes, num_examples=len(trainer.data), mixed_precision=acc.mixed_precision
    )
    return jsonable(settings)


def changed_settings(stored: dict | None, current: dict) -> dict[str, tuple]:
    """``{name: (checkpoint's value, this run's value)}`` for the settings that differ
    (nothing for a checkpoint that predates the record; nor for an option added since, left
    unset: None keeps the behaviour the checkpoint had)."""
    if stored is None:
        return {}
    missing = "(not set)"
    return {
        k: (stored.get(k, missing), current.get(k, missing))
        for k in sorted(set(stored) | set(current))
        if stored.get(k, missing) != current.get(k, missing) and not (k not in stored and current[k] is None)
    }


def _refuse_finished_run(output_dir: Path, note: str = "") -> None:
    """A new run must not overwrite the learned files of a finished one (its record says so)."""
    try:
        record = json.loads((Path(output_dir) / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if not isinstance(record, dict) or record.get("status") != "finished":
        return
    tokens = ", ".join(str(t.get("token")) for t in record.get("tokens") or [] if isinstance(t, dict)) or "its LoRA"
    raise ValueError(
        f"{output_dir} holds a finished training run ({record.get('method', 'a method')} for {tokens}; {RUN_FILE})"
        f"{note}; a new run would overwrite its learned files. Train into a new --output_dir."
    )


def resolve_seed(trainer: Trainer) -> None:
    """Before anything is built: find the checkpoint to resume (``trainer.resume_path``) and
    set the run's seed (``--seed``, else the checkpoint's, else drawn and shared), so that what
    is drawn at build time (LoRA adapters) comes from the seed the run records."""
    from accelerate.utils import broadcast

    args, acc, method = trainer.args, trainer.accelerator, trainer.method
    path = resolve_checkpoint(trainer.output_dir, args.resume_from_checkpoint)
    stored_seed = None
    if path is not None:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        if state["placeholder_tokens"] != list(args.placeholder_tokens) or state["method"] != method.name:
            raise ValueError(
                f"{path} was trained by {state['method']} for {', '.join(state['placeholder_tokens'])}; this run "
                f"is {method.name} for {', '.join(args.placeholder_tokens)}. Resume with the same method and tokens."
            )
        stored_seed = state["seed"]
        if args.seed is not None and args.seed != stored_seed:
            raise ValueError(f"{path} was trained with --seed {stored_seed}; resume with the same seed (or omit it).")
    elif args.resume_from_checkpoint == "latest":
        _refuse_finished_run(trainer.output_dir, " and no checkpoint to resume")
        acc.print(f"No checkpoint in {trainer.output_dir}; starting a new run.")
    else:
        # A new run here would prune the earlier run's checkpoints (or its own, if those are
        # newer) and a later "latest" would resume the wrong run.
        folders = [p for _, p in list_checkpoints(trainer.output_dir)]
        earlier = [p.name for p in folders if (p / STATE_FILE).exists()]
        if earlier:
            raise ValueError(
                f"{trainer.output_dir} already holds checkpoints of an earlier run ({', '.join(earlier)}); resume it "
                "with --resume_from_checkpoint latest, or train into a new --output_dir."
            )
        # pruning removes checkpoint folders without a state file (a save cut off): not another tool's
        foreign = [p.name for p in folders if not (p / STATE_FILE).exists()]
        if foreign:
            raise ValueError(
                f"{trainer.output_dir} holds checkpoint folders without {STATE_FILE} ({', '.join(foreign[:5])}): another "
                "tool's, or a save that was cut off. This run would overwrite or prune them; move them away or "
                "train into a new --output_dir."
            )
        _refuse_finished_run(trainer.output_dir)
    if args.seed is not None:
        trainer.seed = args.seed
    elif stored_seed is not None:
        trainer.seed = stored_seed
    else:
        # Drawn on the main process and shared, so that every process streams the same data.
        drawn = torch.tensor([int(torch.randint(0, 2**31 - 1, (1,)).item())], device=trainer.device)
        trainer.seed = int(broadcast(drawn, from_process=0).item())
    trainer.resume_path = path
    if path is not None:
        method.adopt_checkpoint(trainer, state.get("settings"))


def resume(trainer: Trainer) -> int:
    """Seed the run (:func:`resolve_seed` chose the seed), load the checkpoint's state if there
    is one, and return the step to continue from (0: a new run)."""
    from accelerate.utils import set_seed

    acc, method, path = trainer.accelerator, trainer.method, trainer.resume_path
    set_seed(trainer.seed)
    if path is None:
        trainer.metrics = []
        method.restore_state(trainer, None)
        return 0
    state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    step = int(state["global_step"])
    trainer.resumed_changes = changed_settings(state.get("settings"), step_settings(trainer))
    options = vars(trainer.args)
    listed = "; ".join(
        f"{'--' if k in options else ''}{k} {old} -> {new}" for k, (old, new) in trainer.resumed_changes.items()
    )
    try:
        acc.load_state(str(path))
    except (ValueError, RuntimeError, KeyError) as err:  # optimizer / weights / scheduler state of another shape
        raise ValueError(
            f"Cannot resume {path}: its saved state does not fit this run's ({err}). "
            + (f"Changed since: {listed}. " if listed else "")
            + "Resume with the options it was trained with, or train into a new --output_dir."
        ) from err
    if trainer.resumed_changes:
        warnings.warn(
            f"Resuming {path} with changed settings ({listed}): the steps from {step} on are not those of the "
            "run the checkpoint began. Resume with the checkpoint's settings to continue it exactly.",
            stacklevel=2,
        )
    method.restore_state(trainer, state)
    trainer.metrics = previous_metrics(trainer.output_dir, step)
    acc.print(f"Resumed from {path} at step {step}.")
    return step


def save_checkpoint(trainer: Trainer, step: int) -> None:
    """``save_state`` on every process, then the state file and pruning on the main one."""
    args, acc = trainer.args, trainer.accelerator
    acc.wait_for_everyone()
    path = checkpoint_path(trainer.output_dir, step)
    if acc.is_main_process:  # overwriting a later run's folder (resumed from an older one): incomplete until rewritten
        (path / STATE_FILE).unlink(missing_ok=True)
    acc.save_state(str(path))
    acc.wait_for_everyone()  # every process's files (its RNG states) are written before the folder counts as complete
    if acc.is_main_process:
        write_json_atomic(
            path / STATE_FILE,
            {
                "global_step": step,
                "seed": trainer.seed,
                "method": trainer.method.name,
                "placeholder_tokens": list(args.placeholder_tokens),
                "settings": step_settings(trainer),
                **trainer.method.checkpoint_state(trainer),
            },
        )
        prune_checkpoints(trainer.output_dir, args.checkpoints_total_limit)
    acc.wait_for_everyone()


def prune_checkpoints(output_dir: Path, limit: int | None) -> None:
    """Keep the newest ``limit`` complete checkpoints. Runs only after the new one is complete,
    so a kill while saving never leaves nothing to resume from; unfinished folders (no state
    file) are removed too."""
    if limit is None:
        return
    folders = list_checkpoints(output_dir)
    complete = [p for _, p in folders if (p / STATE_FILE).exists()]
    for _, folder in folders:
        if folder not in complete or folder in complete[: max(0, len(complete) - limit)]:
            shutil.rmtree(folder)
