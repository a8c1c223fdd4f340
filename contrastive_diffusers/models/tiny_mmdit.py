"""Tiny, offline MMDiT pipelines (Stable Diffusion 3 / 3.5, Flux.1) with random weights.

The components keep the real models' block types, text stacks and schedulers at a fraction of
the width (see :func:`.tiny.tiny_pipeline` for the entry point):

================  ========================================================================
``sd3``           ``StableDiffusion3Pipeline``: CLIP-L and CLIP-G (both with projection;
                  their pooled outputs concatenated) and T5; ``SD3Transformer2DModel`` with
                  4 joint blocks (the last one context-pre-only, as in SD3), patch size 2;
                  flow-matching Euler scheduler with shift 3.0.
``sd35``          as ``sd3`` with SD3.5 medium's traits: dual-attention (MMDiT-X) joint
                  blocks in the first half (``dual_attention_layers=(0, 1)``) and RMS
                  query/key norm (``qk_norm="rms_norm"``).
``flux``          ``FluxPipeline`` as FLUX.1-dev: CLIP-L (pooled) and T5;
                  ``FluxTransformer2DModel`` with 2 double-stream and 4 single-stream blocks,
                  RoPE over (4, 6, 6) axes summing to the head width 16, guidance embedding;
                  scheduler with dynamic shifting (base 0.5, max 1.15 over 256 to 4096
                  image tokens).
``flux-schnell``  as ``flux`` without guidance embedding; static shift 1.0 (FLUX.1-schnell).
================  ========================================================================

The T5 tokenizer is the project's small Unigram vocabulary (``assets/tiny_t5_tokenizer``,
``scripts/build_tiny_t5_tokenizer.py``), loaded as ``T5TokenizerFast`` with 512 tokens' room
like the real ones. The VAE has SD's four levels (``vae_scale_factor`` 8) with 16 latent
channels, no quant convs, and the real models' scaling and shift factors. Widths: CLIP-L 32,
CLIP-G 48 (so the CLIP hidden states, 80 wide, are zero-padded to T5's 128 as in SD3),
transformers 32 wide. Default size: 128 px for SD3 (``transformer.config.sample_size`` 16);
``FluxPipeline`` always defaults to 1024 px, so pass ``height=width=128`` for tiny Flux.

As for the tiny UNets, the joint attention's image queries and text keys get a gain
(:data:`.tiny.CROSS_ATTENTION_GAIN`), so that image-to-text attention is peaked like a trained
model's instead of uniform (measured on "a red circle to the left of a blue square", first
joint block, softmax over all keys: SD3's prompt-token maps peak at 0.005 without the gain and
at 0.18 with it). Where query/key RMS norms follow the projections (SD3.5, Flux) the norm
would undo a gain on the projection, and its unit-RMS outputs already give logits of std ~1,
so the norms' weights get the square root of the gain (the full gain saturates the softmax:
Flux's maps reached 0.5, one-hot in one of its two heads; with the root they peak at 0.07
(SD3.5) and 0.46 (Flux)). Flux's single-stream blocks project text and image with one layer,
so there queries and keys both get it.
"""

from __future__ import annotations

import torch

from .tiny_tokenizers import CLIP_MAX_LENGTH, tiny_t5_tokenizer, tiny_tokenizer
from .tiny_vae import tiny_vae

MMDIT_KINDS = ("sd3", "sd35", "flux", "flux-schnell")

_CLIP_L_WIDTH = 32
_CLIP_G_WIDTH = 48
_T5_WIDTH = 128
_HEAD_DIM_SD3 = 8
_HEADS_SD3 = 4
_HEAD_DIM_FLUX = 16
_HEADS_FLUX = 2

#: VAE scaling and shift factors of the real models' AutoencoderKL configs.
VAE_FACTORS = {"sd3": (1.5305, 0.0609), "flux": (0.3611, 0.1159)}


def _clip_config(tokenizer, width: int, hidden_act: str):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=CLIP_MAX_LENGTH,
        hidden_act=hidden_act,
        projection_dim=width,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _t5(tokenizer):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=_T5_WIDTH,
        d_kv=16,
        d_ff=2 * _T5_WIDTH,
        num_layers=2,
        num_heads=4,
        feed_forward_proj="gated-gelu",  # T5 v1.1, as in SD3 and Flux
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return T5EncoderModel(config)


