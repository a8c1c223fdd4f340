"""The accelerate training life cycle shared by every method: :func:`train`.

As in diffusers' training examples: ``Accelerator`` -> load and freeze the pipeline's models
(the method's strategy extends them, e.g. with placeholder tokens) -> ``prepare`` (trainable
module, optimizer, lr scheduler) -> optional ``load_state`` resume -> steps (``accumulate``,
backward, clip, step) with ``save_state`` checkpoints, copies of the trained weights and
validation grids -> final save on the main process. The setup and the helpers a method's
loss calls are in :mod:`.trainer`; what differs between methods in :mod:`.method`.

Outputs in ``--output_dir``: the trained weights (the method's format), ``checkpoint-<step>/``
(:mod:`.checkpoints`), the ``--save_steps`` copies, ``validation/step-<step>.png`` grids
(:mod:`.validation`) and ``training_run.json`` (:mod:`.run_record`).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate.utils import broadcast_object_list
from tqdm.auto import tqdm

from ..atomic_io import remove_empty_folders, unwritable_folder_problem
from .checkpoints import checkpoint_path, resolve_seed, resume, save_checkpoint
from .data import DataStream
from .interrupt import StopRequests, TrainingInterrupted
from .method import TrainingMethod
from .run_record import write_run_record
from .trainer import Trainer
from .validation import log_validation

#: ``on_step(step, metrics)``, called after each optimizer step.
StepCallback = Callable[[int, dict], None]


@dataclass
class TrainResult:
    """What :func:`train` returns (on every process; saving happens on the main one)."""

    output_dir: Path
    global_step: int
    tokens: list[str]
    learned: list[torch.Tensor]  # one (tokens, width) float32 tensor per text encoder; empty for LoRA
    text_encoders: list
    tokenizers: list
    metrics: list[dict] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    unet: object = None
    #: The method's checkpoint state at the end (e.g. the curriculum stage).
    state: dict = field(default_factory=dict)


def train(args: argparse.Namespace, method: TrainingMethod, on_step: StepCallback | None = None) -> TrainResult:
    """Run one training (see the module docstring)."""
    trainer = Trainer(args, method)
    trainer.setup_accelerator()
    acc = trainer.accelerator
    made = [p for p in (trainer.output_dir, *trainer.output_dir.parents) if not p.exists()]  # deepest first
    problem = None
    if acc.is_main_process:
        problem = unwritable_folder_problem(trainer.output_dir)
        if not problem:
            trainer.output_dir.mkdir(parents=True, exist_ok=True)
    (problem,) = broadcast_object_list([problem])  # every process stops with the main one's message
    if problem:
        raise ValueError(f"cannot write to --output_dir {trainer.output_dir}: {problem}")
    try:
        resolve_seed(trainer)  # before load(), which builds what is drawn from the seed
        trainer.load()
    except BaseException:
        if acc.is_main_process:  # refused data or settings leave no empty folder behind
            for folder in made:
                remove_empty_folders(folder)
        raise
    try:
        method.setup(trainer)
        return _run(trainer, on_step)
    finally:
        method.teardown(trainer)


def _run(trainer: Trainer, on_step: StepCallback | None) -> TrainResult:
    args, acc, method = trainer.args, trainer.accelerator, trainer.method
    trainer.setup_optimization()
    global_step = trainer.global_step = resume(trainer)
    if global_step > args.max_train_steps:
        raise ValueError(f"The checkpoint is at step {global_step}, beyond --max_train_steps {args.max_train_steps}.")
    trainer.setup_timesteps()
    trainer.stream = DataStream(len(trainer.data), trainer.seed)
    # a resumed run whose method had already finished (e.g. its last curriculum stage ended
    # early) goes straight to the final save
    trainer.stop_training = method.finished(trainer)
    if acc.is_main_process and args.report_to != "none":
        config = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in vars(args).items()}
        acc.init_trackers(method.name.replace("_", "-"), config=config)
    status = "running"
    files: list[Path] = []
    write_run_record(trainer, status, global_step)
    acc.print(f"{method.name}: steps {global_step + 1}-{args.max_train_steps}, learning rate {trainer.effective_lr:g}"
              + (f" (--learning_rate {args.learning_rate:g} scaled by batch x accumulation x processes; --no_scale_lr "
                 "uses it as given)" if args.scale_lr else "")
              + "".join(f", {group['name']} {group.get('initial_lr', group['lr']):g}"
                        for group in trainer.optimizer.param_groups if group.get("name")))
    progress = tqdm(total=args.max_train_steps, initial=global_step, desc="Steps",
                    disable=not acc.is_local_main_process)
    try:
        with StopRequests(announce=acc.print) as stop:
            while global_step < args.max_train_steps and not trainer.stop_training:
                started = time.perf_counter()
                logs = _optimizer_step(trainer, global_step)
                global_step += 1
                trainer.global_step = global_step
                rates = trainer.lr_scheduler.get_last_lr()
                record = {
                    "step": global_step,
                    **logs,
                    "lr": float(rates[0]),
                    # a method's named groups ("text_encoder") log their own rate
                    **{f"{group['name']}_lr": float(rate)
                       for group, rate in zip(trainer.optimizer.param_groups, rates) if group.get("name")},
                    "step_time_s": time.perf_counter() - started,
                }
                method.after_step(trainer, global_step, record)
                progress.update(1)
                progress.set_postfix(loss=f"{record.get('loss', float('nan')):.4g}", lr=f"{record['lr']:.3g}", refresh=False)
                trainer.metrics.append(record)
                _after_step(trainer, global_step, record, status)
                if on_step is not None:
                    on_step(global_step, record)
                if stop.agreed(acc) and global_step < args.max_train_steps:
                    if global_step % args.checkpointing_steps:  # not saved by _after_step
                        save_checkpoint(trainer, global_step)
                    raise TrainingInterrupted(
                        global_step, checkpoint_path(trainer.output_dir, global_step), stop.signal_name
                    )
        acc.wait_for_everyone()
        learned = method.learned_rows(trainer)
        if acc.is_main_process:
            files = method.save_output(trainer, trainer.output_dir, final=True)
        status = "finished"
    except (KeyboardInterrupt, SystemExit):
        status = "interrupted"
        raise
    except BaseException:
        status = "failed"
        raise
    finally:
        progress.close()
        write_run_record(trainer, status, global_step)
        if args.report_to != "none":
            acc.end_training()
    method.finish(trainer)
    return TrainResult(
        trainer.output_dir,
        global_step,
        list(args.placeholder_tokens),
        learned,
        list(trainer.models.text_encoders),
        list(trainer.models.tokenizers),
        list(trainer.metrics),
        files,
        unet=trainer.models.unet,
        state=method.checkpoint_state(trainer),
    )


def _optimizer_step(trainer: Trainer, global_step: int) -> dict[str, float]:
    """One optimizer step of ``--gradient_accumulation_steps`` micro-batches; returns the
    logged values averaged over micro-batches and processes."""
    args, acc = trainer.args, trainer.accelerator
    micro_step = global_step * args.gradient_accumulation_steps
    sums: dict[str, float] = {}
    for _ in range(args.gradient_accumulation_steps):
        positions = trainer.stream.positions(micro_step, args.train_batch_size, acc.num_processes, acc.process_index)
        batch = trainer.method.batch(trainer, micro_step, positions)
        with acc.accumulate(trainer.model):
            loss, logs = trainer.method.loss(trainer, batch)
            acc.backward(loss)
            if acc.sync_gradients and args.max_grad_norm > 0:
                acc.clip_grad_norm_(trainer.model.parameters(), args.max_grad_norm)
            trainer.optimizer.step()
            trainer.lr_scheduler.step()
            trainer.optimizer.zero_grad(set_to_none=True)
        micro_step += 1
        for key, value in logs.items():
            sums[key] = sums.get(key, 0.0) + float(value)
    if not acc.sync_gradients:
        raise RuntimeError("accelerate did not synchronise gradients at the end of an accumulation cycle.")
    keys = sorted(sums)
    values = torch.tensor([sums[k] / args.gradient_accumulation_steps for k in keys], device=trainer.device)
    values = acc.reduce(values, "mean") if acc.num_processes > 1 else values
    return {k: float(v) for k, v in zip(keys, values.tolist())}


def _after_step(trainer: Trainer, step: int, record: dict, status: str) -> None:
    """Tracker log, checkpoint, weight copy, validation and run record due at ``step``."""
    args, acc, method = trainer.args, trainer.accelerator, trainer.method
    if args.report_to != "none":
        acc.log({k: v for k, v in record.items() if k != "step"}, step=step)
    if step % args.checkpointing_steps == 0:
        save_checkpoint(trainer, step)
    if acc.is_main_process:
        if step % args.save_steps == 0 and step < args.max_train_steps:
            method.save_output(trainer, trainer.output_dir / method.intermediate_folder(step), final=False)
        if args.validation_prompt and step % args.validation_steps == 0:
            log_validation(trainer, step)
        if step % args.checkpointing_steps == 0 or step % 50 == 0:
            write_run_record(trainer, status, step)
