"""Image-to-text attention maps from MMDiT joint attention (SD3 / SD3.5, Flux.1).

MMDiT models have no cross-attention layers: image and text tokens attend jointly. The
loss reads, for each image token (one per latent patch), its attention over the tokens of
one text sequence (:class:`TextSequence`), averaged over heads and the chosen blocks and
reshaped to the patch grid: ``(batch, h, w, tokens)``, the same form as a UNet's
cross-attention maps.

**Softmax choice.** The map of a block is ``softmax(q_img · k_text / sqrt(head_dim))`` over
the keys of the chosen text sequence only, not the slice of the block's full softmax over
image and text keys. So every image token's map is a distribution over the prompt's tokens,
as in a UNet's cross-attention (which the losses were written for), and it costs
``image_tokens x text_tokens`` per head instead of ``image_tokens x (image + text)``.
Queries and keys are taken as the block computes them (projections, qk-norm and, for Flux,
RoPE); the block's output still comes from its own processor (SDPA / the attention
dispatcher), untouched. Only the recorded blocks compute maps, and only during the guidance
forward, which stops after the last of them.

Recorded blocks: SD3's joint blocks (``transformer_blocks.i``; SD3.5's second, image-only
attention has no text and is never read), Flux's double-stream blocks
(``transformer_blocks.i``) and single-stream blocks (``single_transformer_blocks.j``, where
text and image share one sequence, text first).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import apply_rotary_emb

from .attention import AttentionRecorder, swapped_processors

_JOINT, _SINGLE = "transformer_blocks", "single_transformer_blocks"


@dataclass(frozen=True)
class TextSequence:
    """Where the loss's text tokens lie in the model's text sequence.

    ``start``/``length``: the slice of the joint text (SD3: CLIP's 77 tokens first, then T5's;
    Flux: T5 only). ``start_slot``: whether the sequence has its own start token at position
    0 (CLIP). T5 has none, so a zero column is put in front of its map: position ``p`` is
    always the ``p``-th prompt token, for CLIP and T5 alike, as token groups count them.
    """

    start: int
    length: int
    start_slot: bool = True

    @property
    def map_tokens(self) -> int:
        """Size of the map's token axis."""
        return self.length + (0 if self.start_slot else 1)


def joint_blocks(transformer) -> list[str]:
    """Names of the blocks whose attention mixes image and text, in forward order."""
    names = [f"{_JOINT}.{i}" for i in range(len(transformer.transformer_blocks))]
    names += [f"{_SINGLE}.{i}" for i in range(len(getattr(transformer, _SINGLE, None) or []))]
    return names


