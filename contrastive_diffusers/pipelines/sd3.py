"""Stable Diffusion 3 / 3.5 with attention-map guidance."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import StableDiffusion3Pipeline
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift, retrieve_timesteps

from ..guidance.methods import GuidanceMethod
from ..guidance.t5_tokens import T5WordLookup
from .guided import match_negative_prompt
from .joint import GuidedJointPipelineMixin, clip_then_t5, expand_timestep

#: ``StableDiffusion3Pipeline.__call__``'s default ``max_sequence_length``.
STOCK_MAX_SEQUENCE_LENGTH = 256


def default_t5_length(tokenizer_3) -> int:
    """The T5 length of an SD3 call that gives none: the stock 256, or the T5 tokenizer's
    ``model_max_length`` where a model was trained on shorter text."""
    stored = getattr(tokenizer_3, "model_max_length", None)
    return min(STOCK_MAX_SEQUENCE_LENGTH, int(stored)) if stored else STOCK_MAX_SEQUENCE_LENGTH


class GuidedStableDiffusion3Pipeline(GuidedJointPipelineMixin, StableDiffusion3Pipeline):
    """``StableDiffusion3Pipeline`` whose ``__call__`` also takes a guidance method.

    Every argument of ``StableDiffusion3Pipeline.__call__`` works as there; the additions
    are those of :class:`~.sd.GuidedStableDiffusionPipeline` (``guidance``, ``token_groups``,
    ``return_attention_maps``, ``record_loss_after_update``, ``truncate_guidance_forward``),
    with MMDiT's in place of ``attn_res``:

    - ``blocks``: the joint blocks whose image-to-text maps the loss reads (ints or names
      ``"transformer_blocks.i"``); default: the middle third of the blocks (measured on the
      embedded MMDiT model, where no block localises better: see
      :func:`~contrastive_diffusers.guidance.joint_attention.default_blocks`).
    - ``text_sequence``: the part of SD3's joint text the loss reads: ``"clip"`` (default,
      the first ``tokenizer.model_max_length`` (77) tokens, CLIP-L and CLIP-G side by side; token positions as the CLIP
      tokenizer counts them) or ``"t5"`` (the T5 tokens that follow, ``max_sequence_length``
      of them; positions count T5's pieces from 1).
    - ``max_sequence_length``: as the stock call's, but its default ``None`` means 256 (the
      stock default) or, for a model trained on shorter T5 text, the T5 tokenizer's
      ``model_max_length`` when that is below 256 (the embedded ShapesWorld model's 24), so
      that every call encodes prompts at the length the model knows.
    - ``absolute_steps``: the method's int step indices are read as fractions of 50 steps
      unless this is ``True`` (then they are loop indices, as on the UNet pipelines).
    """

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] = None,
        prompt_2: str | list[str] | None = None,
        prompt_3: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 28,
        sigmas: list[float] | None = None,
        guidance_scale: float = 7.0,
        negative_prompt: str | list[str] | None = None,
        negative_prompt_2: str | list[str] | None = None,
        negative_prompt_3: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
        output_type: str | None = "pil",
        return_dict: bool = True,
        joint_attention_kwargs: dict[str, Any] | None = None,
        clip_skip: int | None = None,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        max_sequence_length: int | None = None,
        mu: float | None = None,
        guidance: GuidanceMethod | str | None = None,
        token_groups="auto",
        blocks: list[int | str] | None = None,
        text_sequence: str = "clip",
        absolute_steps: bool = False,
        return_attention_maps: bool = False,
        record_loss_after_update: bool = False,
        truncate_guidance_forward: bool = True,
        **kwargs,
    ):
        if max_sequence_length is None:
            max_sequence_length = self.default_max_sequence_length()
        passed = dict(
            height=height,
            width=width,
            num_inference_steps=num_inference_steps,
            sigmas=sigmas,
            guidance_scale=guidance_scale,
            generator=generator,
            output_type=output_type,
            joint_attention_kwargs=joint_attention_kwargs,
            clip_skip=clip_skip,
            max_sequence_length=max_sequence_length,
            mu=mu,
            **kwargs,
        )
        prepared = dict(
            prompt=prompt,
            prompt_2=prompt_2,
            prompt_3=prompt_3,
            negative_prompt=negative_prompt,
            negative_prompt_2=negative_prompt_2,
            negative_prompt_3=negative_prompt_3,
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
            blocks=blocks,
            text_sequence=text_sequence,
            absolute_steps=absolute_steps,
            return_attention_maps=return_attention_maps,
            record_loss_after_update=record_loss_after_update,
            truncate_forward=truncate_guidance_forward,
        )

    def default_max_sequence_length(self) -> int:
        """The T5 length of a call that does not give one (:func:`default_t5_length`)."""
        return default_t5_length(self.tokenizer_3)

    # ---------------------------------------------------------------- what SD3 provides
    def _word_lookup(self, passed, options):
        if options.get("text_sequence") == "t5":
            if self.tokenizer_3 is None or self.text_encoder_3 is None:
                raise ValueError("text_sequence='t5' needs the T5 text encoder; this pipeline was loaded without it.")
            return T5WordLookup(self.tokenizer_3, passed["max_sequence_length"])
        return self.tokenizer

    def _window_tokenizers(self):
        return [self.tokenizer, self.tokenizer_2, self.tokenizer_3]

    def _texts_the_loss_reads(self, session):
        # "clip": CLIP-L's and CLIP-G's tokens side by side (prompt, prompt_2); "t5": prompt_3
        return ("prompt_3",) if session.text_sequence == "t5" else ("prompt_2",)

    def _encode_for_guidance(self, prompts, passed, prepared, tensor_inputs, device):
        self.check_inputs(
            prompts,
            prepared["prompt_2"],
            prepared["prompt_3"],
            passed["height"],
            passed["width"],
            negative_prompt=prepared["negative_prompt"],
            negative_prompt_2=prepared["negative_prompt_2"],
            negative_prompt_3=prepared["negative_prompt_3"],
            negative_prompt_embeds=prepared["negative_prompt_embeds"],
            negative_pooled_prompt_embeds=prepared["negative_pooled_prompt_embeds"],
            callback_on_step_end_tensor_inputs=tensor_inputs,
            max_sequence_length=passed["max_sequence_length"],
        )
        do_cfg = passed["guidance_scale"] > 1
        embeds, negative, pooled, negative_pooled = self.encode_prompt(
            prompt=prompts,
            prompt_2=prepared["prompt_2"],
            prompt_3=prepared["prompt_3"],
            negative_prompt=match_negative_prompt(prepared["negative_prompt"], prompts),
            negative_prompt_2=match_negative_prompt(prepared["negative_prompt_2"], prompts),
            negative_prompt_3=match_negative_prompt(prepared["negative_prompt_3"], prompts),
            do_classifier_free_guidance=do_cfg,
            prompt_embeds=prepared["prompt_embeds"],
            pooled_prompt_embeds=prepared["pooled_prompt_embeds"],
            negative_prompt_embeds=prepared["negative_prompt_embeds"],
            negative_pooled_prompt_embeds=prepared["negative_pooled_prompt_embeds"],
            device=device,
            clip_skip=passed["clip_skip"],
            num_images_per_prompt=prepared["num_images_per_prompt"],
            max_sequence_length=passed["max_sequence_length"],
            lora_scale=(passed["joint_attention_kwargs"] or {}).get("scale"),
        )
        stock = dict(
            prompt_embeds=embeds,
            pooled_prompt_embeds=pooled,
            negative_prompt_embeds=negative if do_cfg else None,
            negative_pooled_prompt_embeds=negative_pooled if do_cfg else None,
        )
        inputs = {"encoder_hidden_states": embeds, "pooled_projections": pooled}
        return stock, {**inputs, "joint_attention_kwargs": passed["joint_attention_kwargs"]}

    def _guidance_latents(self, batch, dtype, passed, prepared, device):
        latents = self.prepare_latents(
            batch, self.transformer.config.in_channels, passed["height"], passed["width"], dtype, device,
            passed["generator"], prepared["latents"],
        )
        return latents, {}

    def _guidance_timesteps(self, passed, latents, device):
        """The stock call's timesteps (its step 5, dynamic shifting included)."""
        mu = passed["mu"]
        if self.scheduler.config.get("use_dynamic_shifting", None) and mu is None:
            patch = self.transformer.config.patch_size
            mu = calculate_shift(
                (latents.shape[-2] // patch) * (latents.shape[-1] // patch),
                self.scheduler.config.get("base_image_seq_len", 256),
                self.scheduler.config.get("max_image_seq_len", 4096),
                self.scheduler.config.get("base_shift", 0.5),
                self.scheduler.config.get("max_shift", 1.16),
            )
        kwargs = {} if mu is None else {"mu": mu}
        timesteps, _ = retrieve_timesteps(
            self.scheduler, passed["num_inference_steps"], device, sigmas=passed["sigmas"], **kwargs
        )
        return timesteps

    def _text_sequence(self, passed, inputs, session):
        total = inputs["encoder_hidden_states"].shape[1]
        return clip_then_t5(self.tokenizer_max_length, passed["max_sequence_length"], session.text_sequence, total)

    def _patch_grid(self, latents, passed):
        patch = self.transformer.config.patch_size
        return latents.shape[-2] // patch, latents.shape[-1] // patch

    def _run_transformer(self, inputs, latents, t):
        return self.transformer(
            hidden_states=latents,
            timestep=expand_timestep(t, latents),
            encoder_hidden_states=inputs["encoder_hidden_states"],
            pooled_projections=inputs["pooled_projections"],
            joint_attention_kwargs=inputs["joint_attention_kwargs"],
            return_dict=False,
        )
