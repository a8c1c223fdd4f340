"""Image-to-text maps of MMDiT joint attention against a hand-computed attention.

Tiny SD3 / Flux transformers from small configs; the reference recomputes each recorded
block's queries and keys from the block's inputs with explicit matrix products, RMS norms,
rotary embeddings (Flux) and a softmax over the chosen text keys (the documented choice).
"""

from __future__ import annotations

import pytest
import torch
from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

from contrastive_diffusers.guidance.attention import ForwardComplete
from contrastive_diffusers.guidance.joint_attention import (
    JointAttentionRecorder,
    TextSequence,
    default_blocks,
    joint_blocks,
    joint_recording_processors,
    select_blocks,
)

HEADS, HEAD_DIM = 2, 8


def _sd3():
    torch.manual_seed(0)
    model = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, num_layers=3, attention_head_dim=HEAD_DIM,
        num_attention_heads=HEADS, joint_attention_dim=16, caption_projection_dim=16, pooled_projection_dim=8,
        out_channels=4, pos_embed_max_size=8, qk_norm="rms_norm", dual_attention_layers=(0,),
    ).eval()
    inputs = dict(
        hidden_states=torch.randn(2, 4, 8, 6),
        encoder_hidden_states=torch.randn(2, 7, 16),
        pooled_projections=torch.randn(2, 8),
        timestep=torch.tensor([500.0, 500.0]),
    )
    return model, inputs


def _flux():
    torch.manual_seed(0)
    model = FluxTransformer2DModel(
        patch_size=1, in_channels=8, num_layers=2, num_single_layers=2, attention_head_dim=HEAD_DIM,
        num_attention_heads=HEADS, joint_attention_dim=16, pooled_projection_dim=8, axes_dims_rope=(2, 2, 4),
    ).eval()
    h, w, text = 3, 4, 6
    img_ids = torch.zeros(h, w, 3)
    img_ids[..., 1] = torch.arange(h)[:, None]
    img_ids[..., 2] = torch.arange(w)[None, :]
    inputs = dict(
        hidden_states=torch.randn(2, h * w, 8),
        encoder_hidden_states=torch.randn(2, text, 16),
        pooled_projections=torch.randn(2, 8),
        timestep=torch.tensor([0.5, 0.5]),
        img_ids=img_ids.reshape(-1, 3),
        txt_ids=torch.zeros(text, 3),
    )
    return model, inputs, (h, w), text


def _rms(x, weight, eps):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _linear(layer, x):
    return x @ layer.weight.T + layer.bias


def _rotate(x, cos, sin):
    """RoPE on (batch, seq, heads, dim) as complex multiplication of consecutive pairs."""
    pairs = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2).contiguous())
    freqs = torch.polar(torch.ones_like(cos[:, ::2]), torch.atan2(sin[:, ::2], cos[:, ::2]))
    return torch.view_as_real(pairs * freqs[None, :, None, :]).flatten(-2)


def _softmax_maps(q, k):
    """(batch, seq_q, heads, dim) x (batch, seq_k, heads, dim) -> head-mean (batch, seq_q, seq_k)."""
    logits = torch.einsum("bqhd,bkhd->bhqk", q, k) / HEAD_DIM**0.5
    e = torch.exp(logits - logits.amax(-1, keepdim=True))
    return (e / e.sum(-1, keepdim=True)).mean(1)


def _capture(module, store, key):
    def hook(mod, args, kwargs):
        store[key] = (args, kwargs)

    return module.register_forward_pre_hook(hook, with_kwargs=True)


def _record(model, inputs, blocks, text, grid, text_len, stop=True):
    recorder = JointAttentionRecorder(grid, text_len, stop_after=len(blocks) if stop else None)
    with joint_recording_processors(model, blocks, recorder, text), recorder.recording():
        try:
            model(**inputs, return_dict=False)
        except ForwardComplete:
            pass
        return recorder.aggregate()


def test_sd3_maps_match_hand_computed_attention_and_cut_the_forward():
    model, inputs = _sd3()
    seen = {}
    handles = [_capture(model.transformer_blocks[i].attn, seen, i) for i in (1, 2)]
    text = TextSequence(0, 5)  # the first 5 of 7 text tokens, as SD3's CLIP part before T5
    with torch.no_grad():
        maps = _record(model, inputs, ["transformer_blocks.1"], text, (4, 3), 7)
    for handle in handles:
        handle.remove()
    assert maps.shape == (2, 4, 3, 5) and maps.dtype == torch.float32
    assert 2 not in seen  # the forward stopped after the recorded block
    attn = model.transformer_blocks[1].attn
    x, c = seen[1][1]["hidden_states"], seen[1][1]["encoder_hidden_states"]
    q = _rms(_linear(attn.to_q, x).unflatten(-1, (HEADS, HEAD_DIM)), attn.norm_q.weight, attn.norm_q.eps)
    k = _rms(_linear(attn.add_k_proj, c).unflatten(-1, (HEADS, HEAD_DIM)), attn.norm_added_k.weight,
             attn.norm_added_k.eps)
    expected = _softmax_maps(q, k[:, :5]).reshape(2, 4, 3, 5)
    torch.testing.assert_close(maps, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 4, 3))


