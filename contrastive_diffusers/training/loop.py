"""The accelerate training life cycle shared by every prompt-learning method.

``train(args, method)`` runs: ``Accelerator`` (gradient accumulation, mixed precision,
trackers, project folder) -> load and freeze the pipeline's models -> add the placeholder
tokens -> ``prepare`` (learned rows, optimizer, lr scheduler) -> optional resume -> steps
(``accumulate``, backward, clip, step) with ``save_state`` checkpoints, embedding copies and
validation grids -> final save on the main process.

A :class:`TrainingMethod` supplies what differs: its options and defaults, the timestep
distribution, and the loss of one micro-batch (it may call :meth:`Trainer.encode` and
:meth:`Trainer.denoise`). Every random choice of a micro-batch (example order, crop, flip,
caption, VAE sample, noise, timestep, sampled positives) is drawn from a generator seeded
by ``(seed, stream position, purpose)``: a resumed run continues exactly, and ``N``
processes with batch ``b`` see what one process with batch ``N*b`` sees.

Outputs in ``--output_dir``: the learned embeddings (``save.py`` layout),
``checkpoint-<step>/`` (accelerate state plus ``training_state.json``),
``learned_embeds-steps-<step>/`` copies, ``validation/step-<step>.png`` grids, and
``training_run.json`` (arguments, tokens, per-step metrics, summary), written atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import re
import shutil
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import torch

from ..atomic_io import write_json_atomic
from ..distributed import launched_processes, needs_cpu_process_group
from .data import DataStream, ImageCaptions, fill_placeholders, load_examples, mix_seed
from .embeddings import LearnedEmbeddings, PlaceholderInfo, add_placeholder_tokens
from .losses import denoising_loss
from .save import save_learned_embeds
from .timesteps import prediction_target, sample_timestep

logger = logging.getLogger(__name__)

RUN_FILE = "training_run.json"
STATE_FILE = "training_state.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class TrainingMethod:
    """Plain textual inversion; subclasses override the hooks they change.

    Methods that train something other than new token rows (LoRA: ``evogen``, ``dco``) set
    ``learns_tokens = False`` and override :meth:`load_data`, :meth:`build_trainable`,
    :meth:`save_output` (and, for extra resumable state, :meth:`checkpoint_state` /
    :meth:`restore_state`); the life cycle itself stays the one of this module.
    """

    name = "textual_inversion"
    description = "Textual inversion: learn new token embeddings from a few captioned images."
    #: Templates for a folder of images without captions (``None``: captions required).
    default_templates: tuple[str, ...] | None = None
    #: Defaults this method sets on the common parser (read-only; subclasses assign their own).
    defaults: Mapping[str, object] = MappingProxyType({})
    #: Whether the method learns placeholder-token rows (``--placeholder_token`` required).
    learns_tokens: bool = True

    def load_data(self, trainer: Trainer):
        """The validated training data, read before any model loads: an object with ``len()``
        and ``batch(stream, positions, seed)`` (default: captioned images with placeholders)."""
        args = trainer.args
        examples = load_examples(args.train_data_dir, self.default_templates)
        trainer.examples = fill_placeholders(examples, args.placeholder_tokens)
        return ImageCaptions(trainer.examples, args.resolution, args.center_crop, args.flip_p)

    def build_trainable(self, trainer: Trainer, init_rows: list[torch.Tensor]) -> torch.nn.Module:
        """The module whose trainable parameters the optimizer updates (it is ``prepare``d)."""
        m = trainer.models
        return LearnedEmbeddings(m.text_encoders, trainer.infos, init_rows, sdxl=m.sdxl)

    def batch(self, trainer: Trainer, micro_step: int, positions: list[int]) -> dict:
        """The micro-batch at these stream positions."""
        return trainer.data.batch(trainer.stream, positions, trainer.seed)

    def save_output(self, trainer: Trainer, folder: Path, final: bool) -> list[Path]:
        """Write the learned weights into ``folder`` (main process only); returns the files."""
        args = trainer.args
        return save_learned_embeds(folder, args.placeholder_tokens, trainer.learned.learned(), args.initializer_tokens)

    def intermediate_folder(self, step: int) -> str:
        """Name of the ``--save_steps`` copy of the learned weights."""
        return f"learned_embeds-steps-{step}"

    def checkpoint_state(self, trainer: Trainer) -> dict:
        """Extra JSON-able state stored in each checkpoint's ``training_state.json``."""
        return {}

    def restore_state(self, trainer: Trainer, state: dict | None) -> None:
        """Restore :meth:`checkpoint_state` (``None``: a new run)."""

    def finished(self, trainer: Trainer) -> bool:
        """Whether training is already complete before reaching ``--max_train_steps`` (checked
        after resuming)."""
        return False

    def after_step(self, trainer: Trainer, step: int, record: dict) -> None:
        """Called after each optimizer step, before its checkpoint; may add to ``record`` or set
        ``trainer.stop_training``."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the method's own options."""

    def validate(self, parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        """Check the method's own options (``parser.error`` on a problem)."""

    def setup(self, trainer: Trainer) -> None:
        """Called once the models are loaded and the tokens added, before ``prepare``."""

    def timestep_probabilities(self, trainer: Trainer) -> torch.Tensor | None:
        """``p(t)`` over the training timesteps; ``None`` is uniform."""
        return None

    def unet_context(self, trainer: Trainer):
        """A context manager around the UNet forward and backward (e.g. attention recording)."""
        return contextlib.nullcontext()

    def validation_context(self, trainer: Trainer):
        """A context manager around the validation pipeline calls."""
        return contextlib.nullcontext()

    def loss(self, trainer: Trainer, batch: dict) -> tuple[torch.Tensor, dict]:
        """Loss of one micro-batch and the floats to log (must include ``"loss"``)."""
        ids = trainer.tokenize(batch["captions"])
        hidden, pooled = trainer.encode(ids)
        pred, target = trainer.denoise(batch, hidden, pooled)
        loss = denoising_loss(pred, target)
        return loss, {"loss": loss.detach(), "denoise_loss": loss.detach()}

    def teardown(self, trainer: Trainer) -> None:
        """Undo what :meth:`setup` installed (called also when training fails)."""

    def run_record(self) -> dict:
        """Method-specific facts for the run JSON."""
        return {}


@dataclass
class TrainResult:
    """What :func:`train` returns (on every process; saving happens on the main one)."""

    output_dir: Path
    global_step: int
    tokens: list[str]
    learned: list[torch.Tensor]  # one (tokens, width) float32 tensor per text encoder
    text_encoders: list
    tokenizers: list
    metrics: list[dict] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    unet: object = None
    #: The method's checkpoint state at the end (e.g. the curriculum stage).
    state: dict = field(default_factory=dict)


def _decode_latents(pipe, latents: torch.Tensor) -> list:
    """PIL images from a pipeline's latents, in the VAE's own dtype: under fp16 mixed precision
    the VAE may stay float32 (``force_upcast``), and diffusers' SD pipelines decode without
    casting, which fails on half-precision latents."""
    vae = pipe.vae
    mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
    latents = latents.to(vae.dtype)
    if mean is not None and std is not None:  # SDXL-style VAEs with latent statistics
        shape = (1, latents.shape[1], 1, 1)
        mean = torch.tensor(mean).view(shape).to(latents)
        std = torch.tensor(std).view(shape).to(latents)
        latents = latents * std / vae.config.scaling_factor + mean
    else:
        latents = latents / vae.config.scaling_factor
    image = vae.decode(latents, return_dict=False)[0]
    return pipe.image_processor.postprocess(image.float(), output_type="pil")


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


def _jsonable(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _versions() -> dict:
    import accelerate

    from ..records import versions

    return {**versions(), "accelerate": accelerate.__version__}


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


class Trainer:
    """State of one run; methods call :meth:`tokenize`, :meth:`encode`, :meth:`denoise`."""

    def __init__(self, args: argparse.Namespace, method: TrainingMethod):
        self.args = args
        self.method = method
        self.output_dir = Path(args.output_dir)

    # ------------------------------------------------------------------ helpers for methods
    @property
    def learned(self) -> LearnedEmbeddings:
        """The learned rows module, unwrapped from DDP."""
        return self.accelerator.unwrap_model(self.model)

    def generators(self, positions: Sequence[int], purpose: int) -> list[torch.Generator]:
        """One CPU generator per example, seeded by ``(seed, stream position, purpose)``."""
        return [torch.Generator().manual_seed(mix_seed(self.seed, p, purpose)) for p in positions]

    def tokenize(self, captions: Sequence[str]) -> list[torch.Tensor]:
        """``input_ids`` per tokenizer, padded to the model length."""
        return [
            tok(
                list(captions),
                padding="max_length",
                max_length=tok.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids.to(self.device)
            for tok in self.models.tokenizers
        ]

    def encode(self, input_ids: list[torch.Tensor]):
        """``(encoder_hidden_states, pooled or None)`` through the prepared (DDP) module."""
        return self.model(input_ids)

    def denoise(self, batch: dict, hidden: torch.Tensor, pooled: torch.Tensor | None):
        """Encode the images, add noise at sampled timesteps, run the UNet under the method's
        context; returns ``(prediction, target)`` (epsilon or v, per the scheduler)."""
        noisy, timesteps, target, kwargs = self.noisy_latents(batch, pooled)
        with self.method.unet_context(self):
            pred = self.models.unet(noisy, timesteps, hidden.to(self.weight_dtype), **kwargs).sample
        return pred, target

    def noisy_latents(self, batch: dict, pooled: torch.Tensor | None = None):
        """``(noisy latents, timesteps, target, unet kwargs)`` of a batch. VAE sample, noise and
        timestep of an example are drawn from its stream position: two examples at the same
        position (a positive and its negative) get the same noise and timestep."""
        from diffusers.utils.torch_utils import randn_tensor

        m = self.models
        positions = batch["positions"]
        pixels = batch["pixel_values"].to(self.device, dtype=m.vae.dtype)
        with torch.no_grad():
            dist = m.vae.encode(pixels).latent_dist
            latents = dist.sample(generator=self.generators(positions, 1))
            shift = getattr(m.vae.config, "shift_factor", None)
            if shift is not None:
                latents = latents - shift
            latents = (latents * m.vae.config.scaling_factor).to(self.weight_dtype)
        noise = randn_tensor(
            latents.shape, generator=self.generators(positions, 2), device=self.device, dtype=latents.dtype
        )
        steps = [
            sample_timestep(self.num_train_timesteps, g, self.timestep_probs) for g in self.generators(positions, 3)
        ]
        timesteps = torch.tensor(steps, device=self.device, dtype=torch.long)
        batch["timesteps"] = timesteps
        noisy = m.noise_scheduler.add_noise(latents, noise, timesteps)
        kwargs = {}
        if m.sdxl:
            res = self.args.resolution
            time_ids = [
                list(o) + list(c) + [res, res] for o, c in zip(batch["original_sizes"], batch["crop_top_lefts"])
            ]
            kwargs["added_cond_kwargs"] = {
                "text_embeds": pooled.to(self.weight_dtype),
                "time_ids": torch.tensor(time_ids, device=self.device, dtype=self.weight_dtype),
            }
        return noisy, timesteps, prediction_target(m.noise_scheduler, latents, noise, timesteps), kwargs

    # ------------------------------------------------------------------ life cycle
    def _setup_accelerator(self):
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState, GradientState
        from accelerate.utils import ProjectConfiguration

        # accelerate keeps its state in process-wide singletons that refuse a second
        # configuration (e.g. another mixed precision); each run configures its own. The
        # process group (PartialState) is kept.
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()
        args = self.args
        config = ProjectConfiguration(
            project_dir=str(self.output_dir),
            logging_dir=str(self.output_dir / args.logging_dir),
            total_limit=args.checkpoints_total_limit,
        )
        world = launched_processes()
        self.accelerator = Accelerator(
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            mixed_precision=args.mixed_precision,
            log_with=None if args.report_to == "none" else args.report_to,
            project_config=config,
            cpu=needs_cpu_process_group(),
        )
        if self.accelerator.num_processes != world:
            raise RuntimeError(
                f"{world} processes were launched (WORLD_SIZE) but accelerate set up {self.accelerator.num_processes}; "
                "launch with `accelerate launch --multi_gpu` on GPUs, or `torchrun` / "
                "`ACCELERATE_USE_CPU=1 torchrun` on CPUs."
            )
        self.device = self.accelerator.device
        precision = self.accelerator.mixed_precision
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)

    def _load(self):
        from .models import load_models

        args = self.args
        self.examples = []
        self.data = self.method.load_data(self)
        self.models = m = load_models(args.pretrained_model_name_or_path, args.revision, args.variant)
        self.infos: list[PlaceholderInfo] = []
        init_rows = []
        if self.method.learns_tokens:
            for tok, enc in zip(m.tokenizers, m.text_encoders):
                info, rows = add_placeholder_tokens(tok, enc, args.placeholder_tokens, args.initializer_tokens)
                self.infos.append(info)
                init_rows.append(rows)
        limit = m.tokenizers[0].model_max_length - 2
        for example in self.examples:
            for caption in example.captions:
                n = len(m.tokenizers[0](caption, add_special_tokens=False).input_ids)
                if n > limit:
                    raise ValueError(
                        f"The caption {caption!r} of {example.path.name} has {n} tokens; the text encoder sees "
                        f"{limit}. Shorten it."
                    )
        vae_dtype = (
            torch.float32
            if (self.weight_dtype == torch.float16 and m.vae.config.get("force_upcast", False))
            else self.weight_dtype
        )
        for module, dtype in [(m.unet, self.weight_dtype), (m.vae, vae_dtype)] + [
            (e, self.weight_dtype) for e in m.text_encoders
        ]:
            module.requires_grad_(False)
            module.to(self.device)
            if module.dtype != dtype:
                module.to(dtype=dtype)
            module.eval()
        if args.enable_xformers_memory_efficient_attention:
            m.unet.enable_xformers_memory_efficient_attention()
        if args.gradient_checkpointing:
            m.unet.enable_gradient_checkpointing()
            m.unet.train()  # as diffusers' examples; the UNet has no dropout by default
            for enc in m.text_encoders:
                enc.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
                enc.train()  # transformers checkpoints only in training mode; CLIP dropout is 0
        self.model = self.method.build_trainable(self, init_rows)
        self.initial_rows = [r.clone() for r in init_rows]
        self.num_train_timesteps = m.noise_scheduler.config.num_train_timesteps

    def _setup_optimization(self):
        from diffusers.optimization import get_scheduler

        args, acc = self.args, self.accelerator
        lr = args.learning_rate
        if args.scale_lr:
            lr = lr * args.gradient_accumulation_steps * args.train_batch_size * acc.num_processes
        self.effective_lr = lr
        optimizer = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=lr,
            betas=(args.adam_beta1, args.adam_beta2),
            weight_decay=args.adam_weight_decay,
            eps=args.adam_epsilon,
        )
        # accelerate's prepared scheduler steps once per process per optimizer step.
        scheduler = get_scheduler(
            args.lr_scheduler,
            optimizer=optimizer,
            num_warmup_steps=args.lr_warmup_steps * acc.num_processes,
            num_training_steps=args.max_train_steps * acc.num_processes,
        )
        self.model, self.optimizer, self.lr_scheduler = acc.prepare(self.model, optimizer, scheduler)

    def _resume(self) -> int:
        from accelerate.utils import broadcast, set_seed

        args, acc = self.args, self.accelerator
        path = resolve_checkpoint(self.output_dir, args.resume_from_checkpoint)
        stored_seed = None
        if path is not None:
            state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
            if state["placeholder_tokens"] != list(args.placeholder_tokens) or state["method"] != self.method.name:
                raise ValueError(
                    f"{path} was trained by {state['method']} for {', '.join(state['placeholder_tokens'])}; this run "
                    f"is {self.method.name} for {', '.join(args.placeholder_tokens)}. Resume with the same method and tokens."
                )
            stored_seed = state["seed"]
            if args.seed is not None and args.seed != stored_seed:
                raise ValueError(
                    f"{path} was trained with --seed {stored_seed}; resume with the same seed (or omit it)."
                )
        elif args.resume_from_checkpoint == "latest":
            acc.print(f"No checkpoint in {self.output_dir}; starting a new run.")
        if args.seed is not None:
            self.seed = args.seed
        elif stored_seed is not None:
            self.seed = stored_seed
        else:
            # Drawn on the main process and shared, so that every process streams the same data.
            drawn = torch.tensor([int(torch.randint(0, 2**31 - 1, (1,)).item())], device=self.device)
            self.seed = int(broadcast(drawn, from_process=0).item())
        set_seed(self.seed)
        if path is None:
            self.metrics = []
            self.method.restore_state(self, None)
            return 0
        acc.load_state(str(path))
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        step = int(state["global_step"])
        self.method.restore_state(self, state)
        previous = self.output_dir / RUN_FILE
        self.metrics = []
        if previous.exists():
            try:
                self.metrics = [
                    r for r in json.loads(previous.read_text(encoding="utf-8")).get("metrics", []) if r["step"] <= step
                ]
            except (json.JSONDecodeError, KeyError, TypeError):
                self.metrics = []
        acc.print(f"Resumed from {path} at step {step}.")
        return step

    def _save_checkpoint(self, step: int) -> None:
        args, acc = self.args, self.accelerator
        acc.wait_for_everyone()
        path = self.output_dir / f"checkpoint-{step}"
        acc.save_state(str(path))
        if acc.is_main_process:
            write_json_atomic(
                path / STATE_FILE,
                {
                    "global_step": step,
                    "seed": self.seed,
                    "method": self.method.name,
                    "placeholder_tokens": list(args.placeholder_tokens),
                    **self.method.checkpoint_state(self),
                },
            )
            self._prune_checkpoints()
        acc.wait_for_everyone()

    def _prune_checkpoints(self) -> None:
        """Keep the newest ``--checkpoints_total_limit`` complete checkpoints. Runs only after
        the new one is complete, so a kill while saving never leaves nothing to resume from;
        unfinished folders (no state file) are removed too."""
        limit = self.args.checkpoints_total_limit
        if limit is None:
            return
        folders = list_checkpoints(self.output_dir)
        complete = [p for _, p in folders if (p / STATE_FILE).exists()]
        for _, folder in folders:
            if folder not in complete or folder in complete[: max(0, len(complete) - limit)]:
                shutil.rmtree(folder)

    def _validation(self, step: int) -> Path | None:
        from diffusers import DiffusionPipeline, DPMSolverMultistepScheduler
        from diffusers.utils import make_image_grid

        from .._compat import dtype_kwarg

        args, m = self.args, self.models
        components = {"unet": m.unet, "vae": m.vae, "text_encoder": m.text_encoders[0], "tokenizer": m.tokenizers[0]}
        if m.sdxl:
            components.update(text_encoder_2=m.text_encoders[1], tokenizer_2=m.tokenizers[1])
        if "safety_checker" in m.model_index:
            components.update(safety_checker=None, requires_safety_checker=False)
        pipe = DiffusionPipeline.from_pretrained(
            args.pretrained_model_name_or_path,
            revision=args.revision,
            variant=args.variant,
            **dtype_kwarg(self.weight_dtype),
            **components,
        )
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        generator = torch.Generator().manual_seed(self.seed)
        images = []
        with torch.no_grad(), self.method.validation_context(self):
            for _ in range(args.num_validation_images):
                latents = pipe(
                    args.validation_prompt,
                    num_inference_steps=args.validation_num_inference_steps,
                    height=args.resolution,
                    width=args.resolution,
                    generator=generator,
                    output_type="latent",
                ).images
                images.append(_decode_latents(pipe, latents)[0])
        del pipe
        folder = self.output_dir / "validation"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"step-{step}.png"
        make_image_grid(images, rows=1, cols=len(images)).save(path)
        for tracker in self.accelerator.trackers:
            if tracker.name == "tensorboard":
                import numpy as np

                tracker.writer.add_images(
                    "validation", np.stack([np.asarray(i) for i in images]), step, dataformats="NHWC"
                )
            elif tracker.name == "wandb":
                import wandb

                tracker.log({"validation": [wandb.Image(i, caption=args.validation_prompt) for i in images]}, step=step)
        return path

    def _write_run(self, status: str, step: int, extra: dict | None = None) -> None:
        if not self.accelerator.is_main_process:
            return
        args = self.args
        tokens = [
            {
                "token": t,
                "initializer_token": w,
                "token_ids": [info.token_ids[i] for info in self.infos],
                "initializer_pieces": [list(info.initializer_pieces[i]) for info in self.infos],
            }
            for i, (t, w) in enumerate(zip(args.placeholder_tokens, args.initializer_tokens))
        ]
        times = [r["step_time_s"] for r in self.metrics[1:] if "step_time_s" in r] or [
            r["step_time_s"] for r in self.metrics if "step_time_s" in r
        ]
        record = {
            "method": self.method.name,
            "status": status,
            "global_step": step,
            "args": _jsonable({k: v for k, v in vars(args).items() if not callable(v)}),
            "seed": self.seed,
            "effective_learning_rate": self.effective_lr,
            "num_processes": self.accelerator.num_processes,
            "mixed_precision": self.accelerator.mixed_precision,
            "sdxl": self.models.sdxl,
            "prediction_type": self.models.noise_scheduler.config.prediction_type,
            "num_examples": len(self.data),
            "tokens": tokens,
            "method_settings": _jsonable(self.method.run_record()),
            "versions": _versions(),
            "summary": {
                "median_step_time_s": statistics.median(times) if times else None,
                "peak_memory_mb": _jsonable(peak_memory_mb(self.device)),
                "device": str(self.device),
            },
            "metrics": _jsonable(self.metrics),
        }
        if extra:
            record.update(_jsonable(extra))
        write_json_atomic(self.output_dir / RUN_FILE, record)

    def run(self, on_step: Callable[[int, dict], None] | None = None) -> TrainResult:
        self._setup_accelerator()
        acc = self.accelerator
        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        acc.wait_for_everyone()
        self._load()
        try:
            self.method.setup(self)
            return self._run(on_step)
        finally:
            self.method.teardown(self)
            if self.method.learns_tokens:
                self.learned.remove_hooks()

    def _run(self, on_step) -> TrainResult:
        args, acc = self.args, self.accelerator
        self._setup_optimization()
        global_step = self._resume()
        if global_step > args.max_train_steps:
            raise ValueError(
                f"The checkpoint is at step {global_step}, beyond --max_train_steps {args.max_train_steps}."
            )
        self.timestep_probs = self.method.timestep_probabilities(self)
        if self.timestep_probs is not None:
            self.timestep_probs = self.timestep_probs.float()
        self.stream = DataStream(len(self.data), self.seed)
        # a resumed run whose method had already finished (e.g. its last curriculum stage
        # ended early) goes straight to the final save
        self.stop_training = self.method.finished(self)
        if acc.is_main_process and args.report_to != "none":
            config = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in vars(args).items()}
            acc.init_trackers(self.method.name.replace("_", "-"), config=config)
        micro_step = global_step * args.gradient_accumulation_steps
        status = "running"
        files: list[Path] = []
        self._write_run(status, global_step)
        try:
            while global_step < args.max_train_steps and not self.stop_training:
                started = time.perf_counter()
                sums: dict[str, float] = {}
                for _ in range(args.gradient_accumulation_steps):
                    positions = self.stream.positions(
                        micro_step, args.train_batch_size, acc.num_processes, acc.process_index
                    )
                    batch = self.method.batch(self, micro_step, positions)
                    with acc.accumulate(self.model):
                        loss, logs = self.method.loss(self, batch)
                        acc.backward(loss)
                        if acc.sync_gradients and args.max_grad_norm > 0:
                            acc.clip_grad_norm_(self.model.parameters(), args.max_grad_norm)
                        self.optimizer.step()
                        self.lr_scheduler.step()
                        self.optimizer.zero_grad(set_to_none=True)
                    micro_step += 1
                    for key, value in logs.items():
                        sums[key] = sums.get(key, 0.0) + float(value)
                if not acc.sync_gradients:
                    raise RuntimeError("accelerate did not synchronise gradients at the end of an accumulation cycle.")
                global_step += 1
                keys = sorted(sums)
                values = torch.tensor([sums[k] / args.gradient_accumulation_steps for k in keys], device=self.device)
                values = acc.reduce(values, "mean") if acc.num_processes > 1 else values
                record = {
                    "step": global_step,
                    **{k: float(v) for k, v in zip(keys, values.tolist())},
                    "lr": float(self.lr_scheduler.get_last_lr()[0]),
                    "step_time_s": time.perf_counter() - started,
                }
                self.method.after_step(self, global_step, record)
                self.metrics.append(record)
                if args.report_to != "none":
                    acc.log({k: v for k, v in record.items() if k != "step"}, step=global_step)
                if global_step % args.checkpointing_steps == 0:
                    self._save_checkpoint(global_step)
                if acc.is_main_process:
                    if global_step % args.save_steps == 0 and global_step < args.max_train_steps:
                        self.method.save_output(
                            self, self.output_dir / self.method.intermediate_folder(global_step), final=False
                        )
                    if args.validation_prompt and global_step % args.validation_steps == 0:
                        self._validation(global_step)
                    if global_step % args.checkpointing_steps == 0 or global_step % 50 == 0:
                        self._write_run(status, global_step)
                if on_step is not None:
                    on_step(global_step, record)
            acc.wait_for_everyone()
            learned = self.learned.learned() if self.method.learns_tokens else []
            if acc.is_main_process:
                files = self.method.save_output(self, self.output_dir, final=True)
            status = "finished"
        except (KeyboardInterrupt, SystemExit):
            status = "interrupted"
            raise
        except BaseException:
            status = "failed"
            raise
        finally:
            self._write_run(status, global_step)
            if args.report_to != "none":
                acc.end_training()
        if self.method.learns_tokens:
            self.learned.write_into_encoders()
        return TrainResult(
            self.output_dir,
            global_step,
            list(args.placeholder_tokens),
            learned,
            list(self.models.text_encoders),
            list(self.models.tokenizers),
            list(self.metrics),
            files,
            unet=self.models.unet,
            state=self.method.checkpoint_state(self),
        )


