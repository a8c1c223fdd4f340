"""Shared machinery of the guided pipelines, and guidance for any pipeline through a callback.

How guidance enters diffusers' own denoising loop without copying it: the update for step
``i + 1`` runs in ``callback_on_step_end`` at the end of step ``i`` (the callback returns the
guided latents, which the next noise prediction then uses, exactly as if the update had run
at the top of step ``i + 1``). The guided pipelines also guide step 0: they draw the initial
latents themselves, guide them, and hand them to the stock ``__call__``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.utils import BaseOutput

from .._compat import dtype_kwarg
from ..guidance.attention import layer_resolutions
from ..guidance.engine import GuidanceConditioning, Guider, StepRecord, resolve_window_mode
from ..guidance.methods import GuidanceMethod, get_method
from ..guidance.tokens import TokenGroup, resolve_batch_groups, tokenize_prompt


@dataclass
class GuidedPipelineOutput(BaseOutput):
    """diffusers' Stable Diffusion output plus what guidance did.

    - ``images``: as diffusers returns them (PIL list, numpy array, tensor or latents).
    - ``nsfw_content_detected``: as diffusers returns it (``None`` without a safety checker).
    - ``attention_maps``: with ``return_attention_maps=True``, ``{step: tensor (batch, h, w, tokens)}``
      of the maps each guided step's loss saw (float32, CPU); else ``None``.
    - ``token_groups``: the resolved groups per image (token positions), ``None`` unguided.
    - ``guidance_records``: one :class:`StepRecord` per guided step (losses, refinement
      iterations, skipped non-finite updates).
    """

    images: Any
    nsfw_content_detected: list[bool] | None = None
    attention_maps: dict[int, torch.Tensor] | None = None
    token_groups: list[list[TokenGroup]] | None = None
    guidance_records: list[StepRecord] | None = None


def default_attn_res(unet, latent_hw: tuple[int, int]) -> tuple[int, int]:
    """Map size read by the loss: the latents downsampled twice (the image size / 32 for a
    VAE that downsamples 8 times), or, when no cross-attention layer has maps of that size,
    the nearest size that one has (by ratio; the finer one on a tie).

    That is diffusers' Attend-and-Excite default for SD 1.x (16x16 at 512 px) and gives
    24x24 for SD 2.x at 768 px. For SDXL it is 32x32 at 1024 px: the coarser of SDXL's two
    cross-attention resolutions, carrying its 10-layer transformer blocks (documented choice).
    Small models with other layouts (e.g. a 16x16 latent with cross-attention at 16x16 and
    8x8) get the nearest map size they have.
    """
    target = tuple(math.ceil(s / 4) for s in latent_hw)
    available = set(layer_resolutions(unet, tuple(latent_hw)).values())
    if target in available or not available:
        return target
    return min(available, key=lambda hw: (abs(math.log(hw[0] * hw[1] / (target[0] * target[1]))), -hw[0] * hw[1]))


def as_method(guidance: GuidanceMethod | str) -> GuidanceMethod:
    if isinstance(guidance, GuidanceMethod):
        return guidance
    if isinstance(guidance, str):
        return get_method(guidance)
    raise TypeError(f"guidance must be a GuidanceMethod or a method name, got {type(guidance).__name__}")


def prompt_list(prompt) -> list[str]:
    if prompt is None:
        raise ValueError(
            "Guidance needs the prompt text to find the token groups; pass `prompt` (not only `prompt_embeds`)."
        )
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError("`prompt` must be a string or a non-empty list of strings.")
    return prompts


def expand_groups(tokenizer, prompts: list[str], token_groups, num_images_per_prompt: int):
    """Resolve groups per prompt and repeat them per image (diffusers' prompt-major order)."""
    groups = resolve_batch_groups(tokenizer, prompts, token_groups)
    lengths = [tokenize_prompt(tokenizer, p).length for p in prompts]
    per_image = [g for g in groups for _ in range(num_images_per_prompt)]
    per_image_lengths = [n for n in lengths for _ in range(num_images_per_prompt)]
    per_image_prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
    return groups, per_image, per_image_lengths, per_image_prompts


def match_negative_prompt(negative_prompt, prompts: list[str]):
    """A single negative prompt for a list of prompts, as diffusers expects (same type)."""
    if isinstance(negative_prompt, str):
        return [negative_prompt] * len(prompts)
    return negative_prompt


def _cond_half(tensor: torch.Tensor | None, do_cfg: bool) -> torch.Tensor | None:
    """The conditional rows of a CFG batch (diffusers stacks [uncond, cond])."""
    if tensor is None or not do_cfg:
        return tensor
    return tensor.chunk(2)[1]


def build_guider(
    pipeline,
    method: GuidanceMethod,
    conditioning: GuidanceConditioning,
    latents: torch.Tensor,
    height: int,
    width: int,
    attn_res=None,
    num_steps: int = 50,
    return_attention_maps: bool = False,
    record_loss_after_update: bool = False,
    truncate_forward: bool = True,
) -> Guider:
    """A :class:`Guider` for ``pipeline``'s UNet and scheduler (any SD-like pipeline)."""
    tokenizers = [getattr(pipeline, "tokenizer", None), getattr(pipeline, "tokenizer_2", None)]
    latent_hw = tuple(latents.shape[-2:])
    attn_res = tuple(attn_res) if attn_res is not None else default_attn_res(pipeline.unet, latent_hw)
    return Guider(
        method,
        pipeline.unet,
        pipeline.scheduler,
        conditioning,
        latent_hw=tuple(latents.shape[-2:]),
        attn_res=attn_res,
        num_inference_steps=num_steps,
        window_mode=resolve_window_mode(method, tokenizers),
        record_loss_after_update=record_loss_after_update,
        keep_attention_maps=return_attention_maps,
        truncate_forward=truncate_forward,
    )


class _StepGuidance:
    """Calls the user's callback, then guides the latents for the next step."""

    def __init__(self, guider: Guider, timesteps: Sequence, offset: int, user_callback=None):
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


def _loop_start(timesteps, first_timestep, loop_length: int | None) -> int:
    """Where the stock loop starts in ``scheduler.timesteps``, seen from its first callback.

    txt2img loops start at 0 (also when SDXL's ``denoising_end`` shortens them); img2img
    loops run over the last ``loop_length`` entries. Among the positions holding the first
    timestep (PNDM repeats one), prefer the img2img position, else the first."""
    matches = [int(i) for i in (timesteps == first_timestep).nonzero().flatten()]
    if loop_length and len(timesteps) - loop_length in matches:
        return len(timesteps) - loop_length
    return matches[0] if matches else 0


def check_supported_unet(unet, latents: torch.Tensor | None = None) -> None:
    """Refuse UNet set-ups whose extra inputs the guidance forward would not feed."""
    if getattr(unet.config, "encoder_hid_dim_type", None) == "ip_image_proj":
        raise ValueError(
            "Attention guidance does not support IP-Adapter yet: the guidance forward has no image "
            "embeddings to give it. Unload it first with pipe.unload_ip_adapter()."
        )
    if latents is not None and unet.config.in_channels != latents.shape[1]:
        raise ValueError(
            f"The UNet takes {unet.config.in_channels} input channels but the latents have "
            f"{latents.shape[1]} (an inpainting or depth UNet concatenates extra inputs); attention "
            "guidance supports UNets fed with the latents alone."
        )


def guidance_scale_embedding(pipeline, guidance_scale: float, batch: int, device, dtype):
    """``timestep_cond`` for UNets distilled with a guidance-scale embedding (LCM); else None."""
    dim = getattr(pipeline.unet.config, "time_cond_proj_dim", None)
    if dim is None:
        return None
    w = torch.tensor(guidance_scale - 1).repeat(batch)
    return pipeline.get_guidance_scale_embedding(w, embedding_dim=dim).to(device=device, dtype=dtype)


def tensor_inputs_of(callback, requested: Sequence[str] | None) -> list[str]:
    names = list(requested or ["latents"])
    if isinstance(callback, (PipelineCallback, MultiPipelineCallbacks)):
        names = list(callback.tensor_inputs)
    if "latents" not in names:
        names.append("latents")
    return names


class GuidedPipelineMixin:
    """Guidance plumbing shared by the SD and SDXL guided pipelines."""

    @classmethod
    def from_pipe(cls, pipeline, **kwargs):
        """diffusers' ``from_pipe``, but keeping the source pipeline's dtype when none is given
        (diffusers casts the shared components to float32 otherwise, the caller's too)."""
        if "torch_dtype" not in kwargs and "dtype" not in kwargs:
            kwargs.update(dtype_kwarg(pipeline.dtype))
        return super().from_pipe(pipeline, **kwargs)

    def _start_guidance(self, guidance, prompt, token_groups, num_images_per_prompt: int, kwargs: dict):
        """Validate a guided call's inputs; resolve the method and the token groups."""
        method = as_method(guidance)
        prompts = prompt_list(prompt)
        check_supported_unet(self.unet)
        if kwargs.get("ip_adapter_image") is not None or kwargs.get("ip_adapter_image_embeds") is not None:
            raise ValueError("Attention guidance does not support IP-Adapter inputs yet; drop ip_adapter_image.")
        tokenizer = getattr(self, "tokenizer", None) or getattr(self, "tokenizer_2", None)
        groups, image_groups, lengths, image_prompts = expand_groups(
            tokenizer, prompts, token_groups, num_images_per_prompt
        )
        return method, prompts, groups, image_groups, lengths, image_prompts

    def _run_guided(
        self,
        method: GuidanceMethod,
        conditioning: GuidanceConditioning,
        latents: torch.Tensor,
        size: tuple[int, int],
        timesteps: Sequence,
        call: Callable[..., Any],
        user_callback,
        tensor_inputs,
        return_dict: bool,
        groups,
        options: dict,
    ):
        """Guide step 0, then run the stock loop (``call``) with the step-guidance callback.

        ``options``: ``attn_res``, ``return_attention_maps``, ``record_loss_after_update``,
        ``truncate_forward`` (see :func:`build_guider`).
        """
        guider = build_guider(self, method, conditioning, latents, *size, num_steps=len(timesteps), **options)
        latents = guider.step(latents, timesteps[0], 0)
        init_sigma = self.scheduler.init_noise_sigma
        # The stock prepare_latents multiplies given latents by init_noise_sigma again.
        latents = latents / init_sigma if not (isinstance(init_sigma, (int, float)) and init_sigma == 1) else latents
        callback = _StepGuidance(guider, timesteps, 0, user_callback)
        out = call(
            latents=latents,
            callback_on_step_end=callback,
            callback_on_step_end_tensor_inputs=tensor_inputs_of(user_callback, tensor_inputs),
            return_dict=False,
        )
        if not return_dict:
            return out  # the stock pipeline's tuple
        images, nsfw = out[0], out[1] if len(out) > 1 else None
        return GuidedPipelineOutput(
            images=images,
            nsfw_content_detected=nsfw,
            attention_maps=guider.attention_maps if guider.keep_attention_maps else None,
            token_groups=groups,
            guidance_records=guider.records,
        )


class GuidanceCallback(PipelineCallback):
    """Guidance for a pipeline you already have, of any class whose loop calls
    ``callback_on_step_end`` and whose UNet is a ``UNet2DConditionModel``::

        cb = GuidanceCallback(pipe, Conform(), prompt, token_groups=[["red", "car"], ["blue", "bench"]])
        image = pipe(prompt, callback_on_step_end=cb).images[0]

    Limits, by construction:
    - The first denoising step is not guided (a callback runs only after a step); steps
      1.. are guided exactly as the guided pipelines do. Use ``GuidedStableDiffusionPipeline``
      / ``GuidedStableDiffusionXLPipeline`` (``from_pipe``) for guidance from step 0.
    - The conditioning is read from the callback's tensors (``prompt_embeds``, and
      ``add_text_embeds`` / ``add_time_ids`` for SDXL); pipelines that do not expose them
      (or add other UNet inputs, e.g. ControlNet residuals) are not supported.
    - It starts afresh at every call (step 0 of a new loop), so one instance can serve
      several calls; ``records`` and ``attention_maps`` describe the latest call.
    - IP-Adapter and UNets with extra input channels (inpainting) are refused.
    """

    def __init__(
        self,
        pipeline,
        guidance: GuidanceMethod | str,
        prompt: str | list[str],
        token_groups="auto",
        num_images_per_prompt: int = 1,
        attn_res: tuple[int, int] | None = None,
        return_attention_maps: bool = False,
    ):
        super().__init__(cutoff_step_ratio=1.0)
        self.method = as_method(guidance)
        self.prompts = prompt_list(prompt)
        self.groups, self.image_groups, self.lengths, self.image_prompts = expand_groups(
            pipeline.tokenizer, self.prompts, token_groups, num_images_per_prompt
        )
        self.attn_res = attn_res
        self.return_attention_maps = return_attention_maps
        self.is_sdxl = "add_time_ids" in getattr(pipeline, "_callback_tensor_inputs", [])
        needed = ["latents", "prompt_embeds"] + (["add_text_embeds", "add_time_ids"] if self.is_sdxl else [])
        missing = [n for n in needed if n not in getattr(pipeline, "_callback_tensor_inputs", [])]
        if missing:
            raise ValueError(
                f"{type(pipeline).__name__} does not expose {missing} to callbacks, so GuidanceCallback cannot "
                "read the conditioning; use GuidedStableDiffusionPipeline.from_pipe(pipe) instead."
            )
        self._needed = needed
        self.guider: Guider | None = None
        self._step_guidance: _StepGuidance | None = None

    @property
    def tensor_inputs(self) -> list[str]:
        return list(self._needed)

    @property
    def attention_maps(self):
        return self.guider.attention_maps if self.guider is not None else None

    @property
    def records(self):
        return self.guider.records if self.guider is not None else []

    def _build(self, pipeline, timestep, callback_kwargs):
        do_cfg = bool(getattr(pipeline, "do_classifier_free_guidance", False))
        latents = callback_kwargs["latents"]
        added = None
        if self.is_sdxl:
            added = {
                "text_embeds": _cond_half(callback_kwargs["add_text_embeds"], do_cfg),
                "time_ids": _cond_half(callback_kwargs["add_time_ids"], do_cfg),
            }
        embeds = _cond_half(callback_kwargs["prompt_embeds"], do_cfg)
        if embeds.shape[0] != latents.shape[0] or latents.shape[0] != len(self.image_groups):
            raise ValueError(
                f"GuidanceCallback was built for {len(self.image_groups)} images ({len(self.prompts)} prompts x "
                f"num_images_per_prompt), but the pipeline runs {latents.shape[0]}; pass the same prompt and "
                "num_images_per_prompt to both."
            )
        check_supported_unet(pipeline.unet, latents)
        conditioning = GuidanceConditioning(
            encoder_hidden_states=embeds,
            groups=self.image_groups,
            prompt_lengths=self.lengths,
            prompts=self.image_prompts,
            added_cond_kwargs=added,
            cross_attention_kwargs=getattr(pipeline, "cross_attention_kwargs", None),
            timestep_cond=guidance_scale_embedding(
                pipeline, getattr(pipeline, "guidance_scale", 1.0), latents.shape[0], latents.device, latents.dtype
            ),
        )
        timesteps = pipeline.scheduler.timesteps
        begin = getattr(pipeline.scheduler, "begin_index", None)
        if begin is None:
            begin = _loop_start(timesteps, timestep, getattr(pipeline, "num_timesteps", None))
        scale = pipeline.vae_scale_factor
        height, width = latents.shape[-2] * scale, latents.shape[-1] * scale
        self.guider = build_guider(
            pipeline,
            self.method,
            conditioning,
            latents,
            height,
            width,
            attn_res=self.attn_res,
            num_steps=len(timesteps) - begin,
            return_attention_maps=self.return_attention_maps,
        )
        self._step_guidance = _StepGuidance(self.guider, timesteps, begin)

    def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
        if self._step_guidance is None or step_index == 0:
            self._build(pipeline, timestep, callback_kwargs)
        return self._step_guidance(pipeline, step_index, timestep, callback_kwargs)