def test_sd3_two_blocks_average_and_t5_slot():
    model, inputs = _sd3()
    text = TextSequence(5, 2, start_slot=False)  # the last two tokens, as SD3's T5 part
    with torch.no_grad():
        both = _record(model, inputs, ["transformer_blocks.0", "transformer_blocks.2"], text, (4, 3), 7)
        first = _record(model, inputs, ["transformer_blocks.0"], text, (4, 3), 7)
        last = _record(model, inputs, ["transformer_blocks.2"], text, (4, 3), 7, stop=False)
    assert both.shape == (2, 4, 3, 3)
    assert torch.all(both[..., 0] == 0)  # T5 has no start token: slot 0 is a placeholder
    torch.testing.assert_close(both, (first + last) / 2)


def test_recording_leaves_the_forward_unchanged_when_inactive_and_restores_processors():
    model, inputs = _sd3()
    originals = dict(model.attn_processors)
    with torch.no_grad():
        plain = model(**inputs, return_dict=False)[0]
        recorder = JointAttentionRecorder((4, 3), 7)
        with joint_recording_processors(model, ["transformer_blocks.1"], recorder, TextSequence(0, 5)):
            patched = model(**inputs, return_dict=False)[0]
    assert torch.equal(plain, patched)
    assert all(model.attn_processors[k] is v for k, v in originals.items())


def test_flux_double_and_single_stream_maps_with_rope():
    model, inputs, grid, text_len = _flux()
    seen = {}
    handles = [
        _capture(model.transformer_blocks[1].attn, seen, "double"),
        _capture(model.single_transformer_blocks[0].attn, seen, "single"),
        _capture(model.single_transformer_blocks[1].attn, seen, "after"),
    ]
    text = TextSequence(0, text_len, start_slot=False)
    blocks = ["transformer_blocks.1", "single_transformer_blocks.0"]
    with torch.no_grad():
        maps = _record(model, inputs, blocks, text, grid, text_len)
        cos, sin = model.pos_embed(torch.cat([inputs["txt_ids"], inputs["img_ids"]]))
    for handle in handles:
        handle.remove()
    assert maps.shape == (2, 3, 4, text_len + 1)
    assert "after" not in seen
    attn = model.transformer_blocks[1].attn
    x, c = seen["double"][1]["hidden_states"], seen["double"][1]["encoder_hidden_states"]
    q = _rms(_linear(attn.to_q, x).unflatten(-1, (HEADS, HEAD_DIM)), attn.norm_q.weight, attn.norm_q.eps)
    k = _rms(_linear(attn.add_k_proj, c).unflatten(-1, (HEADS, HEAD_DIM)), attn.norm_added_k.weight,
             attn.norm_added_k.eps)
    double = _softmax_maps(_rotate(q, cos[text_len:], sin[text_len:]), _rotate(k, cos[:text_len], sin[:text_len]))
    attn = model.single_transformer_blocks[0].attn
    joint = seen["single"][1]["hidden_states"]
    q = _rms(_linear(attn.to_q, joint[:, text_len:]).unflatten(-1, (HEADS, HEAD_DIM)), attn.norm_q.weight,
             attn.norm_q.eps)
    k = _rms(_linear(attn.to_k, joint[:, :text_len]).unflatten(-1, (HEADS, HEAD_DIM)), attn.norm_k.weight,
             attn.norm_k.eps)
    single = _softmax_maps(_rotate(q, cos[text_len:], sin[text_len:]), _rotate(k, cos[:text_len], sin[:text_len]))
    expected = torch.nn.functional.pad((double + single) / 2, (1, 0)).reshape(2, 3, 4, text_len + 1)
    torch.testing.assert_close(maps, expected, atol=1e-5, rtol=1e-5)


def test_block_names_defaults_and_errors():
    flux, *_ = _flux()
    sd3, _ = _sd3()
    assert joint_blocks(flux) == [
        "transformer_blocks.0", "transformer_blocks.1", "single_transformer_blocks.0", "single_transformer_blocks.1"
    ]
    assert default_blocks(sd3) == ["transformer_blocks.1"]  # the middle third of 3
    assert default_blocks(flux) == ["transformer_blocks.0"]
    assert select_blocks(flux, ["single_transformer_blocks.1", 0]) == [
        "transformer_blocks.0", "single_transformer_blocks.1"
    ]
    with pytest.raises(ValueError, match="No joint-attention block 5"):
        select_blocks(sd3, [5])
    with pytest.raises(ValueError, match="blocks is empty"):
        select_blocks(sd3, [])
