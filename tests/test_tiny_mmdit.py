"""The tiny SD3 / SD3.5 / Flux pipelines: stock diffusers classes, the real block types and text
stacks, deterministic per seed, a save/load round trip through the project's loading code, and
the offline T5 tokenizer."""

import numpy as np
import pytest
import torch
from diffusers import (
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
)
from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock, FluxTransformerBlock
from diffusers.models.transformers.transformer_sd3 import JointTransformerBlock
from transformers import CLIPTextModel, CLIPTextModelWithProjection, T5EncoderModel

from contrastive_diffusers.models import loading
from contrastive_diffusers.models.names import TINY_MODELS
from contrastive_diffusers.models.tiny import KINDS, tiny_pipeline
from contrastive_diffusers.models.tiny_mmdit import MMDIT_KINDS, mmdit_components
from contrastive_diffusers.models.tiny_tokenizers import tiny_t5_tokenizer

PROMPT = "a red circle to the left of a blue square"


def generate(pipe, seed=0, **kwargs):
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        PROMPT, num_inference_steps=2, height=128, width=128,
        generator=torch.Generator().manual_seed(seed), output_type="np", **kwargs,
    ).images


def count(module, block_type):
    return sum(isinstance(m, block_type) for m in module.modules())


@pytest.mark.parametrize("kind", MMDIT_KINDS)
def test_deterministic_and_round_trips_through_the_projects_loader(kind, tmp_path):
    a, b = tiny_pipeline(kind, seed=0), tiny_pipeline(kind, seed=0)
    for (name, p), (_, q) in zip(a.transformer.state_dict().items(), b.transformer.state_dict().items()):
        assert torch.equal(p, q), name
    other = tiny_pipeline(kind, seed=1)
    assert not torch.equal(a.transformer.proj_out.weight, other.transformer.proj_out.weight)

    image = generate(a)
    assert image.shape == (1, 128, 128, 3) and np.isfinite(image).all()
    np.testing.assert_array_equal(image, generate(b))
    assert np.abs(image - generate(a, seed=1)).max() > 1e-3  # the seed draws the noise

    a.save_pretrained(tmp_path)
    assert list(tmp_path.glob("transformer/*.safetensors")) and not list(tmp_path.rglob("*.bin"))
    loaded = loading.load_pretrained(str(tmp_path), torch.float32)
    assert type(loaded) is type(a)
    assert type(loaded.tokenizer_3 if kind.startswith("sd3") else loaded.tokenizer_2).__name__.startswith("T5Tokenizer")
    np.testing.assert_allclose(generate(loaded), image, atol=1e-5)


def test_sd3_keeps_joint_blocks_and_its_three_text_encoders():
    sd3, sd35 = tiny_pipeline("sd3"), tiny_pipeline("sd35")
    for pipe in (sd3, sd35):
        assert type(pipe) is StableDiffusion3Pipeline and isinstance(pipe.transformer, SD3Transformer2DModel)
        assert count(pipe.transformer, JointTransformerBlock) == 4
        assert pipe.transformer.transformer_blocks[-1].context_pre_only  # as in SD3: last block drops text
        assert type(pipe.text_encoder) is CLIPTextModelWithProjection
        assert type(pipe.text_encoder_2) is CLIPTextModelWithProjection
        assert type(pipe.text_encoder_3) is T5EncoderModel
        assert pipe.tokenizer_2.pad_token == "!" and pipe.tokenizer.pad_token == "<|endoftext|>"
        assert pipe.scheduler.config.shift == 3.0 and not pipe.scheduler.config.use_dynamic_shifting
        assert (pipe.vae.config.scaling_factor, pipe.vae.config.shift_factor) == (1.5305, 0.0609)
        assert pipe.vae.config.latent_channels == pipe.transformer.config.in_channels == 16
        assert pipe.vae_scale_factor == 8 and loading.default_size(pipe) == (128, 128)
    dual = [block.use_dual_attention for block in sd35.transformer.transformer_blocks]
    assert dual == [True, True, False, False] and not any(b.use_dual_attention for b in sd3.transformer.transformer_blocks)
    assert sd35.transformer.config.qk_norm == "rms_norm" and sd3.transformer.config.qk_norm is None

    # The joint text: 77 CLIP tokens (CLIP-L and CLIP-G side by side, zero-padded to T5's
    # width) followed by the T5 tokens; pooled: both CLIPs' projections concatenated.
    embeds, _, pooled, _ = sd3.encode_prompt(PROMPT, None, None, do_classifier_free_guidance=False)
    assert embeds.shape == (1, 77 + 256, 128) and pooled.shape == (1, 32 + 48)
    assert torch.all(embeds[:, :77, 80:] == 0) and torch.any(embeds[:, 77:, 80:] != 0)