def train(args: argparse.Namespace, method: TrainingMethod, on_step=None) -> TrainResult:
    """Run one training (see the module docstring); ``on_step(step, metrics)`` after each step."""
    return Trainer(args, method).run(on_step)


def build_method_parser(method: TrainingMethod, prog: str) -> argparse.ArgumentParser:
    from .args import build_parser

    parser = build_parser(prog, method.description)
    method.add_arguments(parser)
    parser.set_defaults(**method.defaults)
    return parser


def parse_method_args(method: TrainingMethod, argv: Sequence[str] | None, prog: str) -> argparse.Namespace:
    from .args import validate_args

    parser = build_method_parser(method, prog)
    args = parser.parse_args(argv)
    if args.output_dir is None:
        args.output_dir = f"{method.name}-output"
    args = validate_args(parser, args, learns_tokens=method.learns_tokens)
    method.validate(parser, args)
    return args


def run_main(method: TrainingMethod, argv: Sequence[str] | None, prog: str) -> int:
    """Entry point body of ``python -m contrastive_diffusers.training.<method>``: parse, train,
    print where the embeddings are. Data, model and checkpoint problems exit with code 2 and
    one ``error:`` line."""
    import sys

    from .data import DataError

    args = parse_method_args(method, argv, prog)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    try:
        result = train(args, method)
    except (DataError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if result.files and method.learns_tokens:
        print(f"Learned {', '.join(result.tokens)} in {result.global_step} steps; embeddings in {result.output_dir}")
    elif result.files:
        print(f"Trained {method.name} in {result.global_step} steps; weights in {result.output_dir}")
    return 0
