"""The ShapesWorld trainer's MMDiT format (``--format mmdit``) with a micro config: an SD3-format
folder that the project's loader and stock diffusers load and sample, the flow loss's numbers,
and the probe."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from contrastive_diffusers.shapes.train import main

MICRO = ["--format", "mmdit", "--seed", "0", "--vae_steps", "2", "--transformer_steps", "3", "--clip_steps", "1",
         "--batch_size", "4", "--num_scenes", "16", "--retrieval_scenes", "8", "--log_every", "1",
         "--num_threads", "1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shapes_mmdit")
    threads = torch.get_num_threads()
    try:
        assert main(["--output_dir", str(folder), *MICRO]) == 0
    finally:
        torch.set_num_threads(threads)
    return folder


def test_folder_is_an_sd3_pipeline_the_loader_detects_and_samples(trained):
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    from contrastive_diffusers.models.loading import load_pretrained

    pipe = load_pretrained(str(trained), torch.float32)
    assert type(pipe) is StableDiffusion3Pipeline
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler) and pipe.scheduler.config.shift == 1.0
    assert type(pipe.tokenizer_3).__name__.startswith("T5Tokenizer") and pipe.tokenizer_2.pad_token == "!"
    log = json.loads((trained / "training_log.json").read_text())
    vae = log["phases"]["vae"]
    assert pipe.vae.config.scaling_factor == pytest.approx(vae["scaling_factor"])
    assert pipe.vae.config.shift_factor == pytest.approx(vae["shift_factor"]) and vae["shift_factor"] != 0
    assert log["phases"]["transformer"]["steps"] == 3 and "unet" not in log["phases"]
    assert set(log["parameters"]) == {"vae", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "clip"}
    image = pipe("a red circle", num_inference_steps=2, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.shape == (32, 32, 3) and np.isfinite(image).all()


def test_stored_dtypes_and_card(trained):
    transformer = load_file(trained / "transformer/diffusion_pytorch_model.safetensors")
    assert {t.dtype for t in transformer.values()} == {torch.float16}
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        assert {t.dtype for t in load_file(trained / name / "model.safetensors").values()} == {torch.float32}
    card = (trained / "README.md").read_text()
    assert card.startswith("---") and "# ShapesWorld tiny Stable Diffusion 3 (MMDiT)" in card
    assert "StableDiffusion3Pipeline.from_pretrained(folder)" in card
    assert "rectified-flow velocity loss" in card and "### transformer" in card


def test_flow_targets_match_hand_computed_rectified_flow():
    from contrastive_diffusers.shapes.train.flow import flow_targets
    from contrastive_diffusers.shapes.train.mmdit import flow_scheduler

    gen = torch.Generator().manual_seed(0)
    latents, noise = torch.randn(3, 4, 8, 8, generator=gen), torch.randn(3, 4, 8, 8, generator=gen)
    u = torch.tensor([0.0, 0.5, 0.9995])
    timesteps, noisy, target, weights = flow_targets(flow_scheduler(1.0), latents, noise, u)
    # shift 1: sigma_i = 1 - i / 1000 at index i = floor(1000 u); timestep = 1000 sigma
    sigmas = torch.tensor([1.0, 0.5, 0.001]).view(-1, 1, 1, 1)
    assert timesteps.tolist() == pytest.approx([1000.0, 500.0, 1.0])
    torch.testing.assert_close(noisy, (1 - sigmas) * latents + sigmas * noise)
    torch.testing.assert_close(target, noise - latents)
    torch.testing.assert_close(noisy - sigmas * target, latents)  # one Euler step with the true velocity
    assert torch.equal(weights, torch.ones_like(weights))  # logit-normal: unit weights
    # shift 3 (SD3): sigma = 3 s / (1 + 2 s) of the unshifted s = 0.5
    t3, noisy3, _, _ = flow_targets(flow_scheduler(3.0), latents[1:2], noise[1:2], torch.tensor([0.5]))
    assert float(t3[0]) == pytest.approx(1000 * 1.5 / 2.0)
    torch.testing.assert_close(noisy3, 0.25 * latents[1:2] + 0.75 * noise[1:2])


def test_text_lengths_are_stored_and_are_the_guided_pipelines_default(trained):
    from diffusers import StableDiffusion3Pipeline

    from contrastive_diffusers.pipelines import GuidedStableDiffusion3Pipeline

    stock = StableDiffusion3Pipeline.from_pretrained(trained)
    # the short text of training: the stock pipeline reads the CLIP length from the tokenizer ...
    assert stock.tokenizer.model_max_length == stock.tokenizer_2.model_max_length == stock.tokenizer_max_length == 24
    assert stock.tokenizer_3.model_max_length == 24
    guided = GuidedStableDiffusion3Pipeline.from_pipe(stock)
    assert guided.default_max_sequence_length() == 24
    run = dict(num_inference_steps=2, output_type="np")
    # ... and the T5 length must be passed to it; the guided pipeline's default is that length
    ours = guided("a red circle", generator=torch.Generator().manual_seed(0), **run).images
    theirs = stock("a red circle", generator=torch.Generator().manual_seed(0), max_sequence_length=24, **run).images
    np.testing.assert_array_equal(ours, theirs)
    embeds = stock.encode_prompt("a red circle", None, None, do_classifier_free_guidance=False,
                                 max_sequence_length=24)[0]
    assert embeds.shape[1] == 48
    # without a T5 tokenizer (SD3 loaded without T5) the stock default stays
    assert GuidedStableDiffusion3Pipeline.from_pipe(stock, tokenizer_3=None, text_encoder_3=None) \
        .default_max_sequence_length() == 256


def test_config_checks_name_the_fix():
    from contrastive_diffusers.shapes.train.mmdit import MMDiTShapesConfig

    with pytest.raises(ValueError, match="must not exceed T5's d_model"):
        MMDiTShapesConfig(text_encoder_3={**MMDiTShapesConfig().text_encoder_3, "d_model": 64})
    with pytest.raises(ValueError, match=r"pooled_projection_dim must be the CLIP projections' sum \(128\)"):
        MMDiTShapesConfig(transformer={**MMDiTShapesConfig().transformer, "pooled_projection_dim": 64})
    with pytest.raises(ValueError, match=r"clip_length must be in \[3, 77\]"):
        MMDiTShapesConfig(clip_length=100)
    with pytest.raises(ValueError, match=r"t5_length must be in \[2, 512\]"):
        MMDiTShapesConfig(t5_length=1)


def test_probe_estimates_the_transformer_phase(tmp_path, capsys):
    threads = torch.get_num_threads()
    try:
        assert main(["--output_dir", str(tmp_path), *MICRO, "--probe", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{"):])
    assert result["format"] == "mmdit" and set(result["seconds_per_step"]) == {"vae", "transformer", "clip"}
    assert result["estimated_total_minutes"] > 0 and not list(tmp_path.iterdir())  # nothing trained or saved


def test_flow_shift_must_be_positive(tmp_path):
    with pytest.raises(SystemExit):
        main(["--output_dir", str(tmp_path), *MICRO, "--flow_shift", "0"])


def test_a_killed_mmdit_run_resumes_to_the_same_weights(trained, tmp_path, monkeypatch):
    # T5 trains with dropout, drawn from the global RNG: the checkpoint keeps its state too.
    folder = tmp_path / "run"
    args = ["--output_dir", str(folder), *MICRO, "--checkpointing_steps", "1"]
    real_clip, calls = torch.nn.utils.clip_grad_norm_, []

    def clip(*a, **k):
        calls.append(1)
        if len(calls) == 2 + 3:  # VAE 2 steps, then transformer step 3
            raise KeyboardInterrupt
        return real_clip(*a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    threads = torch.get_num_threads()
    try:
        with pytest.raises(KeyboardInterrupt):
            main(args)
        torch.manual_seed(12345)  # another process's global RNG: the checkpoint must restore it
        monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", real_clip)
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)
    for name in ("transformer/diffusion_pytorch_model.safetensors", "text_encoder_3/model.safetensors",
                 "vae/diffusion_pytorch_model.safetensors", "clip/model.safetensors"):
        a, b = load_file(folder / name), load_file(trained / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_retrain_clip_alone_gives_the_whole_runs_clip_and_leaves_the_rest(trained, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(trained, folder)
    clip_before = load_file(folder / "clip/model.safetensors")
    # as if the run had stored float32 weights: this command's --save_dtype default (float16)
    # must not halve them
    from safetensors.torch import save_file

    weights = folder / "transformer/diffusion_pytorch_model.safetensors"
    save_file({k: v.float() for k, v in load_file(weights).items()}, weights)
    run_log = json.loads((folder / "training_log.json").read_text())
    run_log["arguments"]["save_dtype"] = "float32"
    (folder / "training_log.json").write_text(json.dumps(run_log))
    transformer = weights.read_bytes()
    threads = torch.get_num_threads()
    try:
        assert main(["--output_dir", str(folder), "--retrain_clip", "--num_threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    # the CLIP phase depends on nothing the other phases make: trained alone by the same code
    # from the run's own arguments, it is the whole run's CLIP, tensor for tensor
    clip_after = load_file(folder / "clip/model.safetensors")
    assert clip_after.keys() == clip_before.keys()
    assert all(clip_after[k].dtype == clip_before[k].dtype and torch.equal(clip_after[k], clip_before[k])
               for k in clip_before)
    assert (folder / "transformer/diffusion_pytorch_model.safetensors").read_bytes() == transformer
    log = json.loads((folder / "training_log.json").read_text())
    assert log["clip_retrained"]["retrieval_before"] == json.loads((trained / "training_log.json").read_text())[
        "clip_retrieval"] and log["phases"]["clip"]["steps"] == 1
    first_log = json.loads((trained / "training_log.json").read_text())
    assert log["clip_retrained"]["recipe_before"] == first_log["phases"]["clip"]["negatives"]
    assert log["stored_dtype"]["transformer"] == "float32"
    # the card's training time is the phases': the new CLIP phase in place of the first
    assert log["training_seconds"] == pytest.approx(first_log["training_seconds"] - first_log["phases"]["clip"]["seconds"]
                                                    + log["phases"]["clip"]["seconds"], abs=0.11)
    card = (folder / "README.md").read_text()
    # retrained by the same recipe: no word about the first recipe's faults
    assert "trained again on" in card and "first recipe" not in card and "hard negatives named" not in card
    with pytest.raises(SystemExit):
        main(["--output_dir", str(tmp_path / "empty"), "--retrain_clip"])
