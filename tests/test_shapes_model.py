"""The ShapesWorld training script with a micro config: stock loading, guidance, CLIP, determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from contrastive_diffusers.shapes.model import ShapesModelConfig, build_components
from contrastive_diffusers.shapes.train import main

MICRO = ["--seed", "0", "--vae_steps", "3", "--unet_steps", "3", "--clip_steps", "3", "--batch_size", "4",
         "--num_scenes", "32", "--retrieval_scenes", "8", "--log_every", "2", "--num_threads", "1"]
WEIGHTS = ["vae/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.safetensors",
           "text_encoder/model.safetensors", "clip/model.safetensors"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Models this small run faster on one thread (and do not stall on a shared CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The micro config trained twice with the same seed."""
    folders = [tmp_path_factory.mktemp(f"shapes{k}") for k in range(2)]
    for folder in folders:
        assert main(["--output_dir", str(folder), *MICRO]) == 0
    return folders


def test_architecture_has_cross_attention_at_16_and_8():
    from contrastive_diffusers.guidance.attention import layer_resolutions
    from contrastive_diffusers.pipelines import default_attn_res

    unet = build_components(ShapesModelConfig())["unet"]
    maps = {hw for name, hw in layer_resolutions(unet, (16, 16)).items() if "attn2" in name}
    assert maps == {(16, 16), (8, 8)}
    assert default_attn_res(unet, (16, 16)) == (8, 8)


def test_folder_loads_with_stock_diffusers_and_generates(trained):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(trained[0])
    assert pipe.safety_checker is None and isinstance(pipe.scheduler, DDIMScheduler)
    assert pipe.vae.config.scaling_factor != 1.0
    image = pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (32, 32)


def test_guided_pipeline_runs_conform_with_default_attn_res(trained):
    from diffusers import StableDiffusionPipeline

    from contrastive_diffusers.pipelines import GuidedStableDiffusionPipeline

    pipe = GuidedStableDiffusionPipeline.from_pipe(StableDiffusionPipeline.from_pretrained(trained[0]))
    out = pipe("a red circle and a blue square", num_inference_steps=2, guidance="conform",
               generator=torch.Generator().manual_seed(0))
    assert len(out.images) == 1 and out.images[0].size == (32, 32)


def test_world_clip_loads_in_clip_scorer(trained):
    from contrastive_diffusers.eval.clip_score import ClipScorer
    from contrastive_diffusers.shapes import render, sample_scene

    scorer = ClipScorer.from_pretrained(trained[0] / "clip", device="cpu")
    scores = scorer.clip_score([render(sample_scene(0), 32)], ["a red circle"], clamp=False)
    assert scores.shape == (1,) and torch.isfinite(scores).all()


