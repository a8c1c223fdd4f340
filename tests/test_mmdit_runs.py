"""`generate` / `bench` make MMDiT images through runs.py: groups on the text sequence the
loss reads (Flux: T5), the stock CFG defaults, heatmaps, and attn_res refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from contrastive_diffusers.guidance import get_method
from contrastive_diffusers.models.loading import load_pipeline
from contrastive_diffusers.pipelines import GuidedFluxPipeline
from contrastive_diffusers.runs import ImageRun, generate_image, generation_options, make_image, resolve_token_groups

PROMPT = "a red car and a blue bench"


@pytest.fixture(scope="module")
def flux():
    return load_pipeline("tiny-flux", "cpu", None, quiet=True)


def test_flux_run_resolves_on_t5_and_writes_image_and_heatmap(flux, tmp_path: Path):
    assert isinstance(flux, GuidedFluxPipeline)
    options = generation_options(flux, steps=4)
    assert options["guidance_scale"] == 3.5  # FluxPipeline's own default
    groups = resolve_token_groups(flux, PROMPT, "auto")
    lookup = flux.token_lookup()
    assert lookup.max_length == 512 and [g.words for g in groups] == [("red", "car"), ("blue", "bench")]
    run = ImageRun(flux, {"syngen": get_method("syngen")}, options, None, True, tmp_path)
    made = make_image(run, "syngen", PROMPT, 0, groups, "syngen/0")
    assert (tmp_path / made.image).is_file() and (tmp_path / made.attention).is_file()
    assert made.guidance["updates"] == 2  # half of 4 steps: the paper's 25 of 50


def test_attn_res_is_refused_for_mmdit(flux):
    with pytest.raises(ValueError, match="joint-attention blocks"):
        generate_image(flux, PROMPT, 0, generation_options(flux, steps=2), get_method("syngen"), "auto", (8, 8))


def test_flux_true_cfg_is_checked_and_draws_what_the_stock_call_draws(flux):
    with pytest.raises(ValueError, match="true CFG scale above 1"):
        generation_options(flux, negative_prompt="blurry")
    with pytest.raises(ValueError, match="needs a negative prompt"):
        generation_options(flux, true_cfg_scale=4.0)
    assert "true_cfg_scale" not in generation_options(flux)  # off: settings as before the option
    for off in (1.0, 0.5, float("nan")):
        with pytest.raises(ValueError, match="must be above 1"):
            generation_options(flux, negative_prompt="blurry", true_cfg_scale=off)
    options = generation_options(flux, height=32, width=32, steps=2, negative_prompt="blurry", true_cfg_scale=4.0)
    assert options["true_cfg_scale"] == 4.0
    image = generate_image(flux, PROMPT, 0, options, None, None, None).images[0]
    stock = flux(PROMPT, negative_prompt="blurry", true_cfg_scale=4.0, height=32, width=32, num_inference_steps=2,
                 generator=torch.Generator().manual_seed(0), output_type="pil").images[0]
    plain = generate_image(flux, PROMPT, 0, generation_options(flux, height=32, width=32, steps=2), None, None, None)
    assert np.array_equal(np.asarray(image), np.asarray(stock))
    assert not np.array_equal(np.asarray(image), np.asarray(plain.images[0]))  # the negative prompt was used


def test_true_cfg_scale_is_refused_off_flux():
    sd3 = load_pipeline("tiny-sd3", "cpu", None, quiet=True)
    with pytest.raises(ValueError, match="FLUX.1's true classifier-free guidance"):
        generation_options(sd3, negative_prompt="blurry", true_cfg_scale=4.0)


def test_text_sequence_is_sd3s_and_recorded_only_off_its_default(flux, tmp_path: Path):
    from contrastive_diffusers.eval import PromptItem
    from contrastive_diffusers.eval.bench import BenchConfig, run_benchmark

    sd3 = load_pipeline("tiny-sd3", "cpu", None, quiet=True)
    assert generation_options(sd3, text_sequence="t5")["text_sequence"] == "t5"
    assert "text_sequence" not in generation_options(sd3, text_sequence="clip")  # folders made without it resume
    with pytest.raises(ValueError, match="must be 'clip' or 't5'"):
        generation_options(sd3, text_sequence="T5")
    with pytest.raises(ValueError, match="GuidedFluxPipeline has no such choice"):
        generation_options(flux, text_sequence="t5")
    no_t5 = load_pipeline("tiny-sd3", "cpu", None, quiet=True)
    no_t5.text_encoder_3 = None
    with pytest.raises(ValueError, match="needs the T5 text encoder"):
        generation_options(no_t5, text_sequence="t5")
    # a prompt longer than CLIP's 75 tokens resolves on T5, and bench guides it
    long = "a red car and a blue bench, " + "a small green tree next to a yellow house, " * 8
    with pytest.raises(ValueError, match="--text-sequence t5"):
        resolve_token_groups(sd3, long, [["red", "car"], ["blue", "bench"]])
    (car, bench) = resolve_token_groups(sd3, long, [["red", "car"], ["blue", "bench"]], "t5")
    assert car.words == ("red", "car")
    config = BenchConfig(tmp_path / "run", model="tiny-sd3", methods=["none", "syngen"], steps=2, height=64, width=64,
                         prompt_set=[PromptItem("long", long, None, [["red", "car"], ["blue", "bench"]])],
                         clip_model=None, text_sequence="t5", progress=False)
    records = {r["method"]: r for r in run_benchmark(config).records}
    assert records["syngen"]["status"] == "ok" and records["syngen"]["guidance"]["updates"] == 1
    ledger = json.loads((tmp_path / "run" / "bench.json").read_text())
    assert ledger["fingerprint"]["generation"]["text_sequence"] == "t5"
