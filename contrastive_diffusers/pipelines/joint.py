"""What the SD3 and Flux guided pipelines share: the guided call over an MMDiT transformer.

As for the UNet pipelines (:mod:`.guided`), a guided call resolves a
:class:`~.session.GuidanceSession` (token groups on the text sequence the loss reads), encodes
the prompts and draws the initial latents as the stock ``__call__`` would, computes the
stock call's timesteps, guides step 0, and hands the guided latents and the embeddings to the
stock ``__call__``, whose loop guides the later steps through ``callback_on_step_end``.
Each pipeline provides what differs:

- ``_word_lookup(passed, options)``: the tokenizer (or :class:`~..guidance.t5_tokens.T5WordLookup`)
  token groups resolve on; ``_window_tokenizers()``: the tokenizers the window mode reads.
- ``_encode_for_guidance(prompts, passed, prepared, tensor_inputs, device)``: checks the
  inputs as the stock call does and encodes: ``(stock embedding kwargs, conditional
  forward inputs)``.
- ``_guidance_latents(batch, dtype, passed, prepared, device)``: ``(latents, extra forward inputs)``.
- ``_guidance_timesteps(passed, latents, device)``: the stock call's timesteps.
- ``_text_sequence(passed, inputs, session)``: the :class:`~..guidance.joint_attention.TextSequence`
  the loss reads and the model's whole text length; ``_patch_grid(latents, passed)``.
- ``_run_transformer(inputs, latents, t)``: the conditional forward.
"""

from __future__ import annotations

import inspect

import torch

from ..guidance.joint_attention import TextSequence
from .guided import GuidedPipelineMixin, guided_output, tensor_inputs_of
from .session import GuidanceSession, StepGuidance, check_guidable_loop