def test_same_seed_gives_identical_weights(trained):
    for name in WEIGHTS:
        a, b = (load_file(folder / name) for folder in trained)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_a_killed_run_resumes_to_the_same_weights(trained, tmp_path, monkeypatch, capsys):
    # Killed in the UNet phase, then again in the CLIP phase (checkpoints every step): the third
    # call finishes with the weights of the uninterrupted run, and leaves no checkpoints behind.
    folder = tmp_path / "run"
    args = ["--output_dir", str(folder), *MICRO, "--checkpointing_steps", "1"]
    real_clip = torch.nn.utils.clip_grad_norm_

    def kill_at(call):  # one optimiser step per call
        calls = []

        def clip(*a, **k):
            calls.append(1)
            if len(calls) == call:
                raise KeyboardInterrupt
            return real_clip(*a, **k)

        return clip

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", kill_at(3 + 3))  # VAE 3 steps, UNet step 3
    with pytest.raises(KeyboardInterrupt):
        main(args)
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == [
        "run.json", "unet-step.pt", "vae.json", "vae.safetensors"]
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", kill_at(1 + 2))  # UNet step 3, CLIP step 2
    with pytest.raises(KeyboardInterrupt):
        main(args)
    out = capsys.readouterr().out
    assert "[vae] finished before" in out and "[unet] resumed at step 2/3" in out
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", real_clip)
    assert main(args) == 0
    assert "[clip] resumed at step 1/3" in capsys.readouterr().out
    for name in WEIGHTS:
        a, b = load_file(folder / name), load_file(trained[0] / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert not (folder / "checkpoints").exists()
    log = json.loads((folder / "training_log.json").read_text())
    assert log["resumed_phases"] == ["vae", "unet"]


def test_an_output_folder_holding_something_else_is_refused(trained, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--output_dir", str(trained[0]), *MICRO])  # a finished run
    assert "holds a finished training run" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit):
        main(["--output_dir", str(tmp_path), *MICRO])
    assert "is not empty and holds no unfinished training run" in capsys.readouterr().err
    unfinished = tmp_path / "unfinished"
    (unfinished / "checkpoints").mkdir(parents=True)
    (unfinished / "checkpoints" / "run.json").write_text(json.dumps({"arguments": {"seed": 1}}))
    with pytest.raises(SystemExit):
        main(["--output_dir", str(unfinished), *MICRO])
    assert "holds an unfinished training run with other arguments" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value, message", [
    ("--clip_negatives", "0", "--clip_negatives must be positive"),
    ("--retrieval_scenes", "0", "--retrieval_scenes must be positive"),
    ("--clip_lr", "-1", "--clip_lr must be positive"),
    ("--ema_decay", "1.5", "--ema_decay must be in [0, 1)"),
    ("--num_threads", "-1", "--num_threads must be positive"),
    ("--snr_gamma", "-1", "--snr_gamma must be >= 0"),
    ("--transformer_steps", "5", "--transformer_steps apply to --format mmdit only"),
])
def test_bad_values_are_refused_before_training(tmp_path, capsys, flag, value, message):
    with pytest.raises(SystemExit):
        main(["--output_dir", str(tmp_path / "run"), *MICRO, flag, value])
    assert message in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_training_log_and_model_card(trained):
    log = json.loads((trained[0] / "training_log.json").read_text())
    assert {"arguments", "seed", "config", "parameters", "phases", "clip_retrieval", "versions"} <= log.keys()
    assert {"data", "vae", "unet", "clip"} <= log["phases"].keys()
    for phase in ("vae", "unet", "clip"):
        assert log["phases"][phase]["curve"][-1]["step"] == 3 and log["phases"][phase]["seconds"] >= 0
    assert log["arguments"]["unet_steps"] == 3 and log["seed"] == 0
    assert 0 <= log["clip_retrieval"]["training pairs"]["accuracy"] <= 1
    card = (trained[0] / "README.md").read_text()
    for heading in ("## Recipe", "## Training curves", "## Timings", "caption retrieval"):
        assert heading in card
    # this recipe's CLIP never saw a held-out pair's text, not even as a negative
    assert log["phases"]["clip"]["negatives"]["pairs"] == "training pairs only"
    assert "were never shown in training. " in card and "naming training pairs only" in card


def test_unet_and_vae_stored_half_text_encoder_and_clip_float32(trained):
    from diffusers import StableDiffusionPipeline

    stored = {name: {t.dtype for t in load_file(trained[0] / name).values()} for name in WEIGHTS}
    assert stored == {WEIGHTS[0]: {torch.float16}, WEIGHTS[1]: {torch.float16},
                      WEIGHTS[2]: {torch.float32}, WEIGHTS[3]: {torch.float32}}
    pipe = StableDiffusionPipeline.from_pretrained(trained[0])  # stock loading: float32 everywhere
    assert {pipe.unet.dtype, pipe.vae.dtype, pipe.text_encoder.dtype} == {torch.float32}
    log = json.loads((trained[0] / "training_log.json").read_text())
    assert log["stored_dtype"] == {"unet": "float16", "vae": "float16", "text_encoder": "float32", "clip": "float32"}
    assert log["weights_bytes"] == sum(f.stat().st_size for f in trained[0].rglob("*.safetensors"))


