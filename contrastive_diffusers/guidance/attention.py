"""Recording cross-attention maps of selected UNet layers, keyed by layer name.

Only the cross-attention layers whose maps the loss reads get a recording processor; every
other layer keeps the processor it had (SDPA, xformers, ...). A recording processor
computes attention explicitly only while its recorder is active (the guidance forward);
otherwise it calls the layer's original processor, so the denoising forward stays fast.
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import torch

_BLOCK = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.|^(mid_block)\.")


def _num_blocks(unet, kind: str) -> int:
    return len(getattr(unet, kind))


def layer_resolutions(unet, latent_hw: tuple[int, int]) -> dict[str, tuple[int, int]]:
    """Map every cross-attention processor name of a ``UNet2DConditionModel`` to the (h, w)
    of its attention map for latents of size ``latent_hw``.

    Down block ``i`` runs at the latent size halved ``i`` times (stride-2 convolutions round
    up), the mid block at the smallest size, up block ``i`` mirrors down block ``n-1-i``.
    """
    n_down = _num_blocks(unet, "down_blocks")
    sizes = [tuple(int(s) for s in latent_hw)]
    for _ in range(n_down - 1):
        sizes.append(tuple(math.ceil(s / 2) for s in sizes[-1]))
    out = {}
    for name in unet.attn_processors:
        if ".attn2." not in name and not name.endswith("attn2.processor"):
            continue  # attn1 is self-attention
        match = _BLOCK.match(name)
        if match is None:
            continue
        if match.group(3):
            level = n_down - 1
        elif match.group(1) == "down_blocks":
            level = int(match.group(2))
        else:
            level = n_down - 1 - int(match.group(2))
        out[name] = sizes[level]
    return out


def default_attn_res(unet, latent_hw: tuple[int, int]) -> tuple[int, int]:
    """The map size the loss reads when none is given: the latents downsampled twice
    (``ceil(latent / 4)``, the image size / 32 for a VAE that downsamples 8 times).

    When no cross-attention layer has maps of that size, the nearest size that one has,
    measured in scale (``|log|`` of the area ratio: a UNet level halves the side, so the
    distance counts levels); on a tie, the finer map, which keeps more spatial detail.
    That gives 16x16 for SD 1.x at 512 px (diffusers' Attend-and-Excite default), 24x24
    for SD 2.x at 768 px, and for SDXL at 1024 px 32x32, the coarser of its two
    cross-attention resolutions, where its 10-layer transformer blocks are. The guided
    pipelines take their default from here.
    """
    return nearest_attn_res(unet, latent_hw, tuple(math.ceil(int(s) / 4) for s in latent_hw))


def nearest_attn_res(unet, latent_hw: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """``target`` when some cross-attention layer has maps of that size, else the nearest size
    that one has, measured in scale (levels), the finer on a tie (see :func:`default_attn_res`)."""
    target = tuple(int(s) for s in target)
    available = set(layer_resolutions(unet, tuple(latent_hw)).values())
    if not available:
        raise ValueError(
            "The UNet has no cross-attention layers, so there are no attention maps to read; "
            "use a text-conditioned UNet2DConditionModel."
        )
    if target in available:
        return target
    area = target[0] * target[1]
    # Rounded so that sizes equally many levels away tie exactly despite float noise.
    return min(available, key=lambda hw: (round(abs(math.log(hw[0] * hw[1] / area)), 9), -hw[0] * hw[1]))


def select_layers(unet, latent_hw: tuple[int, int], attn_res: tuple[int, int]) -> list[str]:
    """Names of the cross-attention layers whose maps are ``attn_res``; a clear error if none."""
    resolutions = layer_resolutions(unet, latent_hw)
    attn_res = tuple(int(s) for s in attn_res)
    names = [name for name, hw in resolutions.items() if hw == attn_res]
    if not names:
        available = sorted(set(resolutions.values()), reverse=True)
        listed = ", ".join(f"{h}x{w}" for h, w in available) or "none"
        raise ValueError(
            f"No cross-attention layer has {attn_res[0]}x{attn_res[1]} maps for "
            f"{latent_hw[0]}x{latent_hw[1]} latents; cross-attention map sizes at this image size: "
            f"{listed}. Pass one of them as attn_res, or change height/width."
        )
    return names


class ForwardComplete(Exception):
    """Raised inside the UNet once every recorded layer has its map: the rest of the
    forward (the high-resolution decoder blocks) cannot change the loss, so it is skipped."""


class AttentionRecorder:
    """Holds the maps recorded during one guidance forward.

    Per layer it keeps the attention probabilities summed over heads, ``(batch, h*w, tokens)``,
    and the head count, so that :meth:`aggregate` averages over every (layer, head) pair,
    as diffusers' Attend-and-Excite store does. With ``stop_after=n`` the forward is cut
    (:class:`ForwardComplete`) as soon as ``n`` layers are recorded.
    """

    def __init__(self, attn_res: tuple[int, int], stop_after: int | None = None):
        self.attn_res = tuple(int(s) for s in attn_res)
        self.stop_after = stop_after
        self.active = False
        self.maps: dict[str, tuple[torch.Tensor, int]] = {}

    def record(self, name: str, probs: torch.Tensor, batch: int, heads: int) -> None:
        expected = self.attn_res[0] * self.attn_res[1]
        if probs.shape[1] != expected:
            raise RuntimeError(
                f"Layer {name} produced {probs.shape[1]} query positions, expected {expected} for "
                f"attn_res={self.attn_res}; the UNet's layout differs from what layer_resolutions assumes."
            )
        summed = probs.reshape(batch, heads, probs.shape[1], probs.shape[2]).sum(1)
        self.maps[name] = (summed, heads)
        if self.stop_after is not None and len(self.maps) >= self.stop_after:
            raise ForwardComplete

    def clear(self) -> None:
        self.maps = {}

    def aggregate(self) -> torch.Tensor:
        """Average map over recorded layers and heads: ``(batch, h, w, tokens)`` in float32."""
        if not self.maps:
            raise RuntimeError("No attention was recorded; was the guidance forward run inside `recording()`?")
        total = None
        count = 0
        for summed, heads in self.maps.values():
            summed = summed.float()
            total = summed if total is None else total + summed
            count += heads
        mean = total / count
        return mean.reshape(mean.shape[0], self.attn_res[0], self.attn_res[1], mean.shape[-1])

    @contextmanager
    def recording(self) -> Iterator["AttentionRecorder"]:
        self.clear()
        self.active = True
        try:
            yield self
        finally:
            self.active = False


class RecordingAttnProcessor:
    """Explicit attention that records its probabilities while the recorder is active;
    the layer's original processor otherwise."""

    def __init__(self, recorder: AttentionRecorder, name: str, original):
        self.recorder = recorder
        self.name = name
        self.original = original

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        if not self.recorder.active or encoder_hidden_states is None:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        # Same computation as diffusers' AttnProcessor, with the probabilities kept.
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = encoder_hidden_states.shape
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        query = attn.head_to_batch_dim(query)
        key = attn.head_to_batch_dim(key)
        value = attn.head_to_batch_dim(value)
        probs = attn.get_attention_scores(query, key, attention_mask)
        self.recorder.record(self.name, probs, batch_size, attn.heads)
        hidden_states = torch.bmm(probs, value)
        hidden_states = attn.batch_to_head_dim(hidden_states)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


@contextmanager
def swapped_processors(model, make: Callable[[str, Any], Any], names: Sequence[str]) -> Iterator[None]:
    """Give the attention layers ``names`` (keys of ``model.attn_processors``) the processor
    ``make(name, original)`` and restore the originals on exit, also when the body raises.
    Only those layers are touched: rebuilding the whole processor table (``attn_processors`` /
    ``set_attn_processor``) at every guided step cost ~10 ms on SD 1.5, ~30 ms on SDXL."""
    layers = [(name, model.get_submodule(name.removesuffix(".processor"))) for name in names]
    originals = [(layer, layer.processor) for _, layer in layers]
    try:
        for name, layer in layers:
            layer.set_processor(make(name, layer.processor))
        yield
    finally:
        for layer, original in originals:
            layer.set_processor(original)


@contextmanager
def recording_processors(unet, layer_names: list[str], recorder: AttentionRecorder):
    """Install recording processors on ``layer_names`` and restore the originals on exit,
    also when the body raises."""
    with swapped_processors(unet, lambda name, original: RecordingAttnProcessor(recorder, name, original), layer_names):
        yield recorder
