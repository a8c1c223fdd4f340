"""Stable Diffusion XL with attention-map guidance."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import StableDiffusionXLPipeline

from ..guidance.methods import GuidanceMethod
from .guided import GuidedPipelineMixin, match_negative_prompt


class GuidedStableDiffusionXLPipeline(GuidedPipelineMixin, StableDiffusionXLPipeline):
    """``StableDiffusionXLPipeline`` whose ``__call__`` also takes a guidance method.

    Same additions as :class:`GuidedStableDiffusionPipeline` (``guidance``, ``token_groups``,
    ``attn_res``, ``return_attention_maps``, ``record_loss_after_update``,
    ``truncate_guidance_forward``). The loss reads the maps of the 32x32 cross-attention
    layers at 1024 px by default (image size / 32).
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
            original_size=original_size,
            crops_coords_top_left=crops_coords_top_left,
            target_size=target_size,
            clip_skip=clip_skip,
            **kwargs,
        )
        prepared = dict(
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
        size = self.default_sample_size * self.vae_scale_factor
        return size, size

    def _encode_for_guidance(self, prompts, passed, prepared, tensor_inputs, do_cfg, device):
        height, width = passed["height"], passed["width"]
        # the stock check, which the call below cannot make (it is given the prompt text too)
        if prepared["prompt_embeds"] is not None and prepared["pooled_prompt_embeds"] is None:
            raise ValueError("Pass pooled_prompt_embeds with prompt_embeds (both come from encode_prompt).")
        self.check_inputs(
            prompts,
            prepared["prompt_2"],
            height,
            width,
            None,
            negative_prompt=prepared["negative_prompt"],
            negative_prompt_2=prepared["negative_prompt_2"],
            negative_prompt_embeds=prepared["negative_prompt_embeds"],
            negative_pooled_prompt_embeds=prepared["negative_pooled_prompt_embeds"],
            callback_on_step_end_tensor_inputs=tensor_inputs,
        )
        prompt_embeds, negative_prompt_embeds, pooled, negative_pooled = self.encode_prompt(
            prompt=prompts,
            prompt_2=prepared["prompt_2"],
            device=device,
            num_images_per_prompt=prepared["num_images_per_prompt"],
            do_classifier_free_guidance=do_cfg,
            negative_prompt=match_negative_prompt(prepared["negative_prompt"], prompts),
            negative_prompt_2=match_negative_prompt(prepared["negative_prompt_2"], prompts),
            prompt_embeds=prepared["prompt_embeds"],
            negative_prompt_embeds=prepared["negative_prompt_embeds"],
            pooled_prompt_embeds=prepared["pooled_prompt_embeds"],
            negative_pooled_prompt_embeds=prepared["negative_pooled_prompt_embeds"],
            lora_scale=(passed["cross_attention_kwargs"] or {}).get("scale"),
            clip_skip=passed["clip_skip"],
        )
        projection_dim = (
            int(pooled.shape[-1]) if self.text_encoder_2 is None else self.text_encoder_2.config.projection_dim
        )
        time_ids = self._get_add_time_ids(
            passed["original_size"] or (height, width),
            passed["crops_coords_top_left"],
            passed["target_size"] or (height, width),
            dtype=prompt_embeds.dtype,
            text_encoder_projection_dim=projection_dim,
        ).to(device).repeat(prompt_embeds.shape[0], 1)
        embeds = dict(
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds if do_cfg else None,
            pooled_prompt_embeds=pooled,
            negative_pooled_prompt_embeds=negative_pooled if do_cfg else None,
        )
        return embeds, {"text_embeds": pooled.to(device), "time_ids": time_ids}
