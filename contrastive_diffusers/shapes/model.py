"""The ShapesWorld models' architectures, as data.

:class:`ShapesModelConfig` holds one plain dict of constructor arguments per component, so a
recipe is readable (and serialisable into ``training_log.json``) without running anything,
and the builders below turn it into stock diffusers / transformers modules:

==============  ==================================================================  ========
component       architecture (defaults)                                             params
==============  ==================================================================  ========
vae             ``AutoencoderKL``: 32x32 RGB -> 16x16x4 (two levels of 32 and 64     0.66M
                channels, one ResNet per level, mid-block attention)
unet            ``UNet2DConditionModel`` on 16x16x4 latents (64, 128, 128 channels, 4.90M
                4 attention heads):
                CrossAttnDownBlock2D at 16x16 and 8x8, a plain DownBlock2D at 4x4,
                no mid block; mirrored up blocks (cross-attention maps 16x16, 8x8)
text_encoder    ``CLIPTextModel``: 2 layers, width 128, the project's CLIP BPE      0.53M
                tokenizer (:func:`contrastive_diffusers.models.tiny.tiny_tokenizer`)
clip            ``CLIPModel``: ViT of 4 layers on 32x32 images (4x4 patches), text   0.38M
                tower of 2 layers, width 64, projection 64
==============  ==================================================================  ========

``build_components(config, seed)`` returns the pieces of a ``StableDiffusionPipeline``;
each module is initialised from its own seed, so changing one never changes the others.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import torch

__all__ = [
    "BETAS",
    "NOISE_SCHEDULES",
    "ShapesModelConfig",
    "build_clip",
    "build_components",
    "build_inference_scheduler",
    "build_noise_scheduler",
    "build_text_encoder",
    "build_unet",
    "build_vae",
    "parameter_count",
]

#: Stable Diffusion's training noise schedule (kept so the SD tooling's assumptions hold).
BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)


def _vae_config() -> dict:
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=32,
        scaling_factor=1.0,  # replaced by 1 / (measured latent std) after training
    )


def _unet_config() -> dict:
    return dict(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        # No mid block: cross-attention maps are then 16x16 and 8x8 only, so the guided
        # pipelines' default attn_res (latent / 4 = 4x4, absent) resolves to 8x8.
        mid_block_type=None,
        block_out_channels=(64, 128, 128),
        layers_per_block=1,
        norm_num_groups=16,
        cross_attention_dim=128,
        # diffusers' name for the number of heads in SD 1.x layouts. Four, not eight: the
        # 16x16 self-attention dominates the step time (8 heads: 1.64 s/step, 4: 1.25 s at
        # batch 64 on 2 CPU threads), and the guidance methods average the heads anyway.
        attention_head_dim=4,
    )


def _text_config() -> dict:
    return dict(
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        projection_dim=128,
    )


def _clip_config() -> dict:
    return dict(
        text=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=77, hidden_act="quick_gelu"),
        vision=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                    image_size=32, patch_size=4, hidden_act="quick_gelu"),
        projection_dim=64,
    )


@dataclass
class ShapesModelConfig:
    """Constructor arguments of every component (plain dicts; see the module table)."""

    vae: dict = field(default_factory=_vae_config)
    unet: dict = field(default_factory=_unet_config)
    text_encoder: dict = field(default_factory=_text_config)
    clip: dict = field(default_factory=_clip_config)

    def __post_init__(self):
        width = self.text_encoder["hidden_size"]
        if self.unet["cross_attention_dim"] != width:
            raise ValueError(
                f"unet.cross_attention_dim ({self.unet['cross_attention_dim']}) must equal the text "
                f"encoder's hidden_size ({width})."
            )
        if self.unet["in_channels"] != self.vae["latent_channels"]:
            raise ValueError(
                f"unet.in_channels ({self.unet['in_channels']}) must equal vae.latent_channels "
                f"({self.vae['latent_channels']})."
            )

    @property
    def latent_size(self) -> int:
        return self.vae["sample_size"] // 2 ** (len(self.vae["block_out_channels"]) - 1)

    def to_dict(self) -> dict:
        return copy.deepcopy(asdict(self))


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_vae(config: ShapesModelConfig):
    from diffusers import AutoencoderKL

    return AutoencoderKL(**config.vae)


def build_unet(config: ShapesModelConfig):
    from diffusers import UNet2DConditionModel

    if config.unet["sample_size"] != config.latent_size:
        raise ValueError(f"unet.sample_size ({config.unet['sample_size']}) must be the VAE's latent size "
                         f"({config.latent_size}).")
    return UNet2DConditionModel(**config.unet)


def _special_ids(tokenizer) -> dict:
    return dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def build_text_encoder(config: ShapesModelConfig, tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**config.text_encoder, **_special_ids(tokenizer)))


def build_clip(config: ShapesModelConfig, tokenizer, seed: int = 0):
    """A ``CLIPModel`` and its ``CLIPProcessor`` (32 px images, the project's tokenizer)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    spec = config.clip
    size = spec["vision"]["image_size"]
    clip_config = CLIPConfig(
        text_config={**spec["text"], **_special_ids(tokenizer), "projection_dim": spec["projection_dim"]},
        vision_config={**spec["vision"], "projection_dim": spec["projection_dim"]},
        projection_dim=spec["projection_dim"],
    )
    torch.manual_seed(seed)
    model = CLIPModel(clip_config)
    image_processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


# How noise is added and what the UNet predicts. "sd": SD 1.x's betas, epsilon prediction, DDIM
# with "leading" spacing. "zero_snr": the same betas rescaled so that the last timestep is pure
# noise (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed"), which
# needs v-prediction (epsilon says nothing at zero SNR) and "trailing" spacing (sampling then
# starts at that pure-noise timestep, as generation does).
NOISE_SCHEDULES = {
    "sd": dict(prediction_type="epsilon", rescale_betas_zero_snr=False, timestep_spacing="leading"),
    "zero_snr": dict(prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing"),
}


def _schedule(name: str) -> dict:
    if name not in NOISE_SCHEDULES:
        raise ValueError(f"Unknown noise schedule {name!r}; choose one of {', '.join(NOISE_SCHEDULES)}.")
    return NOISE_SCHEDULES[name]


def build_noise_scheduler(schedule: str = "sd"):
    """The DDPM schedule the UNet is trained with."""
    from diffusers import DDPMScheduler

    spec = _schedule(schedule)
    return DDPMScheduler(**BETAS, clip_sample=False, prediction_type=spec["prediction_type"],
                         rescale_betas_zero_snr=spec["rescale_betas_zero_snr"])


def build_inference_scheduler(schedule: str = "sd"):
    """The scheduler saved with the pipeline: DDIM (deterministic, clean images in 20-30
    steps on this model), with SD 1.x's settings and the training schedule's betas, prediction
    type and timestep spacing."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(**BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1, **_schedule(schedule))


def build_components(config: ShapesModelConfig, seed: int = 0) -> dict:
    """Untrained ``vae``, ``unet``, ``text_encoder`` and ``tokenizer``, each seeded on its own."""
    from ..models.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    vae = build_vae(config)
    torch.manual_seed(seed + 1)
    unet = build_unet(config)
    torch.manual_seed(seed + 2)
    text_encoder = build_text_encoder(config, tokenizer)
    return dict(vae=vae, unet=unet, text_encoder=text_encoder, tokenizer=tokenizer)
