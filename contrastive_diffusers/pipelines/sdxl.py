"""Stable Diffusion XL with attention-map guidance."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import StableDiffusionXLPipeline
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import retrieve_timesteps

from ..guidance.engine import GuidanceConditioning
from ..guidance.methods import GuidanceMethod
from .guided import (
    GuidedPipelineMixin,
    GuidedPipelineOutput,
    guidance_scale_embedding,
    match_negative_prompt,
    tensor_inputs_of,
)


class GuidedStableDiffusionXLPipeline(GuidedPipelineMixin, StableDiffusionXLPipeline):
    """``StableDiffusionXLPipeline`` whose ``__call__`` also takes a guidance method.

    Same additions as :class:`GuidedStableDiffusionPipeline` (``guidance``, ``token_groups``,
    ``attn_res``, ``return_attention_maps``, ``record_loss_after_update``). The loss reads
    the maps of the 32x32 cross-attention layers at 1024 px by default (image size / 32).
    Token positions are those of ``prompt`` in the first tokenizer; both SDXL tokenizers
    split a prompt identically, so they hold for the second encoder's half of the
    embeddings too (pass ``prompt_2`` only if its tokens line up with ``prompt``'s).
    """

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] = None,
        prompt_2: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        timesteps: list[int] | None = None,
        sigmas: list[float] | None = None,
        guidance_scale: float = 5.0,
        negative_prompt: str | list[str] | None = None,
        negative_prompt_2: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
        output_type: str | None = "pil",
        return_dict: bool = True,
        cross_attention_kwargs: dict[str, Any] | None = None,
        original_size: tuple[int, int] | None = None,
        crops_coords_top_left: tuple[int, int] = (0, 0),
        target_size: tuple[int, int] | None = None,
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
        height = height or self.default_sample_size * self.vae_scale_factor
        width = width or self.default_sample_size * self.vae_scale_factor
        stock = dict(
            height=height,
            width=width,
            num_inference_steps=num_inference_steps,
            timesteps=timesteps,
            sigmas=sigmas,
            guidance_scale=guidance_scale,
            generator=generator,
            output_type=output_type,
            cross_attention_kwargs=cross_attention_kwargs,
            original_size=original_size,
            crops_coords_top_left=crops_coords_top_left,
            target_size=target_size,
            clip_skip=clip_skip,
            **kwargs,
        )
        if guidance is None:
            out = super().__call__(
                prompt=prompt,
                prompt_2=prompt_2,
                negative_prompt=negative_prompt,
                negative_prompt_2=negative_prompt_2,
                num_images_per_prompt=num_images_per_prompt,
                latents=latents,
                prompt_embeds=prompt_embeds,
                negative_prompt_embeds=negative_prompt_embeds,
                pooled_prompt_embeds=pooled_prompt_embeds,
                negative_pooled_prompt_embeds=negative_pooled_prompt_embeds,
                callback_on_step_end=callback_on_step_end,
                callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs or ["latents"],
                return_dict=False,
                **stock,
            )
            return GuidedPipelineOutput(images=out[0]) if return_dict else out

        method, prompts, groups, image_groups, lengths, image_prompts = self._start_guidance(
            guidance, prompt, token_groups, num_images_per_prompt, kwargs
        )
        # Fail on bad sizes or callback names before the (expensive) step-0 guidance.
        self.check_inputs(
            prompts,
            prompt_2,
            height,
            width,
            None,
            negative_prompt=negative_prompt,
            negative_prompt_2=negative_prompt_2,
            negative_prompt_embeds=negative_prompt_embeds,
            negative_pooled_prompt_embeds=negative_pooled_prompt_embeds,
            callback_on_step_end_tensor_inputs=tensor_inputs_of(callback_on_step_end, callback_on_step_end_tensor_inputs),
        )
        device = self._execution_device
        do_cfg = guidance_scale > 1 and self.unet.config.time_cond_proj_dim is None
        lora_scale = (cross_attention_kwargs or {}).get("scale")
        (
            prompt_embeds,
            negative_prompt_embeds,
            pooled_prompt_embeds,
            negative_pooled_prompt_embeds,
        ) = self.encode_prompt(
            prompt=prompts,
            prompt_2=prompt_2,
            device=device,
            num_images_per_prompt=num_images_per_prompt,
            do_classifier_free_guidance=do_cfg,
            negative_prompt=match_negative_prompt(negative_prompt, prompts),
            negative_prompt_2=match_negative_prompt(negative_prompt_2, prompts),
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            pooled_prompt_embeds=pooled_prompt_embeds,
            negative_pooled_prompt_embeds=negative_pooled_prompt_embeds,
            lora_scale=lora_scale,
            clip_skip=clip_skip,
        )
        all_timesteps, _ = retrieve_timesteps(self.scheduler, num_inference_steps, device, timesteps, sigmas)
        batch = prompt_embeds.shape[0]
        latents = self.prepare_latents(
            batch, self.unet.config.in_channels, height, width, prompt_embeds.dtype, device, generator, latents
        )
        projection_dim = (
            int(pooled_prompt_embeds.shape[-1])
            if self.text_encoder_2 is None
            else self.text_encoder_2.config.projection_dim
        )
        time_ids = self._get_add_time_ids(
            original_size or (height, width),
            crops_coords_top_left,
            target_size or (height, width),
            dtype=prompt_embeds.dtype,
            text_encoder_projection_dim=projection_dim,
        ).to(device).repeat(batch, 1)
        conditioning = GuidanceConditioning(
            encoder_hidden_states=prompt_embeds,
            groups=image_groups,
            prompt_lengths=lengths,
            prompts=image_prompts,
            added_cond_kwargs={"text_embeds": pooled_prompt_embeds.to(device), "time_ids": time_ids},
            cross_attention_kwargs=cross_attention_kwargs,
            timestep_cond=guidance_scale_embedding(self, guidance_scale, batch, device, latents.dtype),
        )
        def call(**overrides):
            return super(GuidedStableDiffusionXLPipeline, self).__call__(
                prompt=None,
                num_images_per_prompt=1,
                prompt_embeds=prompt_embeds,
                negative_prompt_embeds=negative_prompt_embeds if do_cfg else None,
                pooled_prompt_embeds=pooled_prompt_embeds,
                negative_pooled_prompt_embeds=negative_pooled_prompt_embeds if do_cfg else None,
                **stock,
                **overrides,
            )

        return self._run_guided(
            method,
            conditioning,
            latents,
            (height, width),
            all_timesteps,
            call,
            callback_on_step_end,
            callback_on_step_end_tensor_inputs,
            return_dict,
            groups,
            dict(
                attn_res=attn_res,
                return_attention_maps=return_attention_maps,
                record_loss_after_update=record_loss_after_update,
                truncate_forward=truncate_guidance_forward,
            ),
        )
