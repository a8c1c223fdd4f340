"""Loading the frozen components of a Stable Diffusion 1.x/2.x or SDXL pipeline folder."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Models:
    """Tokenizers and text encoders (one for SD, two for SDXL), VAE, UNet, training scheduler."""

    tokenizers: list
    text_encoders: list
    vae: object
    unet: object
    noise_scheduler: object
    sdxl: bool
    model_index: dict


def load_models(path: str, revision: str | None = None, variant: str | None = None) -> Models:
    """Load the components as diffusers' training examples do (the noise scheduler is a
    ``DDPMScheduler`` from the pipeline's ``scheduler`` config, keeping its prediction type)."""
    from diffusers import (
        AutoencoderKL,
        DDPMScheduler,
        DiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    try:
        index = DiffusionPipeline.load_config(path, revision=revision)
    except (OSError, ValueError) as err:
        raise ValueError(
            f"Cannot load the pipeline {path!r}: {err}. Pass a diffusers pipeline folder or hub id "
            "(Stable Diffusion 1.x/2.x or SDXL) as --pretrained_model_name_or_path."
        ) from err
    required = ("tokenizer", "text_encoder", "unet", "vae", "scheduler")
    missing = [name for name in required if not index.get(name) or index.get(name) == [None, None]]
    if missing:
        raise ValueError(
            f"{path!r} is a {index.get('_class_name', 'pipeline')} without {', '.join(missing)}; "
            "training needs a Stable Diffusion 1.x/2.x or SDXL pipeline."
        )
    sdxl = bool(index.get("text_encoder_2")) and index.get("text_encoder_2") != [None, None]
    common = dict(revision=revision)
    tokenizers = [CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", **common)]
    text_encoders = [CLIPTextModel.from_pretrained(path, subfolder="text_encoder", variant=variant, **common)]
    if sdxl:
        tokenizers.append(CLIPTokenizer.from_pretrained(path, subfolder="tokenizer_2", **common))
        text_encoders.append(
            CLIPTextModelWithProjection.from_pretrained(path, subfolder="text_encoder_2", variant=variant, **common)
        )
    vae = AutoencoderKL.from_pretrained(path, subfolder="vae", variant=variant, **common)
    unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", variant=variant, **common)
    noise_scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler", **common)
    return Models(tokenizers, text_encoders, vae, unet, noise_scheduler, sdxl, dict(index))
