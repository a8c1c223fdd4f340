"""Bad input to a guided call gets a ValueError that names the problem and the fix."""

import pytest
import torch

from contrastive_diffusers.guidance import AttendAndExcite, Conform, GuidanceSchedule, SynGen
from contrastive_diffusers.pipelines import GuidedStableDiffusionPipeline
from contrastive_diffusers.models.tiny import tiny_pipeline


@pytest.fixture(scope="module")
def pipe():
    pipe = GuidedStableDiffusionPipeline.from_pipe(tiny_pipeline("sd1"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def call(pipe, prompt="a red car and a blue bench", **kwargs):
    kwargs.setdefault("guidance", Conform())
    return pipe(prompt, num_inference_steps=2, height=128, width=128, output_type="np", **kwargs)


def test_word_not_in_prompt_lists_the_tokens(pipe):
    with pytest.raises(ValueError, match="zebra") as err:
        call(pipe, token_groups=[["red", "car"], ["zebra"]])
    assert "2:'red'" in str(err.value) and "7:'bench'" in str(err.value)


@pytest.mark.parametrize(
    "position, fragment",
    [(0, "start-of-text"), (8, "1..7"), (40, "1..7"), (-1, "negative")],
)
def test_bad_positions(pipe, position, fragment):
    with pytest.raises(ValueError, match=fragment):
        call(pipe, token_groups=[[2, 3], [position]])


def test_group_lists_must_match_prompts(pipe):
    with pytest.raises(ValueError, match="3"):
        call(
            pipe,
            prompt=["a red car and a blue bench", "a cat with a hat"],
            token_groups=[[["car"], ["bench"]], [["cat"], ["hat"]], [["x"], ["y"]]],
        )
    with pytest.raises(ValueError, match="per prompt"):
        call(pipe, prompt=["a red car and a blue bench", "a cat with a hat"], token_groups=[["car"], ["bench"]])


def test_prompt_too_long(pipe):
    prompt = " ".join(["a red car and a blue bench"] * 12)
    with pytest.raises(ValueError, match="75"):
        call(pipe, prompt=prompt, token_groups=[["car"], ["bench"]])


def test_no_layer_at_requested_resolution_lists_sizes(pipe):
    with pytest.raises(ValueError, match=r"7x7.*16x16, 8x8, 4x4, 2x2"):
        call(pipe, token_groups=[["car"], ["bench"]], attn_res=(7, 7))


def test_conform_needs_two_groups(pipe):
    with pytest.raises(ValueError, match="at least two token groups"):
        call(pipe, token_groups=[["red", "car"]])


def test_syngen_needs_a_modifier(pipe):
    with pytest.raises(ValueError, match="modifier"):
        call(pipe, guidance=SynGen(), token_groups=[["car"], ["bench"]])


def test_guidance_needs_prompt_text(pipe):
    embeds = torch.zeros(1, 77, 32)
    with pytest.raises(ValueError, match="prompt text"):
        pipe(prompt_embeds=embeds, guidance=Conform(), num_inference_steps=2, height=128, width=128)


def test_unknown_method_name(pipe):
    with pytest.raises(ValueError, match="Unknown guidance method 'bogus'"):
        call(pipe, guidance="bogus")


def test_method_and_schedule_settings_are_validated():
    with pytest.raises(ValueError, match="threshold"):
        AttendAndExcite(thresholds={0: 1.5})
    with pytest.raises(ValueError, match="temperature"):
        Conform(temperature=0)
    with pytest.raises(ValueError, match="step_size"):
        GuidanceSchedule(step_size=-1)
    # a non-finite step size or range turns every latent to NaN, even rows the update leaves out
    for bad in (dict(step_size=float("inf")), dict(step_size_range=(1.0, -0.5)), dict(step_size_range=(float("nan"), 1))):
        with pytest.raises(ValueError, match="finite"):
            GuidanceSchedule(**bad)
    # a float32 fraction is the fraction it prints as: 0.29 of 100 steps is step 29, not 28
    import numpy as np

    assert GuidanceSchedule(max_update_step=np.float32(0.29)).resolve(100).max_update_step == 29
    with pytest.raises(ValueError, match="token_window"):
        Conform(token_window="everything")
    with pytest.raises(ValueError, match="kernel_size"):
        Conform(kernel_size=2)


def test_methods_by_name_and_alias(pipe):
    out = call(pipe, guidance="ae", token_groups=[["car"], ["bench"]])
    assert out.guidance_records[0].step == 0
