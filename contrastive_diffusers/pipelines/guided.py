"""What the SD and SDXL guided pipelines share: their output and their guided call.

A guided call resolves a :class:`~.session.GuidanceSession`, encodes the prompts and draws
the initial latents itself (as diffusers' ``__call__`` would), guides step 0, and hands
the guided latents and the prompt embeddings to the stock ``__call__``, whose loop guides
the later steps through ``callback_on_step_end``. Each pipeline adds only what differs:
its default image size, its input checks and prompt encoding.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.pipelines.flux.pipeline_output import FluxPipelineOutput
from diffusers.pipelines.stable_diffusion.pipeline_output import StableDiffusionPipelineOutput
from diffusers.pipelines.stable_diffusion_3.pipeline_output import StableDiffusion3PipelineOutput
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import retrieve_timesteps
from diffusers.pipelines.stable_diffusion_xl.pipeline_output import StableDiffusionXLPipelineOutput
from diffusers.utils import logging

from ..guidance.engine import Guider, StepRecord
from ..guidance.tokens import TokenGroup
from .session import (
    GuidanceSession,
    StepGuidance,
    check_guidable_loop,
    check_supported_unet,
    guidance_scale_embedding,
)

logger = logging.get_logger(__name__)
# set while from_pipe builds a guided pipeline: its closing cast to one dtype is skipped
_KEEP_DTYPES = contextvars.ContextVar("keep_component_dtypes", default=False)


@dataclass
class GuidedPipelineOutput(StableDiffusionPipelineOutput, StableDiffusionXLPipelineOutput,
                           StableDiffusion3PipelineOutput, FluxPipelineOutput):
    """diffusers' pipeline output plus what guidance did (an instance of the stock SD, SDXL,
    SD3 and Flux output classes, so code that checks for them takes it).

    - ``images``: as diffusers returns them (PIL list, numpy array, tensor or latents).
    - ``nsfw_content_detected``: as diffusers returns it (``None`` without a safety checker).
    - ``attention_maps``: with ``return_attention_maps=True``, ``{step: tensor (batch, h, w, tokens)}``
      of the maps each guided step's loss saw (float32, CPU); else ``None``.
    - ``token_groups``: the resolved groups per prompt (token positions), ``None`` unguided.
    - ``guidance_records``: one :class:`StepRecord` per guided step (losses, refinement
      iterations, skipped non-finite updates).
    """

    images: Any
    nsfw_content_detected: list[bool] | None = None
    attention_maps: dict[int, torch.Tensor] | None = None
    token_groups: list[list[TokenGroup]] | None = None
    guidance_records: list[StepRecord] | None = None


def match_negative_prompt(negative_prompt, prompts: list[str]):
    """A single negative prompt for a list of prompts, as diffusers expects (same type)."""
    if isinstance(negative_prompt, str):
        return [negative_prompt] * len(prompts)
    return negative_prompt


def guided_output(out, session, guider, return_dict: bool):
    """A guided call's result: the output object, or the stock tuple (warning when maps were
    asked for, which only the object holds)."""
    if return_dict:
        return _output(out, session, guider)
    if guider.keep_attention_maps:
        logger.warning("return_attention_maps=True has no effect with return_dict=False: the maps and the "
                       "guidance records are only in the output object.")
    return out


def tensor_inputs_of(callback, requested: Sequence[str] | None) -> list[str]:
    """The tensors the loop hands the callbacks: the user's, and ``latents`` for guidance."""
    names = list(requested or ["latents"])
    if isinstance(callback, (PipelineCallback, MultiPipelineCallbacks)):
        names = list(callback.tensor_inputs)
    if "latents" not in names:
        names.append("latents")
    return names


def _output(out: tuple, session: GuidanceSession | None = None, guider: Guider | None = None):
    """The stock pipeline's tuple as a :class:`GuidedPipelineOutput` (SDXL's has no nsfw entry)."""
    nsfw = out[1] if len(out) > 1 else None
    if guider is None:
        return GuidedPipelineOutput(images=out[0], nsfw_content_detected=nsfw)
    return GuidedPipelineOutput(
        images=out[0],
        nsfw_content_detected=nsfw,
        attention_maps=guider.attention_maps if guider.keep_attention_maps else None,
        token_groups=session.groups,
        guidance_records=guider.records,
    )