class GuidedJointPipelineMixin(GuidedPipelineMixin):
    """The guided ``__call__`` of the MMDiT pipelines; ``passed`` / ``prepared`` as in
    :class:`~.guided.GuidedPipelineMixin` (plain calls go to the stock ``__call__`` as there)."""

    def _start_guidance(self, guidance, prompt, token_groups, num_images_per_prompt: int, passed: dict, **options):
        """Validate a guided call's inputs; resolve the method and the token groups on the
        text sequence the loss reads."""
        ip_adapter = ("ip_adapter_image", "ip_adapter_image_embeds", "negative_ip_adapter_image",
                      "negative_ip_adapter_image_embeds")
        if any(passed.get(k) is not None for k in ip_adapter):
            raise ValueError("Attention guidance does not support IP-Adapter inputs yet; drop ip_adapter_image "
                             "(and its negative_/_embeds forms).")
        if (passed.get("joint_attention_kwargs") or {}).get("attention_mask") is not None:
            # the recorded maps are the unmasked softmax: the loss would read keys the block ignores
            raise ValueError("Attention guidance does not support an attention_mask in joint_attention_kwargs; "
                             "drop it, or call without guidance.")
        check_guidable_loop(self)
        lookup = self._word_lookup(passed, options)
        return GuidanceSession.start(lookup, guidance, prompt, token_groups, num_images_per_prompt, **options)

    def _check_stock_keywords(self, passed: dict) -> None:
        """The stock ``__call__`` refuses an unknown keyword (``num_inference_step``); here at
        once, as there, not after step 0 has been guided."""
        parameters = inspect.signature(super(GuidedPipelineMixin, self).__call__).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return
        unknown = [name for name in passed if name not in parameters]
        if unknown:
            raise TypeError(f"{type(self).__name__}.__call__() got an unexpected keyword argument {unknown[0]!r}")

    def _call_guided(self, session: GuidanceSession, passed: dict, prepared: dict, return_dict: bool):
        """Encode, draw the latents, guide step 0, then run the stock loop with the step guidance."""
        user_callback = prepared["callback_on_step_end"]
        tensor_inputs = tensor_inputs_of(user_callback, prepared["callback_on_step_end_tensor_inputs"])
        default_height, default_width = self._default_image_size()
        passed = {**passed, "height": passed["height"] or default_height, "width": passed["width"] or default_width}
        device = self._execution_device
        # Checks first: bad sizes, callback names or keywords fail before the (expensive) step-0 guidance.
        self._check_stock_keywords(passed)
        self._check_prompt_texts(session, prepared)
        if (prepared["prompt_embeds"] is None) != (prepared["pooled_prompt_embeds"] is None):
            raise ValueError("Pass prompt_embeds and pooled_prompt_embeds together (both come from encode_prompt).")
        embeds, inputs = self._encode_for_guidance(session.prompts, passed, prepared, tensor_inputs, device)
        prompt_embeds = embeds["prompt_embeds"]
        session.check_embeds_rows(prompt_embeds.shape[0])
        session.check_latents_rows(prepared["latents"])
        latents, extra = self._guidance_latents(prompt_embeds.shape[0], prompt_embeds.dtype, passed, prepared, device)
        inputs = {**inputs, **extra}
        timesteps = self._guidance_timesteps(passed, latents, device)
        text, text_len = self._text_sequence(passed, inputs, session)
        guider = session.joint_guider(
            self.transformer,
            lambda z, t: self._run_transformer(inputs, z, t),
            session.conditioning(prompt_embeds),
            grid_hw=self._patch_grid(latents, passed),
            text=text,
            text_len=text_len,
            num_steps=len(timesteps),
            tokenizers=self._window_tokenizers(),
        )
        latents = guider.step(latents, timesteps[0], 0)
        out = super().__call__(
            **passed,
            **embeds,
            latents=latents,
            callback_on_step_end=StepGuidance(guider, timesteps, 0, user_callback),
            callback_on_step_end_tensor_inputs=tensor_inputs,
            return_dict=False,
        )
        return guided_output(out, session, guider, return_dict)

    def _check_prompt_texts(self, session: GuidanceSession, prepared: dict) -> None:
        """Token groups are found in ``prompt``; refuse a call whose loss would read another text
        (Flux's T5 is encoded from ``prompt_2``, SD3's T5 from ``prompt_3``, its CLIP-G half from
        ``prompt_2``): the groups' positions would point at other words, or at padding."""
        for name in self._texts_the_loss_reads(session):
            other = prepared.get(name)
            if other is None:
                continue
            others = [other] * len(session.prompts) if isinstance(other, str) else list(other)
            if others != list(session.prompts):
                raise ValueError(
                    f"Token groups are found in `prompt`, but the text the guidance loss reads is encoded from "
                    f"`{name}` ({other!r}); pass the same text as `prompt`, or leave `{name}` out, to guide."
                )

    def token_lookup(self, max_sequence_length: int | None = None, text_sequence: str = "clip"):
        """The tokenizer (or T5 word lookup) whose positions token groups name in a call with
        these settings (``None``: the call's default ``max_sequence_length``); resolve groups
        on it with :func:`~contrastive_diffusers.guidance.tokens.resolve_groups`."""
        if max_sequence_length is None:
            max_sequence_length = self.default_max_sequence_length()
        return self._word_lookup({"max_sequence_length": max_sequence_length}, {"text_sequence": text_sequence})

    def default_max_sequence_length(self) -> int:
        """The ``max_sequence_length`` of a call that does not give one."""
        return inspect.signature(self.__call__).parameters["max_sequence_length"].default

    def _default_image_size(self) -> tuple[int, int]:
        size = self.default_sample_size * self.vae_scale_factor
        return size, size


def clip_then_t5(clip_length: int, t5_length: int, sequence: str, total: int) -> tuple[TextSequence, int]:
    """SD3's joint text is CLIP's tokens, then T5's: the slice ``sequence`` ("clip" or "t5")
    names, and the whole text length."""
    if sequence == "clip":
        return TextSequence(0, clip_length, start_slot=True), total
    if clip_length + t5_length != total:
        raise ValueError(
            f"The prompt embeddings hold {total} tokens, not CLIP's {clip_length} followed by T5's {t5_length}; "
            "pass max_sequence_length as the embeddings were made with."
        )
    return TextSequence(clip_length, t5_length, start_slot=False), total


def expand_timestep(t, latents: torch.Tensor) -> torch.Tensor:
    """``t`` broadcast to the batch, as the stock loops do."""
    t = t if torch.is_tensor(t) else torch.tensor(t, device=latents.device)
    return t.to(latents.device).expand(latents.shape[0])
