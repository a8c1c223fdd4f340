"""Stable Diffusion 1.x / 2.x with attention-map guidance."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import StableDiffusionPipeline

from ..guidance.methods import GuidanceMethod
from .guided import GuidedPipelineMixin, match_negative_prompt


class GuidedStableDiffusionPipeline(GuidedPipelineMixin, StableDiffusionPipeline):
    """``StableDiffusionPipeline`` whose ``__call__`` also takes a guidance method.

    Build it like any diffusers pipeline (``from_pretrained(hub id or folder)``) or from one
    already loaded (``GuidedStableDiffusionPipeline.from_pipe(pipe)``, sharing its
    components). Every argument of ``StableDiffusionPipeline.__call__`` works as there; the
    additions are:

    - ``guidance``: a :class:`~contrastive_diffusers.guidance.GuidanceMethod` (``AttendAndExcite()``,
      ``Conform()``, ``Ebama()``, ``SynGen()``) or its name; ``None`` generates plainly.
    - ``token_groups``: one group per object (``[["red", "car"], ["blue", "bench"]]``), words
      or token positions, per prompt for a list of prompts, or ``"auto"``; or groups already
      resolved (lists of :class:`~contrastive_diffusers.guidance.tokens.TokenGroup`), kept as given.
    - ``attn_res``: ``(h, w)`` of the attention maps the loss reads (default: image size / 32,
      or the nearest size the UNet has: :func:`~contrastive_diffusers.guidance.attention.default_attn_res`).
    - ``return_attention_maps``: keep every guided step's maps in ``output.attention_maps``.
    - ``record_loss_after_update``: re-evaluate the loss after each update (one extra
      forward per guided step) into ``output.guidance_records``.
    - ``truncate_guidance_forward`` (default ``True``): stop the guidance forward right after
      the last recorded layer (the loss reads nothing later); ``False`` runs the whole UNet,
      the straightforward path, with the same results.
    """

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        timesteps: list[int] | None = None,
        sigmas: list[float] | None = None,
        guidance_scale: float = 7.5,
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str | None = "pil",
        return_dict: bool = True,
        cross_attention_kwargs: dict[str, Any] | None = None,
        clip_skip: int | None = None,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        guidance: GuidanceMethod | str | None = None,
        token_groups="auto",
        attn_res: tuple[int, int] | None = None,
        return_attention_maps: bool = False,
        record_loss_after_update: bool = False,
        truncate_guidance_forward: bool = True,
        **kwargs,
    ):
        passed = dict(
            height=height,
            width=width,
            num_inference_steps=num_inference_steps,
            timesteps=timesteps,
            sigmas=sigmas,
            guidance_scale=guidance_scale,
            generator=generator,
            output_type=output_type,
            cross_attention_kwargs=cross_attention_kwargs,
            clip_skip=clip_skip,
            **kwargs,
        )
        prepared = dict(
            prompt=prompt,
            negative_prompt=negative_prompt,
            num_images_per_prompt=num_images_per_prompt,
            latents=latents,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )
        return self._dispatch(
            passed,
            prepared,
            return_dict,
            guidance,
            token_groups,
            attn_res=attn_res,
            return_attention_maps=return_attention_maps,
            record_loss_after_update=record_loss_after_update,
            truncate_forward=truncate_guidance_forward,
        )

    def _default_image_size(self) -> tuple[int, int]:
        sample_size = self.unet.config.sample_size
        sample_h, sample_w = (sample_size, sample_size) if isinstance(sample_size, int) else sample_size
        return sample_h * self.vae_scale_factor, sample_w * self.vae_scale_factor

    def _encode_for_guidance(self, prompts, passed, prepared, tensor_inputs, do_cfg, device):
        self.check_inputs(
            prompts,
            passed["height"],
            passed["width"],
            None,
            negative_prompt=prepared["negative_prompt"],
            negative_prompt_embeds=prepared["negative_prompt_embeds"],
            callback_on_step_end_tensor_inputs=tensor_inputs,
        )
        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompts,
            device,
            prepared["num_images_per_prompt"],
            do_cfg,
            match_negative_prompt(prepared["negative_prompt"], prompts),
            prompt_embeds=prepared["prompt_embeds"],
            negative_prompt_embeds=prepared["negative_prompt_embeds"],
            lora_scale=(passed["cross_attention_kwargs"] or {}).get("scale"),
            clip_skip=passed["clip_skip"],
        )
        embeds = dict(prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds if do_cfg else None)
        return embeds, None
