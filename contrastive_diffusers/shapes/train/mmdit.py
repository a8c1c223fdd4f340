"""The MMDiT (Stable Diffusion 3-format) ShapesWorld model: its architecture as data and the
``StableDiffusion3Pipeline`` built from it (``--format mmdit``).

================  ================================================================
component         architecture (defaults)
================  ================================================================
vae               the UNet recipe's ``AutoencoderKL`` (32x32 RGB -> 16x16x4), with
                  ``shift_factor`` = the training latents' mean besides
                  ``scaling_factor`` = 1 / their std, as SD3's VAE has both
transformer       ``SD3Transformer2DModel``: 4 joint blocks (the last context-pre-
                  only), width 128 (4 heads of 32), patch 2 (8x8 image tokens,
                  the attention maps' size), query/key RMS norm as SD3.5
text_encoder      ``CLIPTextModelWithProjection`` (CLIP-L's place): 2 layers, width
                  64, quick-GELU, the project's CLIP tokenizer
text_encoder_2    ``CLIPTextModelWithProjection`` (CLIP-G's place): 2 layers, width
                  64, GELU, the same tokenizer padding with ``!``
text_encoder_3    ``T5EncoderModel``: 2 layers, width 128, gated GELU (T5 v1.1), the
                  project's T5 tokenizer
scheduler         ``FlowMatchEulerDiscreteScheduler`` with ``--flow_shift`` (1.0:
                  SD3's 3.0 is for 4096 image tokens, these images have 64)
================  ================================================================

The joint text is SD3's: the two CLIPs' penultimate states side by side (128 wide, T5's
width, so no zero padding), followed by T5's states; the pooled projections (64 + 64)
condition the time embedding. Each module is initialised from its own seed.

Text lengths: the world's captions are at most 12 CLIP and 11 T5 tokens, so the text is
encoded at ``clip_length`` = 24 CLIP tokens and ``t5_length`` = 24 T5 tokens instead of SD's 77
and SD3's 256. The joint sequence is then 64 image + 48 text tokens instead of 397, mostly
padding that every block would attend to (SD3 has no text attention mask); a training step
takes a third of the time. Both lengths are stored as the tokenizers' ``model_max_length``:
``StableDiffusion3Pipeline`` reads the CLIP length from there by itself; its T5 length is the
``max_sequence_length`` argument (default 256), which must be passed as 24 to stock calls, and
is the default of :class:`~contrastive_diffusers.pipelines.GuidedStableDiffusion3Pipeline`
for a T5 tokenizer shorter than 256.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import torch


def _transformer_config() -> dict:
    return dict(
        sample_size=16,  # replaced by the VAE's latent size
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=4,
        attention_head_dim=32,
        num_attention_heads=4,
        joint_attention_dim=128,
        caption_projection_dim=128,
        pooled_projection_dim=128,
        pos_embed_max_size=16,
        qk_norm="rms_norm",
    )


def _clip_config(hidden_act: str) -> dict:
    return dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=77, hidden_act=hidden_act, projection_dim=64)


def _t5_config() -> dict:
    return dict(d_model=128, d_kv=32, d_ff=256, num_layers=2, num_heads=4, feed_forward_proj="gated-gelu")


@dataclass
class MMDiTShapesConfig:
    """Constructor arguments of the MMDiT model's components besides the VAE (plain dicts)."""

    transformer: dict = field(default_factory=_transformer_config)
    text_encoder: dict = field(default_factory=lambda: _clip_config("quick_gelu"))
    text_encoder_2: dict = field(default_factory=lambda: _clip_config("gelu"))
    text_encoder_3: dict = field(default_factory=_t5_config)
    #: tokens of each CLIP's and of T5's text (the tokenizers' ``model_max_length``)
    clip_length: int = 24
    t5_length: int = 24

    def __post_init__(self):
        if not 2 < self.clip_length <= self.text_encoder["max_position_embeddings"]:
            raise ValueError(f"clip_length must be in [3, {self.text_encoder['max_position_embeddings']}] "
                             f"(CLIP's positions), got {self.clip_length}.")
        if not 1 < self.t5_length <= 512:
            raise ValueError(f"t5_length must be in [2, 512] (SD3's limit), got {self.t5_length}.")
        clip_width = self.text_encoder["hidden_size"] + self.text_encoder_2["hidden_size"]
        if clip_width > self.text_encoder_3["d_model"]:
            raise ValueError(f"The CLIP widths ({clip_width} together) must not exceed T5's d_model "
                             f"({self.text_encoder_3['d_model']}): SD3 zero-pads the CLIP states to T5's width.")
        if self.transformer["joint_attention_dim"] != self.text_encoder_3["d_model"]:
            raise ValueError("transformer.joint_attention_dim must equal T5's d_model "
                             f"({self.text_encoder_3['d_model']}).")
        pooled = self.text_encoder["projection_dim"] + self.text_encoder_2["projection_dim"]
        if self.transformer["pooled_projection_dim"] != pooled:
            raise ValueError(f"transformer.pooled_projection_dim must be the CLIP projections' sum ({pooled}).")

    def to_dict(self) -> dict:
        return copy.deepcopy(asdict(self))


def _clip(spec: dict, tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    return CLIPTextModelWithProjection(CLIPTextConfig(
        **spec, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))


def _t5(spec: dict, tokenizer):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(
        **spec, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id))


def build_mmdit_components(vae_config: dict, latent_size: int, config: MMDiTShapesConfig, seed: int = 0) -> dict:
    """Untrained components of a ``StableDiffusion3Pipeline`` (all but the scheduler), each
    seeded on its own; the VAE from the UNet recipe's ``vae_config`` with ``in_channels`` of the
    transformer following its ``latent_channels``."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel

    from ...models.tiny_tokenizers import tiny_t5_tokenizer, tiny_tokenizer

    tokenizer, tokenizer_2, tokenizer_3 = tiny_tokenizer(), tiny_tokenizer(pad_token="!"), tiny_t5_tokenizer()
    for tok, length in ((tokenizer, config.clip_length), (tokenizer_2, config.clip_length),
                        (tokenizer_3, config.t5_length)):
        tok.model_max_length = length  # saved with the tokenizer: the length the model was trained at
    torch.manual_seed(seed)
    vae = AutoencoderKL(**vae_config)
    channels = vae_config["latent_channels"]
    torch.manual_seed(seed + 1)
    transformer = SD3Transformer2DModel(**{**config.transformer, "sample_size": latent_size,
                                           "in_channels": channels, "out_channels": channels})
    torch.manual_seed(seed + 2)
    text_encoder = _clip(config.text_encoder, tokenizer)
    torch.manual_seed(seed + 4)
    text_encoder_2 = _clip(config.text_encoder_2, tokenizer_2)
    torch.manual_seed(seed + 5)
    text_encoder_3 = _t5(config.text_encoder_3, tokenizer_3)
    return dict(vae=vae, transformer=transformer, text_encoder=text_encoder, tokenizer=tokenizer,
                text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
                text_encoder_3=text_encoder_3, tokenizer_3=tokenizer_3)


def flow_scheduler(shift: float):
    """The flow-matching schedule of training and inference (SD3's scheduler class)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)


def build_mmdit_pipeline(components: dict, shift: float):
    """The ``StableDiffusion3Pipeline`` of ``components`` with the flow scheduler."""
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline(scheduler=flow_scheduler(shift), **components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def text_encoders(components: dict) -> list:
    return [components[name] for name in ("text_encoder", "text_encoder_2", "text_encoder_3")]
