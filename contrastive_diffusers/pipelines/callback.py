"""Guidance for a pipeline you already have, through its ``callback_on_step_end``."""

from __future__ import annotations

import torch
from diffusers.callbacks import PipelineCallback

from ..guidance.engine import Guider
from ..guidance.methods import GuidanceMethod
from .session import (
    GuidanceSession,
    StepGuidance,
    check_guidable_loop,
    check_supported_unet,
    guidance_scale_embedding,
)


def _check_pipeline(pipeline) -> None:
    """Refuse pipelines whose UNet forward the guidance forward cannot repeat."""
    name = type(pipeline).__name__
    if getattr(pipeline, "unet", None) is None:  # SD3 / Flux: joint attention in a transformer
        raise ValueError(
            f"GuidanceCallback guides UNet pipelines; {name} has no UNet. For SD3 and Flux "
            "use GuidedStableDiffusion3Pipeline.from_pipe(pipe) or GuidedFluxPipeline.from_pipe(pipe)."
        )
    for component in ("controlnet", "adapter"):  # their residuals enter the UNet; the guidance forward has none
        if getattr(pipeline, component, None) is not None:
            raise ValueError(
                f"GuidanceCallback does not support pipelines with a {component} ({name}): the "
                "guidance forward would read attention maps of a UNet without its residuals."
            )
    vae = getattr(pipeline, "vae", None)  # an inpainting UNet's extra channels: refused when built, not at step 1
    check_supported_unet(pipeline.unet, getattr(getattr(vae, "config", None), "latent_channels", None))
    if getattr(pipeline, "pag_applied_layers", None) is not None:
        # PAG swaps the UNet's self-attention processors during its call, for a batch with a perturbed row
        raise ValueError(
            f"GuidanceCallback does not support perturbed-attention guidance ({name}): PAG's attention "
            "processors expect its perturbed batch, which the guidance forward does not have. Use the pipeline "
            "without PAG (e.g. GuidedStableDiffusionPipeline.from_pipe(pipe))."
        )


def _cond_half(tensor: torch.Tensor | None, do_cfg: bool) -> torch.Tensor | None:
    """The conditional rows of a CFG batch (diffusers stacks [uncond, cond])."""
    if tensor is None or not do_cfg:
        return tensor
    return tensor.chunk(2)[1]


def _loop_start(timesteps, first_timestep, loop_length: int | None) -> int:
    """Where the stock loop starts in ``scheduler.timesteps``, seen from its first callback.

    txt2img loops start at 0 (also when SDXL's ``denoising_end`` shortens them); img2img
    loops run over the last ``loop_length`` entries. Among the positions holding the first
    timestep (PNDM repeats one), prefer the img2img position, else the first."""
    matches = [int(i) for i in (timesteps == first_timestep).nonzero().flatten()]
    if loop_length and len(timesteps) - loop_length in matches:
        return len(timesteps) - loop_length
    return matches[0] if matches else 0


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
      (or add other UNet inputs: ControlNet and T2I-Adapter pipelines are refused) are not supported.
    - It starts afresh at every call (step 0 of a new loop), so one instance can serve
      several calls; ``records`` and ``attention_maps`` describe the latest call.
    - IP-Adapter, UNets with extra input channels (inpainting), second-order schedulers
      (Heun, KDPM2) and enabled diffusers caches are refused.
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
        _check_pipeline(pipeline)
        check_guidable_loop(pipeline)
        self.session = GuidanceSession.start(
            getattr(pipeline, "tokenizer", None) or getattr(pipeline, "tokenizer_2", None),  # SDXL refiner: only the 2nd
            guidance,
            prompt,
            token_groups,
            num_images_per_prompt,
            attn_res=attn_res,
            return_attention_maps=return_attention_maps,
        )
        exposed = getattr(pipeline, "_callback_tensor_inputs", [])
        self.is_sdxl = "add_time_ids" in exposed
        needed = ["latents", "prompt_embeds"] + (["add_text_embeds", "add_time_ids"] if self.is_sdxl else [])
        missing = [n for n in needed if n not in exposed]
        if missing:
            raise ValueError(
                f"{type(pipeline).__name__} does not expose {missing} to callbacks, so GuidanceCallback cannot "
                "read the conditioning; use GuidedStableDiffusionPipeline.from_pipe(pipe) instead."
            )
        self._needed = needed
        self.guider: Guider | None = None
        self._step_guidance: StepGuidance | None = None

    @property
    def tensor_inputs(self) -> list[str]:
        return list(self._needed)

    @property
    def method(self) -> GuidanceMethod:
        return self.session.method

    @property
    def groups(self):
        """The resolved token groups per prompt."""
        return self.session.groups

    @property
    def attention_maps(self):
        return self.guider.attention_maps if self.guider is not None else None

    @property
    def records(self):
        return self.guider.records if self.guider is not None else []

    def _build(self, pipeline, timestep, callback_kwargs):
        """A fresh guider for the loop that just started, from the loop's own tensors."""
        do_cfg = bool(getattr(pipeline, "do_classifier_free_guidance", False))
        latents = callback_kwargs["latents"]
        images = len(self.session.prompts) * self.session.images_per_prompt
        embeds = _cond_half(callback_kwargs["prompt_embeds"], do_cfg)
        if embeds.shape[0] != latents.shape[0] or latents.shape[0] != images:
            raise ValueError(
                f"GuidanceCallback was built for {images} images ({len(self.session.prompts)} prompts x "
                f"num_images_per_prompt), but the pipeline runs {latents.shape[0]} latents with {embeds.shape[0]} "
                "rows of conditional embeddings; pass the same prompt and num_images_per_prompt to both."
            )
        # the callback may serve another pipeline than it was built on (from_pipe shares the UNet)
        _check_pipeline(pipeline)
        check_supported_unet(pipeline.unet, latents.shape[1])
        check_guidable_loop(pipeline)  # the scheduler may have been swapped since __init__
        added = None
        if self.is_sdxl:
            added = {
                "text_embeds": _cond_half(callback_kwargs["add_text_embeds"], do_cfg),
                "time_ids": _cond_half(callback_kwargs["add_time_ids"], do_cfg),
            }
        conditioning = self.session.conditioning(
            embeds,
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
        self.guider = self.session.guider(pipeline, conditioning, latents, len(timesteps) - begin)
        self._step_guidance = StepGuidance(self.guider, timesteps, begin)

    def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
        if self._step_guidance is None or step_index == 0:
            self._build(pipeline, timestep, callback_kwargs)
        return self._step_guidance(pipeline, step_index, timestep, callback_kwargs)
