"""The state of one training run, its setup, and the helpers methods call in their loss.

:class:`Trainer` sets up what diffusers' training examples set up, in their order:
``Accelerator`` (gradient accumulation, mixed precision, trackers, project folder), the
frozen pipeline models in the weight dtype (the method's strategy extends them first, e.g.
with placeholder tokens), the method's trainable module, and AdamW with diffusers'
``get_scheduler`` through ``accelerator.prepare``. For the methods' losses it tokenizes,
encodes through the prepared module and noises a batch: every random choice of an example
(VAE sample, noise, timestep) comes from a generator seeded by ``(seed, stream position,
purpose)``, so a resumed run continues exactly and ``N`` processes with batch ``b`` see what
one process with batch ``N*b`` sees.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from ..distributed import launched_processes, needs_cpu_process_group
from .data import mix_seed
from .embeddings import PlaceholderInfo
from .method import TrainingMethod
from .timesteps import prediction_target, sample_timestep


class Trainer:
    """State of one run; methods call :meth:`tokenize`, :meth:`encode`, :meth:`denoise`,
    :meth:`noisy_latents` and :meth:`generators`."""

    def __init__(self, args: argparse.Namespace, method: TrainingMethod):
        self.args = args
        self.method = method
        self.output_dir = Path(args.output_dir)
        self.examples: list = []
        self.infos: list[PlaceholderInfo] = []
        self.stop_training = False
        #: ``{setting: (checkpoint's, this run's)}`` when resumed with changed settings.
        self.resumed_changes: dict[str, tuple] = {}

    # ------------------------------------------------------------------ helpers for methods
    @property
    def unwrapped(self) -> torch.nn.Module:
        """The trainable module, unwrapped from DDP."""
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

    # ------------------------------------------------------------------ setup
    def setup_accelerator(self) -> None:
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

    def load(self) -> None:
        """Data, then models (extended by the method), frozen in the weight dtype, then the
        trainable module."""
        from .models import load_models

        args = self.args
        self.data = self.method.load_data(self)
        self.models = m = load_models(args.pretrained_model_name_or_path, args.revision, args.variant)
        self.method.extend_models(self)
        self._check_caption_lengths()
        vae_dtype = (
            torch.float32
            if (self.weight_dtype == torch.float16 and m.vae.config.get("force_upcast", False))
            else self.weight_dtype
        )
        text_dtype = torch.float32 if self.method.text_encoders_in_float32 else self.weight_dtype
        for module, dtype in [(m.unet, self.weight_dtype), (m.vae, vae_dtype)] + [
            (e, text_dtype) for e in m.text_encoders
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
        self.model = self.method.build_trainable(self)
        self.num_train_timesteps = m.noise_scheduler.config.num_train_timesteps

    def _check_caption_lengths(self) -> None:
        tokenizer = self.models.tokenizers[0]
        limit = tokenizer.model_max_length - 2
        for example in self.examples:
            for caption in example.captions:
                n = len(tokenizer(caption, add_special_tokens=False).input_ids)
                if n > limit:
                    raise ValueError(
                        f"The caption {caption!r} of {example.path.name} has {n} tokens; the text encoder sees "
                        f"{limit}. Shorten it."
                    )

    def setup_optimization(self) -> None:
        from diffusers.optimization import get_scheduler

        args, acc = self.args, self.accelerator
        lr = args.learning_rate
        if args.scale_lr:
            lr = lr * args.gradient_accumulation_steps * args.train_batch_size * acc.num_processes
        self.effective_lr = lr
        optimizer = torch.optim.AdamW(
            self.method.optimizer_groups(self, lr),
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

    def setup_timesteps(self) -> None:
        """The method's timestep distribution (float32; ``None`` is uniform)."""
        probs = self.method.timestep_probabilities(self)
        self.timestep_probs = probs.float() if probs is not None else None
