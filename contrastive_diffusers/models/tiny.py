"""Tiny, offline Stable Diffusion pipelines with random weights.

``tiny_pipeline(kind)`` builds a stock diffusers pipeline whose components keep the real
architectures' block types and cross-attention layout at a fraction of the width, so that
tests, benchmarks and the CLI's offline default run on a CPU in seconds without
downloading anything:

========  ==========================================================================
``sd1``   ``StableDiffusionPipeline``: 4-level UNet (3 cross-attention down blocks,
          cross-attention mid block, 3 cross-attention up blocks), epsilon prediction,
          PNDM scheduler, CLIP tokenizer padding with ``<|endoftext|>``.
``sd2``   as ``sd1`` with linear projections, per-level head counts, upcast attention,
          v-prediction, DDIM scheduler, and an OpenCLIP-style tokenizer that pads
          with ``!`` (a real token, unlike the end-of-text token).
``sdxl``  ``StableDiffusionXLPipeline``: 3-level UNet (plain first level, two
          cross-attention levels with several transformer layers), two text encoders
          (the second with projection, giving pooled embeds), ``text_time`` added
          conditioning (time ids), Euler scheduler.
========  ==========================================================================

``sd3``, ``sd35``, ``flux`` and ``flux-schnell`` give ``StableDiffusion3Pipeline`` and
``FluxPipeline`` with tiny MMDiT transformers, CLIP and T5 text stacks and flow-matching
schedulers; :mod:`.tiny_mmdit` describes them.

The VAE has four levels like SD's, so ``vae_scale_factor`` is 8 and image sizes mean the
same thing as on the real models. The default image size is 128 px (16x16 latents), which
gives cross-attention maps of 16x16, 8x8, 4x4 (and 2x2 at the SD mid block).
"""

from __future__ import annotations

import torch

from .tiny_tokenizers import CLIP_MAX_LENGTH as _MAX_LENGTH
from .tiny_tokenizers import tiny_tokenizer
from .tiny_vae import tiny_vae

UNET_KINDS = ("sd1", "sd2", "sdxl")
KINDS = UNET_KINDS + ("sd3", "sd35", "flux", "flux-schnell")
_TEXT_WIDTH = 32


def _text_config(tokenizer, hidden_act: str = "quick_gelu"):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=_TEXT_WIDTH,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=_MAX_LENGTH,
        hidden_act=hidden_act,
        projection_dim=_TEXT_WIDTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _draw_clip_text_weights(model, seed: int):
    """Re-draw a CLIP text model's weights in an order of our own, with the standard deviations
    of transformers' CLIP initialisation (token and position embeddings 0.02; q, k, v and fc2
    width^-0.5 (2 layers)^-0.5; out_proj and the projection width^-0.5; fc1 (2 width)^-0.5;
    layer norms 1 and 0, biases 0). The order in which transformers draws them changed in
    5.13 and may change again; tests that train these models on a fixed batch must not."""
    config = model.config
    width, factor = config.hidden_size, config.initializer_factor
    attention = width**-0.5 * (2 * config.num_hidden_layers) ** -0.5 * factor
    rules = {
        "token_embedding": 0.02 * factor,
        "position_embedding": 0.02 * factor,
        "q_proj": attention,
        "k_proj": attention,
        "v_proj": attention,
        "fc2": attention,
        "out_proj": width**-0.5 * factor,
        "text_projection": width**-0.5 * factor,
        "fc1": (2 * width) ** -0.5 * factor,
    }
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            module, kind = name.split(".")[-2:]
            if "norm" in module:
                param.fill_(1.0 if kind == "weight" else 0.0)
            elif kind == "bias":
                param.zero_()
            elif module in rules:
                param.copy_(torch.randn(param.shape, generator=generator) * rules[module])
            else:
                raise ValueError(f"No initialisation rule for CLIP text parameter {name}")
    return model


def _sd_unet(kind: str):
    from diffusers import UNet2DConditionModel

    sd2 = kind == "sd2"
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=(16, 32, 32, 32),
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=_TEXT_WIDTH,
        # SD1: 8 heads everywhere; SD2: a fixed head width, so head counts grow per level.
        attention_head_dim=(2, 4, 4, 4) if sd2 else 4,
        use_linear_projection=sd2,
        upcast_attention=sd2,
    )


def _sdxl_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        norm_num_groups=8,
        transformer_layers_per_block=(1, 1, 2),
        attention_head_dim=(2, 4, 4),
        cross_attention_dim=2 * _TEXT_WIDTH,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=_TEXT_WIDTH + 6 * 8,
    )


#: Gain on the cross-attention query/key weights of the tiny UNets. At plain random init the
#: text attention is almost uniform over tokens (std ~1e-3 around 1/77), which no trained
#: model shows and which leaves the guidance losses flat; this gain makes the maps peaked
#: and spatially varied (max ~0.15), like a trained model's.
CROSS_ATTENTION_GAIN = 4.0


def _sharpen_cross_attention(unet, gain: float = CROSS_ATTENTION_GAIN) -> None:
    with torch.no_grad():
        for name, module in unet.named_modules():
            if name.endswith("attn2"):
                module.to_q.weight.mul_(gain)
                module.to_k.weight.mul_(gain)