class GuidedPipelineMixin:
    """The guided ``__call__`` of the SD and SDXL pipelines, over the stock ``__call__``.

    A pipeline's ``__call__`` splits its arguments in two: ``passed`` go to the stock call
    unchanged on both paths (sizes, steps, scheduler and CFG settings, ...); ``prepared``
    (prompts, embeddings, latents, callbacks) the guided path replaces with what it computes.
    Each pipeline provides ``_default_image_size() -> (height, width)`` and
    ``_encode_for_guidance(prompts, passed, prepared, tensor_inputs, do_cfg, device)``, which
    checks the inputs as the stock ``__call__`` does, encodes the prompts, and returns the
    stock call's embedding arguments and the UNet's ``added_cond_kwargs`` (or ``None``).
    """

    @classmethod
    def from_pipe(cls, pipeline, **kwargs):
        """diffusers' ``from_pipe``, but keeping each component's dtype when none is given:
        diffusers casts the shared components, the caller's too, to one dtype (float32 by
        default), which would also round an fp16 model's float32 VAE through float16."""
        if "torch_dtype" in kwargs or "dtype" in kwargs:
            return super().from_pipe(pipeline, **kwargs)
        token = _KEEP_DTYPES.set(True)
        try:
            return super().from_pipe(pipeline, **kwargs)
        finally:
            _KEEP_DTYPES.reset(token)

    def to(self, *args, **kwargs):
        if _KEEP_DTYPES.get() and not args and set(kwargs) == {"dtype"}:
            return self  # from_pipe's closing cast (see from_pipe)
        return super().to(*args, **kwargs)

    def to_json_string(self) -> str:
        """The config ``save_pretrained`` writes to ``model_index.json``, naming the stock
        pipeline class: the folder is a stock pipeline's, which ``DiffusionPipeline`` and the
        AutoPipelines load (and a guided class loads too, as it loads any stock folder)."""
        config = json.loads(super().to_json_string())
        config["_class_name"] = next(c for c in type(self).__mro__ if c.__module__.startswith("diffusers.")).__name__
        return json.dumps(config, indent=2, sort_keys=True) + "\n"

    def _dispatch(self, passed: dict, prepared: dict, return_dict: bool, guidance, token_groups, **options):
        """A pipeline ``__call__``'s body: the stock call without guidance, else the guided one.
        ``passed`` go to the stock call as given; ``prepared`` are what the guided path replaces."""
        if guidance is None:
            return self._call_stock(passed, prepared, return_dict)
        session = self._start_guidance(
            guidance, prepared["prompt"], token_groups, prepared["num_images_per_prompt"], passed, **options
        )
        return self._call_guided(session, passed, prepared, return_dict)

    def _call_stock(self, passed: dict, prepared: dict, return_dict: bool):
        """The unguided call: exactly diffusers' output."""
        prepared = dict(prepared)
        prepared["callback_on_step_end_tensor_inputs"] = prepared["callback_on_step_end_tensor_inputs"] or ["latents"]
        out = super().__call__(**passed, **prepared, return_dict=False)
        return _output(out) if return_dict else out

    def _start_guidance(self, guidance, prompt, token_groups, num_images_per_prompt: int, passed: dict, **options):
        """Validate a guided call's inputs; resolve the method and the token groups."""
        check_supported_unet(self.unet)
        check_guidable_loop(self)
        if passed.get("ip_adapter_image") is not None or passed.get("ip_adapter_image_embeds") is not None:
            raise ValueError("Attention guidance does not support IP-Adapter inputs yet; drop ip_adapter_image.")
        tokenizer = getattr(self, "tokenizer", None) or getattr(self, "tokenizer_2", None)
        return GuidanceSession.start(tokenizer, guidance, prompt, token_groups, num_images_per_prompt, **options)

    def _call_guided(self, session: GuidanceSession, passed: dict, prepared: dict, return_dict: bool):
        """Encode, draw the latents, guide step 0, then run the stock loop with the step guidance."""
        user_callback = prepared["callback_on_step_end"]
        tensor_inputs = tensor_inputs_of(user_callback, prepared["callback_on_step_end_tensor_inputs"])
        default_height, default_width = self._default_image_size()
        passed = {**passed, "height": passed["height"] or default_height, "width": passed["width"] or default_width}
        device = self._execution_device
        do_cfg = passed["guidance_scale"] > 1 and self.unet.config.time_cond_proj_dim is None
        # Checks first: bad sizes or callback names fail before the (expensive) step-0 guidance.
        embeds, added_cond_kwargs = self._encode_for_guidance(
            session.prompts, passed, prepared, tensor_inputs, do_cfg, device
        )
        timesteps, _ = retrieve_timesteps(
            self.scheduler, passed["num_inference_steps"], device, passed["timesteps"], passed["sigmas"]
        )
        prompt_embeds = embeds["prompt_embeds"]
        session.check_embeds_rows(prompt_embeds.shape[0])
        session.check_latents_rows(prepared["latents"])
        batch = prompt_embeds.shape[0]
        latents = self.prepare_latents(
            batch, self.unet.config.in_channels, passed["height"], passed["width"], prompt_embeds.dtype, device,
            passed["generator"], prepared["latents"],
        )
        conditioning = session.conditioning(
            prompt_embeds,
            added_cond_kwargs=added_cond_kwargs,
            cross_attention_kwargs=passed["cross_attention_kwargs"],
            timestep_cond=guidance_scale_embedding(self, passed["guidance_scale"], batch, device, latents.dtype),
        )
        guider = session.guider(self, conditioning, latents, len(timesteps))
        latents = guider.step(latents, timesteps[0], 0)
        init_sigma = self.scheduler.init_noise_sigma
        # The stock prepare_latents multiplies given latents by init_noise_sigma again.
        if not (isinstance(init_sigma, (int, float)) and init_sigma == 1):
            latents = latents / init_sigma
        out = super().__call__(
            **passed,
            **embeds,
            latents=latents,
            callback_on_step_end=StepGuidance(guider, timesteps, 0, user_callback),
            callback_on_step_end_tensor_inputs=tensor_inputs,
            return_dict=False,
        )
        return guided_output(out, session, guider, return_dict)
