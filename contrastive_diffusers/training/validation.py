"""Validation images during training: ``--num_validation_images`` of ``--validation_prompt``
with the models being trained (DPM-Solver++, the run's seed), saved as one grid
``validation/step-<step>.png`` and sent to the tensorboard / wandb trackers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..atomic_io import save_image_atomic

if TYPE_CHECKING:
    from .trainer import Trainer


def decode_latents(pipe, latents: torch.Tensor) -> list:
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


def _pipeline(trainer: Trainer):
    """The pipeline of the run's model folder around the models being trained."""
    from diffusers import DiffusionPipeline, DPMSolverMultistepScheduler

    from .._compat import dtype_kwarg

    args, m = trainer.args, trainer.models
    components = {"unet": m.unet, "vae": m.vae, "text_encoder": m.text_encoders[0], "tokenizer": m.tokenizers[0]}
    if m.sdxl:
        components.update(text_encoder_2=m.text_encoders[1], tokenizer_2=m.tokenizers[1])
    if "safety_checker" in m.model_index:
        components.update(safety_checker=None, requires_safety_checker=False)
    pipe = DiffusionPipeline.from_pretrained(
        args.pretrained_model_name_or_path,
        revision=args.revision,
        variant=args.variant,
        **dtype_kwarg(trainer.weight_dtype),
        **components,
    )
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _prompt_embeds(pipe, prompt: str, dtype: torch.dtype) -> dict:
    """The pipeline's prompt (and empty negative prompt) embeddings in the UNet's ``dtype``: the
    token methods keep their text encoders in float32 under mixed precision, and the SD
    pipelines draw the latents in the embeddings' dtype."""
    if hasattr(pipe, "text_encoder_2"):  # SDXL: with the pooled embeddings
        embeds, negative, pooled, negative_pooled = pipe.encode_prompt(prompt, device=pipe.device)
        named = {"prompt_embeds": embeds, "negative_prompt_embeds": negative, "pooled_prompt_embeds": pooled,
                 "negative_pooled_prompt_embeds": negative_pooled}
    else:
        embeds, negative = pipe.encode_prompt(prompt, pipe.device, 1, True)
        named = {"prompt_embeds": embeds, "negative_prompt_embeds": negative}
    # without text encoders the pipeline keeps the embeddings in the UNet's dtype (it would cast
    # them back to a text encoder's); this pipeline is the validation's own
    pipe.text_encoder = None
    if hasattr(pipe, "text_encoder_2"):
        pipe.text_encoder_2 = None
    return {name: value.to(dtype) for name, value in named.items()}


def log_validation(trainer: Trainer, step: int) -> Path:
    """Generate, save and log the validation images of ``step``; returns the grid's path."""
    from diffusers.utils import make_image_grid

    args = trainer.args
    pipe = _pipeline(trainer)
    generator = torch.Generator().manual_seed(trainer.seed)
    images = []
    with torch.no_grad(), trainer.method.validation_context(trainer):
        prompt = _prompt_embeds(pipe, args.validation_prompt, trainer.weight_dtype)
        for _ in range(args.num_validation_images):
            latents = pipe(
                **prompt,
                num_inference_steps=args.validation_num_inference_steps,
                height=args.resolution,
                width=args.resolution,
                generator=generator,
                output_type="latent",
            ).images
            images.append(decode_latents(pipe, latents)[0])
    del pipe
    folder = trainer.output_dir / "validation"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step}.png"
    save_image_atomic(make_image_grid(images, rows=1, cols=len(images)), path)
    for tracker in trainer.accelerator.trackers:
        if tracker.name == "tensorboard":
            import numpy as np

            tracker.writer.add_images("validation", np.stack([np.asarray(i) for i in images]), step, dataformats="NHWC")
        elif tracker.name == "wandb":
            import wandb

            tracker.log({"validation": [wandb.Image(i, caption=args.validation_prompt) for i in images]}, step=step)
    return path
