"""Flux.1 (dev and schnell) with attention-map guidance."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from diffusers import FluxPipeline
from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps

from ..guidance.joint_attention import TextSequence
from ..guidance.methods import GuidanceMethod
from ..guidance.t5_tokens import T5WordLookup
from .guided import match_negative_prompt
from .joint import GuidedJointPipelineMixin, expand_timestep


class GuidedFluxPipeline(GuidedJointPipelineMixin, FluxPipeline):
    """``FluxPipeline`` whose ``__call__`` also takes a guidance method.

    Every argument of ``FluxPipeline.__call__`` works as there (dev's distilled
    ``guidance_scale``, true CFG with ``true_cfg_scale`` and a ``negative_prompt``); the
    additions are those of :class:`~.sd3.GuidedStableDiffusion3Pipeline` but
    ``text_sequence``: Flux's joint text is T5 only (CLIP enters pooled), so token groups
    resolve on the T5 tokenizer and positions count T5's pieces from 1 (T5 has no start
    token). ``blocks`` may name double-stream blocks (``"transformer_blocks.i"`` or ints) and
    single-stream ones (``"single_transformer_blocks.j"``); default: the middle third of the
    double-stream blocks (not measured on a trained Flux-format model). The guidance forward uses the positive prompt only.
    """

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] = None,
        prompt_2: str | list[str] | None = None,
        negative_prompt: str | list[str] = None,
        negative_prompt_2: str | list[str] | None = None,
        true_cfg_scale: float = 1.0,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 28,
        sigmas: list[float] | None = None,
        guidance_scale: float = 3.5,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
        output_type: str | None = "pil",
        return_dict: bool = True,
        joint_attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        max_sequence_length: int = 512,
        guidance: GuidanceMethod | str | None = None,
        token_groups="auto",
        blocks: list[int | str] | None = None,
        absolute_steps: bool = False,
        return_attention_maps: bool = False,
        record_loss_after_update: bool = False,
        truncate_guidance_forward: bool = True,
        **kwargs,
    ):
        passed = dict(
            true_cfg_scale=true_cfg_scale,
            height=height,
            width=width,
            num_inference_steps=num_inference_steps,
            sigmas=sigmas,
            guidance_scale=guidance_scale,
            generator=generator,
            output_type=output_type,
            joint_attention_kwargs=joint_attention_kwargs,
            max_sequence_length=max_sequence_length,
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
            pooled_prompt_embeds=pooled_prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
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
            blocks=blocks,
            absolute_steps=absolute_steps,
            return_attention_maps=return_attention_maps,
            record_loss_after_update=record_loss_after_update,
            truncate_forward=truncate_guidance_forward,
        )

    # ---------------------------------------------------------------- what Flux provides
    def _word_lookup(self, passed, options):
        return T5WordLookup(self.tokenizer_2, passed["max_sequence_length"])

    def _window_tokenizers(self):
        return [self.tokenizer_2]

    def _texts_the_loss_reads(self, session):
        return ("prompt_2",)  # the T5 text

    def _encode_for_guidance(self, prompts, passed, prepared, tensor_inputs, device):
        self.check_inputs(
            prompts,
            prepared["prompt_2"],
            passed["height"],
            passed["width"],
            negative_prompt=prepared["negative_prompt"],
            negative_prompt_2=prepared["negative_prompt_2"],
            negative_prompt_embeds=prepared["negative_prompt_embeds"],
            negative_pooled_prompt_embeds=prepared["negative_pooled_prompt_embeds"],
            callback_on_step_end_tensor_inputs=tensor_inputs,
            max_sequence_length=passed["max_sequence_length"],
        )
        encode = dict(
            device=device,
            num_images_per_prompt=prepared["num_images_per_prompt"],
            max_sequence_length=passed["max_sequence_length"],
            lora_scale=(passed["joint_attention_kwargs"] or {}).get("scale"),
        )
        embeds, pooled, text_ids = self.encode_prompt(
            prompt=prompts,
            prompt_2=prepared["prompt_2"],
            prompt_embeds=prepared["prompt_embeds"],
            pooled_prompt_embeds=prepared["pooled_prompt_embeds"],
            **encode,
        )
        stock = dict(prompt_embeds=embeds, pooled_prompt_embeds=pooled)
        has_negative = prepared["negative_prompt"] is not None or (
            prepared["negative_prompt_embeds"] is not None and prepared["negative_pooled_prompt_embeds"] is not None
        )
        if passed["true_cfg_scale"] > 1 and has_negative:  # the stock call's true CFG
            negative, negative_pooled, _ = self.encode_prompt(
                prompt=match_negative_prompt(prepared["negative_prompt"], prompts),
                prompt_2=match_negative_prompt(prepared["negative_prompt_2"], prompts),
                prompt_embeds=prepared["negative_prompt_embeds"],
                pooled_prompt_embeds=prepared["negative_pooled_prompt_embeds"],
                **encode,
            )
            if negative.shape[0] != embeds.shape[0] and embeds.shape[0] % negative.shape[0] == 0:
                # given negative embeddings of one row per prompt: one per image, as the prompt's
                repeat = embeds.shape[0] // negative.shape[0]
                negative = negative.repeat_interleave(repeat, dim=0)
                negative_pooled = negative_pooled.repeat_interleave(repeat, dim=0)
            stock.update(negative_prompt_embeds=negative, negative_pooled_prompt_embeds=negative_pooled)
        inputs = dict(
            encoder_hidden_states=embeds,
            pooled_projections=pooled,
            txt_ids=text_ids,
            joint_attention_kwargs=passed["joint_attention_kwargs"],
            guidance_scale=passed["guidance_scale"],
        )
        return stock, inputs

    def _guidance_latents(self, batch, dtype, passed, prepared, device):
        latents, image_ids = self.prepare_latents(
            batch, self.transformer.config.in_channels // 4, passed["height"], passed["width"], dtype, device,
            passed["generator"], prepared["latents"],
        )
        return latents, {"img_ids": image_ids}

    def _guidance_timesteps(self, passed, latents, device):
        """The stock call's timesteps (its step 5: flow sigmas, resolution-dependent shift)."""
        steps = passed["num_inference_steps"]
        sigmas = np.linspace(1.0, 1 / steps, steps) if passed["sigmas"] is None else passed["sigmas"]
        if getattr(self.scheduler.config, "use_flow_sigmas", False):
            sigmas = None
        mu = calculate_shift(
            latents.shape[1],
            self.scheduler.config.get("base_image_seq_len", 256),
            self.scheduler.config.get("max_image_seq_len", 4096),
            self.scheduler.config.get("base_shift", 0.5),
            self.scheduler.config.get("max_shift", 1.15),
        )
        timesteps, _ = retrieve_timesteps(self.scheduler, steps, device, sigmas=sigmas, mu=mu)
        return timesteps

    def _text_sequence(self, passed, inputs, session):
        length = inputs["encoder_hidden_states"].shape[1]
        if length != passed["max_sequence_length"]:  # prompt_embeds made at another length
            raise ValueError(
                f"The prompt embeddings hold {length} T5 tokens, but max_sequence_length is "
                f"{passed['max_sequence_length']}; pass max_sequence_length as the embeddings were made with."
            )
        return TextSequence(0, length, start_slot=False), length

    def _patch_grid(self, latents, passed):
        # Packed latents: one token per 2x2 latent patch, row-major (FluxPipeline._pack_latents).
        scale = self.vae_scale_factor * 2
        return int(passed["height"]) // scale, int(passed["width"]) // scale

    def _run_transformer(self, inputs, latents, t):
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full([latents.shape[0]], inputs["guidance_scale"], device=latents.device)
        return self.transformer(
            hidden_states=latents,
            timestep=expand_timestep(t, latents).to(latents.dtype) / 1000,
            guidance=guidance,
            pooled_projections=inputs["pooled_projections"],
            encoder_hidden_states=inputs["encoder_hidden_states"],
            txt_ids=inputs["txt_ids"],
            img_ids=inputs["img_ids"],
            joint_attention_kwargs=inputs["joint_attention_kwargs"],
            return_dict=False,
        )
