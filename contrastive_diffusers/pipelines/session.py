"""One guided generation's state, between the pipeline's setup and its denoising loop.

A guided call first resolves what it was asked for (the method, the prompts and their
token groups, the guidance options) into a :class:`GuidanceSession`, before any model
work. The pipeline then encodes the prompts and draws the latents as diffusers does; the
session turns those into the :class:`~contrastive_diffusers.guidance.engine.Guider` that
guides them. The guided pipelines and :class:`~.callback.GuidanceCallback` share it.

Guidance enters diffusers' own denoising loop without copying it: the update for step
``i + 1`` runs in ``callback_on_step_end`` at the end of step ``i`` (:class:`StepGuidance`
returns the guided latents, which the next noise prediction then uses, exactly as if the
update had run at the top of step ``i + 1``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..guidance.engine import GuidanceConditioning, Guider, resolve_window_mode
from ..guidance.joint_engine import JointGuider
from ..guidance.methods import GuidanceMethod, get_method
from ..guidance.tokens import TokenGroup, resolve_batch_groups, resolve_groups, tokenize_prompt


def as_method(guidance: GuidanceMethod | str) -> GuidanceMethod:
    if isinstance(guidance, GuidanceMethod):
        return guidance
    if isinstance(guidance, str):
        return get_method(guidance)
    raise TypeError(f"guidance must be a GuidanceMethod or a method name, got {type(guidance).__name__}")


def prompt_list(prompt) -> list[str]:
    if prompt is None:
        raise ValueError(
            "Guidance needs the prompt text to find the token groups; pass `prompt` too: with `prompt_embeds` "
            "(e.g. weighted embeddings) a guided call conditions on the embeddings and reads the token groups "
            "from the text, which must be the text they encode."
        )
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError("`prompt` must be a string or a non-empty list of strings.")
    return prompts


def _is_resolved(groups) -> bool:
    """A non-empty list of :class:`TokenGroup` (one prompt's groups, already resolved)."""
    return isinstance(groups, (list, tuple)) and len(groups) > 0 and all(isinstance(g, TokenGroup) for g in groups)


def _checked(groups: Sequence[TokenGroup], prompt: str, length: int) -> list[TokenGroup]:
    """Resolved groups, checked to point at ``prompt``'s own tokens (1..length)."""
    for group in groups:
        outside = [p for p in group.positions if not 1 <= p <= length]
        if outside:
            raise ValueError(
                f"Token group {group.words} holds position(s) {outside}, outside the {length} tokens of the "
                f"prompt {prompt!r} (1..{length}); resolve the groups with this pipeline's tokenizer and prompt."
            )
    return list(groups)


def resolve_token_groups(tokenizer, prompts: list[str], token_groups, lengths: list[int]) -> list[list[TokenGroup]]:
    """One list of :class:`TokenGroup` per prompt. ``token_groups`` is what
    :func:`~contrastive_diffusers.guidance.tokens.resolve_batch_groups` takes, or groups
    already resolved (a ``TokenGroup`` list for a single prompt, or one per prompt, where
    any prompt's entry may also be words or ``"auto"``); resolved groups are kept as they
    are, after a check that their positions lie inside their prompt."""
    if _is_resolved(token_groups):
        if len(prompts) != 1:
            raise ValueError(
                f"Got one prompt's resolved token groups for {len(prompts)} prompts; pass one TokenGroup "
                "list per prompt."
            )
        return [_checked(token_groups, prompts[0], lengths[0])]
    if isinstance(token_groups, (list, tuple)) and any(_is_resolved(entry) for entry in token_groups):
        if len(token_groups) != len(prompts):
            raise ValueError(
                f"Got {len(token_groups)} token group lists for {len(prompts)} prompts; pass one group list "
                "(or 'auto') per prompt."
            )
        return [
            _checked(entry, prompt, length) if _is_resolved(entry) else resolve_groups(tokenizer, prompt, entry)
            for prompt, entry, length in zip(prompts, token_groups, lengths)
        ]
    return resolve_batch_groups(tokenizer, prompts, token_groups)


@dataclass
class GuidanceSession:
    """What a guided call resolved before any model work.

    - ``method``: the guidance method.
    - ``prompts``, ``groups``, ``prompt_lengths``: per prompt (not per image): the text, its
      resolved token groups, its token count without the start and end tokens.
    - ``images_per_prompt``: diffusers' ``num_images_per_prompt``; images are prompt-major.
    - ``attn_res`` (``None``: :func:`~contrastive_diffusers.guidance.attention.default_attn_res`),
      ``return_attention_maps``, ``record_loss_after_update``, ``truncate_forward``: the
      options of the :class:`~contrastive_diffusers.guidance.engine.Guider`.
    - MMDiT pipelines only: ``blocks`` (the joint-attention blocks the loss reads, ``None``:
      the default), ``text_sequence`` (SD3: ``"clip"`` or ``"t5"``), ``absolute_steps``
      (read the method's int steps as loop indices instead of fractions of 50): the options
      of the :class:`~contrastive_diffusers.guidance.joint_engine.JointGuider`.
    """

    method: GuidanceMethod
    prompts: list[str]
    groups: list[list[TokenGroup]]
    prompt_lengths: list[int]
    images_per_prompt: int = 1
    attn_res: tuple[int, int] | None = None
    return_attention_maps: bool = False
    record_loss_after_update: bool = False
    truncate_forward: bool = True
    blocks: Sequence[int | str] | None = None
    text_sequence: str | None = None
    absolute_steps: bool = False

    def __post_init__(self):
        if self.attn_res is not None:
            self.attn_res = tuple(int(s) for s in self.attn_res)
        if self.text_sequence not in (None, "clip", "t5"):
            raise ValueError(f"text_sequence must be 'clip' or 't5', got {self.text_sequence!r}.")

    @classmethod
    def start(cls, tokenizer, guidance, prompt, token_groups="auto", num_images_per_prompt: int = 1, **options):
        """Resolve the method (instance or name), the prompts and their token groups."""
        method = as_method(guidance)
        prompts = prompt_list(prompt)
        lengths = [tokenize_prompt(tokenizer, p).length for p in prompts]
        groups = resolve_token_groups(tokenizer, prompts, token_groups, lengths)
        return cls(method, prompts, groups, lengths, num_images_per_prompt, **options)

    def check_embeds_rows(self, rows: int) -> None:
        """The encoded conditioning must hold one row per image (``prompt_embeds`` given by the
        caller must match the prompt list); else the maps would be read for the wrong prompts."""
        images = len(self.prompts) * self.images_per_prompt
        if rows != images:
            raise ValueError(
                f"The prompt embeddings hold {rows} rows but the guided call makes {images} images "
                f"({len(self.prompts)} prompt(s) x num_images_per_prompt={self.images_per_prompt}); give "
                "prompt_embeds for the same prompts as the stock call takes them (this pipeline's encode_prompt "
                "output), or leave them out."
            )

    def check_latents_rows(self, latents) -> None:
        """Given ``latents`` must hold one row per image: each image is guided by its own maps,
        so one row is not broadcast over several images (stock Flux would; SD and SD3 fail)."""
        images = len(self.prompts) * self.images_per_prompt
        if latents is not None and latents.shape[0] != images:
            repeat = ", ".join([str(images)] + ["1"] * (latents.dim() - 1))
            hint = f" (one row for all: latents.repeat({repeat}))" if latents.shape[0] == 1 else ""
            raise ValueError(
                f"latents holds {latents.shape[0]} row(s) but the guided call makes {images} images "
                f"({len(self.prompts)} prompt(s) x num_images_per_prompt={self.images_per_prompt}); pass one row "
                f"per image{hint}, or leave latents out."
            )

    def per_image(self, values: Sequence) -> list:
        """Per-prompt ``values`` repeated for each image (diffusers' prompt-major order)."""
        return [value for value in values for _ in range(self.images_per_prompt)]

    def conditioning(self, encoder_hidden_states: torch.Tensor, **inputs) -> GuidanceConditioning:
        """The guidance forward's inputs, one row per image: the conditional embeddings and
        ``inputs`` (``added_cond_kwargs``, ``cross_attention_kwargs``, ``timestep_cond``)."""
        return GuidanceConditioning(
            encoder_hidden_states=encoder_hidden_states,
            groups=self.per_image(self.groups),
            prompt_lengths=self.per_image(self.prompt_lengths),
            prompts=self.per_image(self.prompts),
            **inputs,
        )

    def guider(self, pipeline, conditioning: GuidanceConditioning, latents: torch.Tensor, num_steps: int) -> Guider:
        """A :class:`Guider` for ``pipeline``'s UNet and scheduler (any SD-like pipeline)."""
        tokenizers = [getattr(pipeline, "tokenizer", None), getattr(pipeline, "tokenizer_2", None)]
        return Guider(
            self.method,
            pipeline.unet,
            pipeline.scheduler,
            conditioning,
            latent_hw=tuple(latents.shape[-2:]),
            attn_res=self.attn_res,
            num_inference_steps=num_steps,
            window_mode=resolve_window_mode(self.method, tokenizers),
            record_loss_after_update=self.record_loss_after_update,
            keep_attention_maps=self.return_attention_maps,
            truncate_forward=self.truncate_forward,
        )

    def joint_guider(
        self, transformer, run_transformer, conditioning: GuidanceConditioning, grid_hw, text, text_len: int,
        num_steps: int, tokenizers: Sequence,
    ) -> JointGuider:
        """A :class:`JointGuider` for an MMDiT ``transformer``; ``run_transformer(latents, t)``
        is the pipeline's conditional forward."""
        return JointGuider(
            self.method,
            transformer,
            run_transformer,
            conditioning,
            grid_hw=grid_hw,
            blocks=self.blocks,
            text=text,
            text_len=text_len,
            num_inference_steps=num_steps,
            window_mode=resolve_window_mode(self.method, tokenizers),
            record_loss_after_update=self.record_loss_after_update,
            keep_attention_maps=self.return_attention_maps,
            truncate_forward=self.truncate_forward,
            absolute_steps=self.absolute_steps,
        )


class StepGuidance:
    """``callback_on_step_end``: calls the user's callback, then guides the latents for the
    next step. ``offset`` is where the stock loop starts in ``timesteps``."""

    def __init__(self, guider: Guider, timesteps: Sequence, offset: int = 0, user_callback=None):
        self.guider = guider
        self.timesteps = timesteps
        self.offset = offset
        self.user_callback = user_callback

    def __call__(self, pipeline, step_index: int, timestep, callback_kwargs: dict) -> dict:
        if self.user_callback is not None:
            returned = self.user_callback(pipeline, step_index, timestep, callback_kwargs)
            if returned is not None:
                callback_kwargs = {**callback_kwargs, **returned}
        nxt = step_index + 1
        # num_timesteps is the stock loop's length after any truncation (SDXL's denoising_end).
        loop_length = getattr(pipeline, "num_timesteps", None) or len(self.timesteps) - self.offset
        in_loop = nxt < loop_length and self.offset + nxt < len(self.timesteps)
        if in_loop and not getattr(pipeline, "interrupt", False):
            t_next = self.timesteps[self.offset + nxt]
            callback_kwargs["latents"] = self.guider.step(callback_kwargs["latents"], t_next, nxt)
        return callback_kwargs


def check_guidable_loop(pipeline) -> None:
    """Refuse denoising loops the step-indexed guidance would misread: second-order schedulers
    (their loop visits each timestep twice, so guidance would land on half-steps and the
    schedules in steps would end halfway) and diffusers' block caches (they skip or reuse
    blocks whose input barely changed, so the guidance forward and its gradient would too)."""
    scheduler = pipeline.scheduler
    order = getattr(scheduler, "order", 1)
    if order != 1:
        # a first-order scheduler of this model's kind: flow matching on the MMDiT models
        first_order = "FlowMatchEulerDiscreteScheduler" if hasattr(pipeline, "transformer") else "EulerDiscreteScheduler"
        raise ValueError(
            f"{type(scheduler).__name__} is a solver of order {order}: its loop evaluates each timestep "
            f"{order} times, which step-indexed guidance cannot follow. Use a first-order scheduler for guided "
            "calls: EulerDiscreteScheduler, DDIM, PNDM, DPMSolverMultistep or UniPC (FlowMatchEulerDiscreteScheduler "
            f"for SD3 and Flux); in Python pipe.scheduler = {first_order}.from_config(pipe.scheduler.config), "
            f"on the command line --scheduler {first_order}."
        )
    model = getattr(pipeline, "transformer", None) or getattr(pipeline, "unet", None)
    if getattr(model, "is_cache_enabled", False):
        raise ValueError(
            f"{type(model).__name__} has a diffusers cache enabled (enable_cache), which reuses block outputs "
            "that guidance changes; call pipe.transformer.disable_cache() before a guided call."
        )


def check_supported_unet(unet, latent_channels: int | None = None) -> None:
    """Refuse UNet set-ups whose extra inputs the guidance forward would not feed
    (``latent_channels``: of the loop's latents, or of the pipeline's VAE)."""
    if getattr(unet.config, "encoder_hid_dim_type", None) == "ip_image_proj":
        raise ValueError(
            "Attention guidance does not support IP-Adapter yet: the guidance forward has no image "
            "embeddings to give it. Unload it first with pipe.unload_ip_adapter()."
        )
    if latent_channels is not None and unet.config.in_channels != latent_channels:
        raise ValueError(
            f"The UNet takes {unet.config.in_channels} input channels but the latents have "
            f"{latent_channels} (an inpainting or depth UNet concatenates extra inputs); attention "
            "guidance supports UNets fed with the latents alone."
        )


def guidance_scale_embedding(pipeline, guidance_scale: float, batch: int, device, dtype):
    """``timestep_cond`` for UNets distilled with a guidance-scale embedding (LCM); else None."""
    dim = getattr(pipeline.unet.config, "time_cond_proj_dim", None)
    if dim is None:
        return None
    w = torch.tensor(guidance_scale - 1).repeat(batch)
    return pipeline.get_guidance_scale_embedding(w, embedding_dim=dim).to(device=device, dtype=dtype)