def test_flux_keeps_double_and_single_stream_blocks():
    dev, schnell = tiny_pipeline("flux"), tiny_pipeline("flux-schnell")
    for pipe in (dev, schnell):
        assert type(pipe) is FluxPipeline and isinstance(pipe.transformer, FluxTransformer2DModel)
        assert count(pipe.transformer, FluxTransformerBlock) == 2
        assert count(pipe.transformer, FluxSingleTransformerBlock) == 4
        config = pipe.transformer.config
        assert sum(config.axes_dims_rope) == config.attention_head_dim
        assert config.in_channels == 4 * pipe.vae.config.latent_channels == 64  # 2x2 packed latents
        assert type(pipe.text_encoder) is CLIPTextModel and type(pipe.text_encoder_2) is T5EncoderModel
        assert config.pooled_projection_dim == pipe.text_encoder.config.hidden_size
        assert (pipe.vae.config.scaling_factor, pipe.vae.config.shift_factor) == (0.3611, 0.1159)
        assert loading.default_size(pipe) == (128, 128)
    assert dev.transformer.config.guidance_embeds and not schnell.transformer.config.guidance_embeds
    assert dev.scheduler.config.use_dynamic_shifting and dev.scheduler.config.shift == 3.0
    assert (dev.scheduler.config.base_shift, dev.scheduler.config.max_shift) == (0.5, 1.15)
    assert not schnell.scheduler.config.use_dynamic_shifting and schnell.scheduler.config.shift == 1.0
    # Flux's joint text is T5 only: 512 tokens by default.
    embeds, pooled, _ = dev.encode_prompt(PROMPT, None)
    assert embeds.shape == (1, 512, 128) and pooled.shape == (1, 32)


@pytest.mark.parametrize("kind", ["sd3", "sd35", "flux"])
def test_joint_attention_gain(kind):
    plain = mmdit_components(kind, 0, gain=1.0)["transformer"]
    sharp = tiny_pipeline(kind).transformer
    a, b = plain.transformer_blocks[0].attn, sharp.transformer_blocks[0].attn
    if a.norm_q is None:  # SD3: the projections themselves
        torch.testing.assert_close(b.to_q.weight, 4 * a.to_q.weight)
        torch.testing.assert_close(b.add_k_proj.weight, 4 * a.add_k_proj.weight)
    else:  # after RMS norms: the norms' weights, by the gain's root
        torch.testing.assert_close(b.norm_q.weight, 2 * a.norm_q.weight)
        torch.testing.assert_close(b.norm_added_k.weight, 2 * a.norm_added_k.weight)
    torch.testing.assert_close(b.to_k.weight, a.to_k.weight)  # image keys unchanged
    torch.testing.assert_close(b.add_q_proj.weight, a.add_q_proj.weight)  # text queries unchanged


def test_t5_tokenizer_is_offline_and_t5_shaped():
    tokenizer = tiny_t5_tokenizer()
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    assert tokenizer.model_max_length == 512
    ids = tokenizer(PROMPT).input_ids
    assert tokenizer.convert_ids_to_tokens(ids) == [
        "▁a", "▁red", "▁circle", "▁to", "▁the", "▁left", "▁of", "▁a", "▁blue", "▁square", "</s>",
    ]
    assert tokenizer.convert_ids_to_tokens(tokenizer("two white crosses").input_ids) == [
        "▁two", "▁white", "▁crosses", "</s>",
    ]
    assert tokenizer.convert_ids_to_tokens(tokenizer("a cat and a dog").input_ids)[1:5] == ["▁cat", "▁and", "▁a", "▁dog"]
    # A word outside the vocabulary splits into pieces, the first one starting the word.
    pieces = tokenizer.convert_ids_to_tokens(tokenizer("hydrant").input_ids)[:-1]
    assert len(pieces) > 1 and pieces[0].startswith("▁") and not any(p.startswith("▁") for p in pieces[1:])
    assert tokenizer.unk_token_id not in tokenizer("A Red Car, 42!").input_ids  # capitals, digits
    assert tokenizer.decode(ids, skip_special_tokens=True) == PROMPT
    padded = tokenizer(PROMPT, padding="max_length", max_length=16).input_ids
    assert padded[: len(ids)] == ids and padded[len(ids):] == [0] * (16 - len(ids))


def test_names_resolve_to_kinds_and_guided_classes():
    assert {TINY_MODELS[name] for name in ("tiny-sd3", "tiny-sd35", "tiny-flux", "tiny-flux-schnell")} == set(MMDIT_KINDS)
    assert set(TINY_MODELS.values()) == set(KINDS)
    assert loading.guided_class_name(tiny_pipeline("sd3")) == "GuidedStableDiffusion3Pipeline"
    assert loading.guided_class_name(tiny_pipeline("flux-schnell")) == "GuidedFluxPipeline"
    sd1 = tiny_pipeline("sd1")
    assert loading.guided_class_name(sd1) == "GuidedStableDiffusionPipeline" and loading.default_size(sd1) == (128, 128)
    assert isinstance(sd1, StableDiffusionPipeline) and not loading.is_flux(sd1)
    with pytest.raises(ValueError, match="flux-schnell"):
        tiny_pipeline("flux-pro")


@pytest.mark.parametrize("kind", ["sd3", "flux"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_on_cpu_gives_finite_images(kind, dtype):
    pipe = tiny_pipeline(kind).to(dtype)
    assert pipe.transformer.dtype == dtype
    assert np.isfinite(generate(pipe)).all()