def _sd3_transformer(kind: str):
    from diffusers import SD3Transformer2DModel

    sd35 = kind == "sd35"
    return SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=4,
        attention_head_dim=_HEAD_DIM_SD3,
        num_attention_heads=_HEADS_SD3,
        joint_attention_dim=_T5_WIDTH,
        caption_projection_dim=_HEAD_DIM_SD3 * _HEADS_SD3,
        pooled_projection_dim=_CLIP_L_WIDTH + _CLIP_G_WIDTH,
        pos_embed_max_size=32,
        dual_attention_layers=(0, 1) if sd35 else (),
        qk_norm="rms_norm" if sd35 else None,
    )


def _flux_transformer(kind: str):
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,  # 16 latent channels packed 2x2
        num_layers=2,
        num_single_layers=4,
        attention_head_dim=_HEAD_DIM_FLUX,
        num_attention_heads=_HEADS_FLUX,
        joint_attention_dim=_T5_WIDTH,
        pooled_projection_dim=_CLIP_L_WIDTH,
        guidance_embeds=kind == "flux",
        axes_dims_rope=(4, 6, 6),
    )


def _scheduler(kind: str):
    from diffusers import FlowMatchEulerDiscreteScheduler

    if kind in ("sd3", "sd35"):
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    resolution_shift = dict(base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
    if kind == "flux":
        return FlowMatchEulerDiscreteScheduler(
            num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, **resolution_shift
        )
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0, **resolution_shift)


def sharpen_joint_attention(transformer, gain: float) -> None:
    """Multiply the image-query and text-key projections of every joint attention by ``gain``
    (their RMS norms' weights by its root where the model has them; query and key in Flux's
    single-stream blocks, which project text and image together); see the module docstring. SD3.5's second,
    image-only attention in its dual-attention blocks is left alone."""
    with torch.no_grad():
        for block in transformer.transformer_blocks:  # SD3 joint blocks, Flux double-stream blocks
            attn = block.attn
            if attn.norm_q is not None:
                attn.norm_q.weight.mul_(gain**0.5)
                attn.norm_added_k.weight.mul_(gain**0.5)
            else:
                attn.to_q.weight.mul_(gain)
                attn.add_k_proj.weight.mul_(gain)
        for block in getattr(transformer, "single_transformer_blocks", ()):
            block.attn.norm_q.weight.mul_(gain**0.5)
            block.attn.norm_k.weight.mul_(gain**0.5)


def mmdit_components(kind: str, seed: int, gain: float) -> dict:
    """The components of a tiny SD3 / Flux pipeline, as a dict ready for the pipeline class."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    if kind not in MMDIT_KINDS:
        raise ValueError(f"Unknown tiny MMDiT kind {kind!r}; choose one of {', '.join(MMDIT_KINDS)}.")
    family = "flux" if kind.startswith("flux") else "sd3"
    # Each component is seeded on its own, so that adding a component never changes the others.
    torch.manual_seed(seed)
    transformer = _flux_transformer(kind) if family == "flux" else _sd3_transformer(kind)
    sharpen_joint_attention(transformer, gain)
    torch.manual_seed(seed + 1)
    scaling, shift = VAE_FACTORS[family]
    vae = tiny_vae(16, scaling, shift_factor=shift, use_quant_conv=False, use_post_quant_conv=False)
    tokenizer, t5_tokenizer = tiny_tokenizer(), tiny_t5_tokenizer()
    torch.manual_seed(seed + 2)
    if family == "flux":
        text_encoder = CLIPTextModel(_clip_config(tokenizer, _CLIP_L_WIDTH, "quick_gelu"))
        torch.manual_seed(seed + 3)
        return dict(
            scheduler=_scheduler(kind),
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            text_encoder_2=_t5(t5_tokenizer),
            tokenizer_2=t5_tokenizer,
            transformer=transformer,
        )
    text_encoder = CLIPTextModelWithProjection(_clip_config(tokenizer, _CLIP_L_WIDTH, "quick_gelu"))
    tokenizer_2 = tiny_tokenizer(pad_token="!")  # OpenCLIP's bigG pads with "!"
    torch.manual_seed(seed + 3)
    text_encoder_2 = CLIPTextModelWithProjection(_clip_config(tokenizer_2, _CLIP_G_WIDTH, "gelu"))
    torch.manual_seed(seed + 4)
    return dict(
        transformer=transformer,
        scheduler=_scheduler(kind),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        text_encoder_3=_t5(t5_tokenizer),
        tokenizer_3=t5_tokenizer,
    )


def mmdit_pipeline_class(kind: str):
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    return FluxPipeline if kind.startswith("flux") else StableDiffusion3Pipeline