def tiny_components(kind: str, seed: int = 0) -> dict:
    """The components of :func:`tiny_pipeline`, as a dict ready for the pipeline class."""
    if kind not in KINDS:
        raise ValueError(f"Unknown tiny pipeline kind {kind!r}; choose one of {', '.join(KINDS)}.")
    if kind not in UNET_KINDS:
        from .tiny_mmdit import mmdit_components

        return mmdit_components(kind, seed, gain=CROSS_ATTENTION_GAIN)
    from diffusers import DDIMScheduler, EulerDiscreteScheduler, PNDMScheduler
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    betas = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
    # Each component is seeded on its own, so that adding a component never changes the others.
    torch.manual_seed(seed)
    unet = _sdxl_unet() if kind == "sdxl" else _sd_unet(kind)
    _sharpen_cross_attention(unet)
    torch.manual_seed(seed + 1)
    vae = tiny_vae()
    if kind == "sdxl":
        tokenizer = tiny_tokenizer()
        tokenizer_2 = tiny_tokenizer(pad_token="!")
        text_encoder = _draw_clip_text_weights(CLIPTextModel(_text_config(tokenizer)), seed + 2)
        text_encoder_2 = _draw_clip_text_weights(
            CLIPTextModelWithProjection(_text_config(tokenizer_2, hidden_act="gelu")), seed + 3
        )
        scheduler = EulerDiscreteScheduler(
            **betas, timestep_spacing="leading", steps_offset=1, prediction_type="epsilon"
        )
        return dict(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer_2,
            unet=unet,
            scheduler=scheduler,
        )

    sd2 = kind == "sd2"
    tokenizer = tiny_tokenizer(pad_token="!" if sd2 else "<|endoftext|>")
    text_encoder = _draw_clip_text_weights(
        CLIPTextModel(_text_config(tokenizer, hidden_act="gelu" if sd2 else "quick_gelu")), seed + 2
    )
    if sd2:
        scheduler = DDIMScheduler(
            **betas, clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction"
        )
    else:
        scheduler = PNDMScheduler(**betas, skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1)
    return dict(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def tiny_pipeline(kind: str = "sd1", seed: int = 0):
    """A stock diffusers pipeline (``StableDiffusionPipeline``, ``StableDiffusionXLPipeline``,
    ``StableDiffusion3Pipeline`` or ``FluxPipeline``) with tiny random weights, deterministic
    for ``seed``; see the module docstring."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    components = tiny_components(kind, seed)
    if kind in UNET_KINDS:
        cls = StableDiffusionXLPipeline if kind == "sdxl" else StableDiffusionPipeline
    else:
        from .tiny_mmdit import mmdit_pipeline_class

        cls = mmdit_pipeline_class(kind)
    for component in components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()  # as from_pretrained leaves them
    pipe = cls(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_clip(seed: int = 0):
    """A tiny random ``CLIPModel`` (32 px images) and its ``CLIPProcessor``, for offline tests
    of CLIP scoring. Returns ``(model, processor)``; both save with ``save_pretrained``."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = tiny_tokenizer()
    text = _text_config(tokenizer).to_dict()
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        image_size=32, patch_size=8, projection_dim=_TEXT_WIDTH,
    )
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=_TEXT_WIDTH)).eval()
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


#: Words of the tiny BLIP's WordPiece vocabulary (after BERT's special tokens and BLIP's
#: ``[DEC]`` beginning-of-caption token), so that its random captions read as words.
BLIP_WORDS = tuple(
    "a an the of on in with and next to photo picture red blue green yellow black white cat dog "
    "bird horse car bench bowl clock table grass sitting standing".split()
)


def tiny_blip(seed: int = 0):
    """A tiny random ``BlipForConditionalGeneration`` (32 px images) and its ``BlipProcessor``
    (a BERT WordPiece tokenizer over :data:`BLIP_WORDS`), for offline tests of captioning.
    Returns ``(model, processor)``; both save with ``save_pretrained``.

    Three choices make its greedy captions words that depend on the image:

    - the vision weights are drawn with std 0.02: BLIP's default (``1e-10``, which trained
      checkpoints overwrite) leaves them ~0 and the image features constant, so every image
      got the same caption;
    - the text weights are drawn with std 0.1: at BLIP's 0.02 the decoder's logits hardly
      feel the image either;
    - the special tokens, ``[SEP]`` (end of caption) included, get a -1e4 bias in the LM head,
      so they are never generated: at random init ``[SEP]`` often won the first step, giving
      empty captions. Captions therefore never end early: each has exactly ``max_new_tokens``
      words (every vocabulary word is one token).
    """
    import transformers
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipProcessor

    # transformers 5 has a PIL-only image processor (no torchvision needed); 4.x's default is PIL-based.
    image_processor_class = getattr(transformers, "BlipImageProcessorPil", transformers.BlipImageProcessor)

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(special + list(BLIP_WORDS))}, bos_token="[DEC]")
    text = dict(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, projection_dim=32,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128, initializer_range=0.1,
        bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id, sep_token_id=tokenizer.sep_token_id,
    )
    vision = dict(
        hidden_size=32, intermediate_size=64, projection_dim=32, num_hidden_layers=2, num_attention_heads=4,
        image_size=32, patch_size=8, initializer_range=0.02,
    )
    config = BlipConfig(text_config=text, vision_config=vision, projection_dim=32, image_text_hidden_size=32)
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config).eval()
    with torch.no_grad():  # tied to the output embedding's bias, so saved and loaded with it
        model.text_decoder.cls.predictions.bias[tokenizer.convert_tokens_to_ids(special)] = -1e4
    image_processor = image_processor_class(size={"height": 32, "width": 32})
    return model, BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def sd15_components(seed: int = 0) -> dict:
    """Components of a ``StableDiffusionPipeline`` with SD 1.5's UNet and VAE configurations and
    a CLIP ViT-L/14-sized text encoder, all with random weights, and the tiny tokenizer: for
    benchmarks, where time and memory depend on the shapes, not the weights."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    unet = UNet2DConditionModel(
        sample_size=64,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        attention_head_dim=8,
        cross_attention_dim=768,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        sample_size=512,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    scheduler = PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True, steps_offset=1
    )
    return dict(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