def default_blocks(transformer) -> list[str]:
    """The blocks the loss reads when none are given: the middle third of the joint (SD3) or
    double-stream (Flux) blocks, at least one, so that the guidance forward is cut early.
    Measured on the trained ShapesWorld MMDiT model (``benchmarks/mmdit_block_maps.py``,
    ``benchmarks/results/mmdit/block_maps.md``): no block's maps localise the objects there
    (0.10-0.11 of a noun's map inside its object's box, 0.10 for a uniform map, at every step
    read), so the measurement picks no block over another and this default stays."""
    n = len(transformer.transformer_blocks)
    start = n // 3
    stop = max(start + 1, (2 * n) // 3)
    return [f"{_JOINT}.{i}" for i in range(start, stop)]


def select_blocks(transformer, blocks: Sequence[int | str] | None) -> list[str]:
    """Block names from ``blocks`` (names as :func:`joint_blocks` gives them, or ints for
    ``transformer_blocks.i``); ``None``: :func:`default_blocks`. Sorted in forward order."""
    available = joint_blocks(transformer)
    if blocks is None:
        return default_blocks(transformer)
    if isinstance(blocks, (str, int)):
        blocks = [blocks]
    names = []
    for block in blocks:
        name = f"{_JOINT}.{block}" if isinstance(block, int) and not isinstance(block, bool) else block
        if name not in available:
            raise ValueError(
                f"No joint-attention block {block!r} in this transformer; its blocks are {available[0]} .. "
                f"{available[-1]} ({len(available)} in all). Pass names like 'transformer_blocks.3' or ints."
            )
        names.append(name)
    if not names:
        raise ValueError("blocks is empty; pass at least one block, or None for the default blocks.")
    return sorted(set(names), key=available.index)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``(batch, seq, heads * dim)`` -> ``(batch, seq, heads, dim)``."""
    return x.unflatten(-1, (heads, -1))


def _rope(x: torch.Tensor, rotary, rows: slice) -> torch.Tensor:
    """Flux's rotary embedding on ``x`` ``(batch, seq, heads, dim)`` for ``rows`` of the joint sequence."""
    if rotary is None:
        return x
    cos, sin = rotary
    return apply_rotary_emb(x, (cos[rows], sin[rows]), sequence_dim=1)


def image_text_attention(
    attn, hidden_states, encoder_hidden_states, text: TextSequence, rotary=None, text_len: int | None = None
) -> torch.Tensor:
    """``(batch, heads, image_tokens, text.length)`` float32 softmax of image queries over the
    text keys of ``text``, computed as the block's processor computes queries and keys.

    ``encoder_hidden_states=None`` means a Flux single-stream block: ``hidden_states`` holds
    ``text_len`` text tokens, then the image tokens."""
    if getattr(attn, "fused_projections", False):
        raise ValueError("Attention guidance reads to_q/to_k; call transformer.unfuse_qkv_projections() first.")
    heads = attn.heads
    if encoder_hidden_states is None:  # single-stream: one sequence, text first
        image, txt = hidden_states[:, text_len:], hidden_states[:, :text_len]
        query, key = attn.to_q(image), attn.to_k(txt)
        norm_q, norm_k = attn.norm_q, attn.norm_k
    else:
        query, key = attn.to_q(hidden_states), attn.add_k_proj(encoder_hidden_states)
        norm_q, norm_k = attn.norm_q, attn.norm_added_k
        text_len = encoder_hidden_states.shape[1]
    query, key = _heads(query, heads), _heads(key, heads)
    if norm_q is not None:
        query = norm_q(query)
    if norm_k is not None:
        key = norm_k(key)
    # Flux's rotary table covers [text; image]; SD3 passes none.
    query = _rope(query, rotary, slice(text_len, None))
    key = _rope(key, rotary, slice(0, text_len))
    key = key[:, text.start : text.start + text.length]
    scale = query.shape[-1] ** -0.5  # SDPA's default, as the processors use it
    logits = torch.einsum("bqhd,bkhd->bhqk", query.float(), key.float()) * scale
    return logits.softmax(-1)


class JointRecordingProcessor:
    """Records the image-to-text map of one block while the recorder is active, then calls
    the block's own processor for its output (untouched); only the original otherwise."""

    def __init__(self, recorder: AttentionRecorder, name: str, original, text: TextSequence):
        self.recorder = recorder
        self.name = name
        self.original = original
        self.text = text

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        if self.recorder.active:
            rotary = kwargs.get("image_rotary_emb", args[0] if args else None)
            probs = image_text_attention(
                attn, hidden_states, encoder_hidden_states, self.text, rotary, self.recorder.text_len
            )
            if not self.text.start_slot:
                probs = F.pad(probs, (1, 0))
            batch, heads = probs.shape[:2]
            self.recorder.record(self.name, probs.flatten(0, 1), batch, heads)  # may end the forward
        return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)


class JointAttentionRecorder(AttentionRecorder):
    """:class:`~.attention.AttentionRecorder` for patch-grid maps; ``text_len`` is the model's
    whole text sequence length (where a single-stream block's image tokens begin)."""

    def __init__(self, grid_hw: tuple[int, int], text_len: int, stop_after: int | None = None):
        super().__init__(grid_hw, stop_after)
        self.text_len = int(text_len)


@contextmanager
def joint_recording_processors(
    transformer, blocks: Sequence[str], recorder: JointAttentionRecorder, text: TextSequence
) -> Iterator[JointAttentionRecorder]:
    """Install recording processors on ``blocks``' joint attention and restore the originals
    on exit, also when the body raises."""
    def make(name, original):
        return JointRecordingProcessor(recorder, name.removesuffix(".attn.processor"), original, text)

    with swapped_processors(transformer, make, [f"{block}.attn.processor" for block in blocks]):
        yield recorder
