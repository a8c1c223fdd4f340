"""The guidance engine for MMDiT transformers (SD3 / SD3.5, Flux.1).

:class:`JointGuider` is the UNet :class:`~.engine.Guider` with another forward: the
pipeline gives a function that runs the transformer on the conditional branch, the maps
come from the joint-attention blocks of :mod:`.joint_attention`, and the schedule is read
as fractions of the trajectory (flow models run 4 to 50 steps). Losses, updates,
refinement, skipped non-finite updates and records are the UNet engine's.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Sequence

import torch

from .engine import (
    GuidanceConditioning,
    Guider,
    _checkpointing_off,
    _compute_dtype_kept,
    _frozen_parameters,
    can_truncate,
    checkpointed_modules,
    layerwise_casting_hooks,
    lora_layers,
    stopping_early,
)
from .joint_attention import JointAttentionRecorder, TextSequence, joint_recording_processors, select_blocks
from .methods import GuidanceMethod
from .schedule import as_fractions


class JointGuider(Guider):
    """Applies ``method`` during one MMDiT generation.

    - ``run_transformer(latents, t)``: runs the transformer on the conditional branch of the
      whole batch (the pipeline knows its inputs: pooled embeddings, Flux's ids and
      distilled guidance, ...); its output is not read.
    - ``grid_hw``: the patch grid of the image tokens; ``blocks``: block names or ints
      (:func:`~.joint_attention.select_blocks`, ``None`` for the default); ``text``: the
      text sequence the loss reads; ``text_len``: the model's whole text sequence length.
    - ``absolute_steps=False`` (default) reads the method's int step indices as fractions
      of 50 steps (:func:`as_fractions`); ``True`` keeps them as loop indices.
    """

    def __init__(
        self,
        method: GuidanceMethod,
        transformer,
        run_transformer: Callable[[torch.Tensor, torch.Tensor], object],
        conditioning: GuidanceConditioning,
        grid_hw: tuple[int, int],
        blocks: Sequence[int | str] | None,
        text: TextSequence,
        text_len: int,
        num_inference_steps: int,
        window_mode: str = "prompt",
        record_loss_after_update: bool = False,
        keep_attention_maps: bool = False,
        truncate_forward: bool = True,
        absolute_steps: bool = False,
    ):
        # Guider.__init__ selects UNet layers; the state every guider keeps is set the same way.
        self.transformer = transformer
        self.weights = list(transformer.parameters())
        self.checkpointed = checkpointed_modules(transformer)
        self.cast_layers = layerwise_casting_hooks(transformer)
        self.run_transformer = run_transformer
        self.text = text
        self.attn_res = tuple(int(s) for s in grid_hw)
        self.layer_names = select_blocks(transformer, blocks)
        self.truncate_forward = can_truncate(truncate_forward, transformer)
        self.adapter_layers = lora_layers(transformer) if self.truncate_forward else []
        self.recorder = JointAttentionRecorder(
            self.attn_res, text_len, stop_after=len(self.layer_names) if self.truncate_forward else None
        )
        schedule = method.schedule if absolute_steps else as_fractions(method.schedule)
        self._start_run(method, conditioning, schedule, num_inference_steps, window_mode, text.map_tokens,
                        record_loss_after_update, keep_attention_maps)

    forwards_row_subsets = False  # run_transformer is the pipeline's closure over the whole batch

    def _forward_maps(self, latents: torch.Tensor, t, rows: list[int] | None = None) -> torch.Tensor:
        with self.recorder.recording():
            with stopping_early(self.adapter_layers):
                self.run_transformer(latents, t)
            return self.recorder.aggregate()

    @contextmanager
    def _guiding(self):
        with (
            torch.enable_grad(),
            _frozen_parameters(self.weights),
            _checkpointing_off(self.checkpointed),
            _compute_dtype_kept(self.cast_layers),
            joint_recording_processors(self.transformer, self.layer_names, self.recorder, self.text),
        ):
            yield
