"""The tiny offline pipelines keep the real architectures' layout and round-trip through disk."""

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

from contrastive_diffusers.guidance.attention import layer_resolutions
from contrastive_diffusers.models.tiny import tiny_pipeline


def generate(pipe, seed=0):
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        "a red car", num_inference_steps=2, height=128, width=128,
        generator=torch.Generator().manual_seed(seed), output_type="np",
    ).images


@pytest.mark.parametrize("kind", ["sd1", "sd2", "sdxl"])
def test_deterministic_and_round_trips_through_folder(kind, tmp_path):
    a, b = tiny_pipeline(kind, seed=0), tiny_pipeline(kind, seed=0)
    for (name, p), (_, q) in zip(a.unet.state_dict().items(), b.unet.state_dict().items()):
        assert torch.equal(p, q), name
    assert not torch.equal(a.unet.conv_in.weight, tiny_pipeline(kind, seed=1).unet.conv_in.weight)
    a.save_pretrained(tmp_path)
    assert list(tmp_path.glob("unet/*.safetensors"))
    loaded = DiffusionPipeline.from_pretrained(tmp_path)
    assert type(loaded) is type(a)
    np.testing.assert_allclose(generate(loaded), generate(a), atol=1e-5)


def test_architecture_traits():
    sd1, sd2, sdxl = (tiny_pipeline(k) for k in ("sd1", "sd2", "sdxl"))
    assert isinstance(sd1, StableDiffusionPipeline) and isinstance(sdxl, StableDiffusionXLPipeline)
    assert sd1.vae_scale_factor == sd2.vae_scale_factor == sdxl.vae_scale_factor == 8
    # SD1 pads with end-of-text; SD2 / SDXL's second tokenizer pad with a real token.
    assert sd1.tokenizer.pad_token_id == sd1.tokenizer.eos_token_id
    assert sd2.tokenizer.pad_token == "!" and sd2.tokenizer.pad_token_id != sd2.tokenizer.eos_token_id
    assert sdxl.tokenizer_2.pad_token == "!"
    assert sd1.unet.config.down_block_types[:3] == ("CrossAttnDownBlock2D",) * 3
    assert sd2.scheduler.config.prediction_type == "v_prediction" and sd2.unet.config.use_linear_projection
    assert sdxl.unet.config.addition_embed_type == "text_time"
    assert sdxl.text_encoder_2.config.projection_dim == 32
    assert sd1.tokenizer.model_max_length == 77


@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
def test_layer_resolutions_match_the_real_query_lengths(kind):
    unet = tiny_pipeline(kind).unet
    expected = layer_resolutions(unet, (16, 16))
    seen = {}
    hooks = []
    for name, module in unet.named_modules():
        if name.endswith("attn2"):
            hooks.append(module.register_forward_hook(
                lambda mod, args, out, name=name: seen.__setitem__(name + ".processor", args[0].shape[1])
            ))
    cond = torch.zeros(1, 77, unet.config.cross_attention_dim)
    added = None
    if kind == "sdxl":
        added = {"text_embeds": torch.zeros(1, 32), "time_ids": torch.zeros(1, 6)}
    with torch.no_grad():
        unet(torch.randn(1, 4, 16, 16), 10, encoder_hidden_states=cond, added_cond_kwargs=added)
    for h in hooks:
        h.remove()
    assert {name: h * w for name, (h, w) in expected.items()} == seen