def test_finalize_only_evaluates_the_stored_weights(trained, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(trained[0], folder)
    before = load_file(folder / WEIGHTS[0])
    assert main(["--output_dir", str(folder), "--finalize_only", "--eval", "--eval_seeds", "1",
                 "--eval_per_category", "1", "--eval_steps", "2", "--num_threads", "1"]) == 0
    after = load_file(folder / WEIGHTS[0])
    assert all(torch.equal(before[k], after[k]) for k in before)  # re-storing float16 is lossless
    log = json.loads((folder / "training_log.json").read_text())
    per_category = log["eval"]["per_category"]
    assert set(per_category) == {"single", "two_object", "relation", "count", "no_color", "size", "held_out"}
    assert all(r["n"] == 1 and 0 <= r["rate"] <= 1 for r in per_category.values())
    assert "## Oracle success of the plain model" in (folder / "README.md").read_text()
    # float32 asked of float16 files: the log says what the files hold
    assert main(["--output_dir", str(folder), "--finalize_only", "--save_dtype", "float32"]) == 0
    assert json.loads((folder / "training_log.json").read_text())["stored_dtype"]["unet"] == "float16"


def test_finalize_only_needs_a_training_output(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--output_dir", str(tmp_path), "--finalize_only"])
    assert "training_log.json" in capsys.readouterr().err


def test_kind_weights_parse_and_reach_the_data_and_log(tmp_path):
    import argparse

    from contrastive_diffusers.shapes.train.run import parse_kind_weights

    assert parse_kind_weights("single=0.5, two_object=0.25") == {"single": 0.5, "two_object": 0.25}
    for bad, message in (("single", "KIND=SHARE"), ("circle=1", "KIND one of"), ("single=x", "number"),
                         ("single=-1", ">= 0"), ("single=0", "positive share")):
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            parse_kind_weights(bad)
    folder = tmp_path / "singles"
    assert main(["--output_dir", str(folder), *MICRO, "--kind_weights", "single=1"]) == 0
    log = json.loads((folder / "training_log.json").read_text())
    assert log["kind_weights"] == {"single": 1.0}
    assert log["phases"]["data"]["kinds"] == {"single": 32}


def test_mixed_precision_is_autocast_of_the_unet_phase_only(trained, tmp_path):
    """bf16 autocast trains different (finite) UNet weights than the default fp32 from the same
    data and initialisation, and leaves the VAE phase alone."""
    folder = tmp_path / "bf16"
    assert main(["--output_dir", str(folder), *MICRO, "--mixed_precision", "bf16"]) == 0
    log = json.loads((folder / "training_log.json").read_text())
    assert log["arguments"]["mixed_precision"] == "bf16"
    default = json.loads((trained[0] / "training_log.json").read_text())
    assert default["arguments"]["mixed_precision"] == "no"
    a, b = (load_file(f / WEIGHTS[1]) for f in (trained[0], folder))
    assert all(torch.isfinite(b[k].float()).all() for k in b)
    assert any(not torch.equal(a[k], b[k]) for k in a)
    # the VAE phase is not autocast: identical VAE weights
    va, vb = (load_file(f / WEIGHTS[0]) for f in (trained[0], folder))
    assert all(torch.equal(va[k], vb[k]) for k in va)


def test_noise_schedules_weights_and_targets():
    """Hand-checked numbers: min-SNR weights per prediction type, a zero-SNR last timestep, and a
    velocity target from which the clean latents come back exactly."""
    from contrastive_diffusers.shapes.model import (
        build_inference_scheduler,
        build_noise_scheduler,
    )
    from contrastive_diffusers.training.timesteps import prediction_target
    from contrastive_diffusers.shapes.train.denoiser import snr_weights

    sd, zero = build_noise_scheduler("sd"), build_noise_scheduler("zero_snr")
    assert sd.config.prediction_type == "epsilon" and zero.config.prediction_type == "v_prediction"
    assert float(sd.alphas_cumprod[-1]) == pytest.approx(0.0047, abs=1e-4)  # SD 1.x: not pure noise
    assert float(zero.alphas_cumprod[-1]) == 0.0
    t = torch.tensor([0, 999])
    # epsilon: min(snr, 5) / snr; snr at t=0 is (1 - 0.00085) / 0.00085 = 1175.5, at t=999 below 5
    assert snr_weights(sd, t, 5.0).tolist() == pytest.approx([5 / 1175.47, 1.0], rel=1e-3)
    # v, diffusers' scripts' form: snr + 1 in place of snr, so the zero-SNR timestep weighs 1 (not 0, not inf)
    assert snr_weights(zero, t, 5.0, "snr_plus_one").tolist() == pytest.approx([5 / 1176.47, 1.0], rel=1e-3)
    assert snr_weights(zero, t, 0.0).tolist() == [1.0, 1.0]
    # Hang et al.'s v form: min(snr, 5) / (snr + 1), the epsilon recipe's clean-latent weights, 0 at zero SNR
    assert snr_weights(zero, t, 5.0).tolist() == pytest.approx([5 / 1176.47, 0.0], rel=1e-3)  # the default
    mid = torch.tensor([700])
    ab = float(zero.alphas_cumprod[700])
    snr = ab / (1 - ab)
    assert snr < 5 and float(snr_weights(zero, mid, 5.0, "snr")) == pytest.approx(snr / (snr + 1), rel=1e-5)
    with pytest.raises(ValueError, match="Unknown v_weighting 'x'"):
        snr_weights(zero, t, 5.0, "x")

    gen = torch.Generator().manual_seed(0)
    latents, noise = torch.randn(3, 4, 8, 8, generator=gen), torch.randn(3, 4, 8, 8, generator=gen)
    steps = torch.tensor([10, 500, 999])
    assert torch.equal(prediction_target(sd, latents, noise, steps), noise)
    noisy = zero.add_noise(latents, noise, steps)
    v = prediction_target(zero, latents, noise, steps)
    a = zero.alphas_cumprod[steps].sqrt().view(-1, 1, 1, 1)
    s = (1 - zero.alphas_cumprod[steps]).sqrt().view(-1, 1, 1, 1)
    assert torch.allclose(a * noisy - s * v, latents, atol=1e-5)  # x0 from (x_t, v)
    assert torch.allclose(v[2], -latents[2])  # pure noise: the velocity is minus the clean latents

    ddim = build_inference_scheduler("zero_snr")
    assert (ddim.config.timestep_spacing, ddim.config.rescale_betas_zero_snr) == ("trailing", True)
    ddim.set_timesteps(50)
    assert int(ddim.timesteps[0]) == 999  # sampling starts where training had pure noise
    assert build_inference_scheduler("sd").config.timestep_spacing == "leading"
    with pytest.raises(ValueError, match="Unknown noise schedule 'cosine'; choose one of sd, zero_snr"):
        build_noise_scheduler("cosine")


def test_zero_snr_run_saves_a_v_prediction_pipeline_stock_diffusers_samples(tmp_path):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    assert main(["--output_dir", str(tmp_path), *MICRO, "--noise_schedule", "zero_snr"]) == 0
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path)
    assert isinstance(pipe.scheduler, DDIMScheduler)
    config = pipe.scheduler.config
    assert (config.prediction_type, config.rescale_betas_zero_snr, config.timestep_spacing) == \
        ("v_prediction", True, "trailing")
    image = pipe("a red circle", num_inference_steps=3, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.shape == (32, 32, 3) and np.isfinite(image).all()
    log = json.loads((tmp_path / "training_log.json").read_text())
    assert log["arguments"]["noise_schedule"] == "zero_snr"
    assert "v-prediction loss" in (tmp_path / "README.md").read_text()
    assert "gamma 5.0 (snr form)," in (tmp_path / "README.md").read_text()


def test_model_card_names_the_v_form_only_for_zero_snr():
    from contrastive_diffusers.shapes.train.card import _v_form

    assert _v_form({"noise_schedule": "zero_snr", "v_weighting": "snr"}) == " (snr form)"
    assert _v_form({"noise_schedule": "zero_snr"}) == " (snr_plus_one form)"  # logs from before the option
    assert _v_form({"noise_schedule": "sd", "v_weighting": "snr"}) == ""


def test_ema_is_diffusers_ema_model_with_the_recipe_warm_up():
    """diffusers' EMAModel as configured for the recipe: decay min(0.995, (1 + n) / (10 + n)) from
    the first update on (hand-computed), and in the steady state the same bits as torch.lerp,
    the update the shipped model was trained with."""
    from contrastive_diffusers.shapes.train.optim import ema_model

    params = [torch.nn.Parameter(torch.zeros(3))]
    ema = ema_model(params, 0.995)
    decays = []
    for n in range(1, 501):
        with torch.no_grad():
            params[0].fill_(float(n))
        ema.step(params)
        decays.append(ema.cur_decay_value)
        if n == 1:
            assert torch.allclose(ema.shadow_params[0], torch.full((3,), 9 / 11))  # 0 * 2/11 + 1 * 9/11
    assert decays[:3] == [2 / 11, 3 / 12, 4 / 13]
    assert decays[-1] == 501 / 510  # the warm-up reaches 0.995 only at update 1,790
    one = [torch.nn.Parameter(torch.zeros(1))]
    capped = ema_model(one, 0.9)
    for _ in range(100):
        capped.step(one)
    assert capped.cur_decay_value == 0.9  # (1 + n) / (10 + n) reaches 0.9 at n = 80

    gen = torch.Generator().manual_seed(0)
    shadow = torch.randn(4096, generator=gen)
    weights = [torch.nn.Parameter(shadow + 0.1 * torch.randn(4096, generator=gen))]
    steady = ema_model(weights, 0.995)
    steady.optimization_step = 5000  # past the warm-up: decay 0.995
    steady.shadow_params = [shadow.clone()]
    steady.step(weights)
    assert steady.cur_decay_value == 0.995
    assert torch.equal(steady.shadow_params[0], torch.lerp(shadow, weights[0].detach(), 1 - 0.995))


def test_train_from_python_at_another_resolution(tmp_path):
    # A library call (no `command` attribute, no argument checks of main) at 16 px: the world's
    # CLIP is built for the images as drawn (it was fixed at 32 px and failed after the UNet).
    from contrastive_diffusers.shapes.train import build_parser, train

    args = build_parser().parse_args(["--output_dir", str(tmp_path / "run"), *MICRO, "--resolution", "16"])
    log = train(args)
    assert log["command"] == "" and log["config"]["clip"]["vision"]["image_size"] == 16
    assert (tmp_path / "run" / "clip" / "model.safetensors").is_file()
