"""EvoGen and DCO end to end on a tiny saved SD1 pipeline (CPU, 64 px, a few steps): a pair set
built by the builder, three curriculum stages, LoRA weights stock diffusers loads, an exact
resume inside stage 2, the contrastive objective widening the error gap, and the reference
objectives starting at log 2 (LoRA B = 0: the model equals the frozen reference)."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from contrastive_diffusers.eval.pair_builder import build_pairs
from contrastive_diffusers.prompts import PromptItem
from contrastive_diffusers.models.tiny import tiny_pipeline
from contrastive_diffusers.training.dco import DCO
from contrastive_diffusers.training.evogen import EvoGen
from contrastive_diffusers.training.data import DataError
from contrastive_diffusers.training.args import parse_method_args
from contrastive_diffusers.training.loop import train
from contrastive_diffusers.training.pairs import load_pairs

pytestmark = pytest.mark.usefixtures("single_thread")

PROMPTS = [
    PromptItem("a", "a red car and a blue bench", token_groups=[["red", "car"], ["blue", "bench"]]),
    PromptItem("b", "a cat and a dog and a car", token_groups=[["cat"], ["dog"], ["car"]]),
    PromptItem("c", "a dog and a red bench", token_groups=[["dog"], ["red", "bench"]]),
    PromptItem("d", "a red car", token_groups=[["red", "car"]]),  # one object: stage 1
]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-sd1")
    tiny_pipeline("sd1").save_pretrained(folder)
    return folder


class _Recording:
    """The tiny pipeline, remembering which prompt made which image (for a hand-made scorer)."""

    def __init__(self, pipe):
        self.pipe, self.made = pipe, {}

    def __call__(self, prompts, **kwargs):
        from diffusers.image_processor import VaeImageProcessor

        out = self.pipe(prompts, **kwargs)
        image = out.images[0] if kwargs.get("output_type") != "np" else VaeImageProcessor.numpy_to_pil(out.images)[0]
        self.made[image.tobytes()] = prompts[0]  # as the scorer will see it
        return out


@pytest.fixture(scope="module")
def pairs(model, tmp_path_factory):
    from diffusers import StableDiffusionPipeline

    pipe = _Recording(StableDiffusionPipeline.from_pretrained(model))
    pipe.pipe.set_progress_bar_config(disable=True)

    def scorer(images, texts):  # 1 when the image was generated from the text
        return torch.tensor([float(pipe.made[i.convert("RGB").tobytes()] == t) for i, t in zip(images, texts)])

    out = tmp_path_factory.mktemp("pairs")
    report = build_pairs(PROMPTS, pipe, out, scorer=scorer, seeds=(0,),
                         options={"num_inference_steps": 2, "height": 64, "width": 64, "guidance_scale": 7.5})
    assert len(report.kept) == 6 and not report.rejected
    assert sorted({p.stage for p in load_pairs(out)}) == [1, 2, 3]
    return out


def _run(method, model, data, out, *extra, on_step=None):
    argv = ["--pretrained_model_name_or_path", str(model), "--train_data_dir", str(data), "--output_dir", str(out),
            "--resolution", "64", "--seed", "0", *map(str, extra)]
    return train(parse_method_args(method, argv, "test"), method, on_step=on_step)


def _lora(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "pytorch_lora_weights.safetensors"))


class _Killed(Exception):
    pass


def test_evogen_three_stages_loads_in_diffusers_and_resumes_in_stage(model, pairs, tmp_path):
    from diffusers import StableDiffusionPipeline

    common = ["--stage_steps", "2,2,2", "--train_batch_size", 2, "--checkpointing_steps", 3, "--learning_rate", 1e-3,
              "--rank", 4, "--lora_alpha", 8]
    straight = _run(EvoGen(), model, pairs, tmp_path / "a", *common)
    assert straight.global_step == 6 and straight.state["curriculum"]["index"] == 3
    assert [m["stage"] for m in straight.metrics] == [1, 1, 2, 2, 3, 3]
    assert {"loss", "denoise_loss", "objective_loss", "pair_margin", "pair_accuracy"} <= set(straight.metrics[0])
    state = json.loads((tmp_path / "a" / "checkpoint-3" / "training_state.json").read_text())
    assert state["curriculum"] == {"index": 1, "start_step": 2, "stages": [1, 2, 3]}
    assert sorted(p.name for p in (tmp_path / "a" / "checkpoint-3").iterdir()) == [
        "lora_state.safetensors", "optimizer.bin", "random_states_0.pkl", "scheduler.bin", "training_state.json"]

    # killed after the checkpoint at step 3 (stage 2's first step), resumed from the latest
    def kill(step, _):
        if step == 3:
            raise _Killed

    with pytest.raises(_Killed):
        _run(EvoGen(), model, pairs, tmp_path / "b", *common, on_step=kill)
    seen = []
    resumed = _run(EvoGen(), model, pairs, tmp_path / "b", *common, "--resume_from_checkpoint", "latest",
                   on_step=lambda step, record: seen.append((step, record["stage"], record["stage_step"])))
    assert seen[0] == (4, 2, 2)  # continues in stage 2 at its second step
    assert [m["stage"] for m in resumed.metrics] == [1, 1, 2, 2, 3, 3]
    a, b = _lora(tmp_path / "a"), _lora(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) > 0
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"resume: largest LoRA weight difference to the uninterrupted run {worst:.2e}")
    assert worst <= 1e-6
    for x, y in zip(straight.metrics, resumed.metrics):
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-6)

    # stock diffusers loads the output, and it changes the image
    def image(pipe):
        pipe.set_progress_bar_config(disable=True)
        return np.asarray(pipe("a red car and a blue bench", num_inference_steps=2, height=64, width=64,
                               output_type="np", generator=torch.Generator().manual_seed(0)).images[0])

    base = StableDiffusionPipeline.from_pretrained(model)
    tuned = StableDiffusionPipeline.from_pretrained(model)
    tuned.load_lora_weights(tmp_path / "a")
    # alpha travels with the weights: the loaded layers scale by alpha / rank = 2, as in training
    from peft.tuners.lora import LoraLayer

    scalings = {v for mod in tuned.unet.modules() if isinstance(mod, LoraLayer) for v in mod.scaling.values()}
    assert scalings == {2.0}
    change = np.abs(image(tuned) - image(base)).max()
    print(f"largest pixel change with the LoRA: {change:.4f}")
    assert change > 1e-4
    run = json.loads((tmp_path / "a" / "training_run.json").read_text())
    assert run["method"] == "evogen" and run["status"] == "finished" and run["method_settings"]["stages"] == [1, 2, 3]


def test_contrastive_objective_widens_the_gap_on_a_fixed_batch(model, tmp_path):
    """One fixed batch (two ShapesWorld pairs, whose positive and negative clearly differ; the
    tiny random pipeline's pairs differ by ~2/255 per pixel), fixed noise and timesteps, LoRA on
    the tiny UNet, the InfoNCE objective: the margin e⁻ − e⁺ grows (the number is printed)."""
    from contrastive_diffusers.shapes.export import export_evogen

    pairs = export_evogen(tmp_path / "shapes", per_stage=1, size=64)
    from diffusers import DDPMScheduler, StableDiffusionPipeline
    from peft import LoraConfig

    from contrastive_diffusers.training.objectives import contrastive_infonce, pair_margin, per_sample_error

    pipe = StableDiffusionPipeline.from_pretrained(model)
    chosen = load_pairs(pairs)[:2]
    pixels = []
    for pair in chosen:
        for path in (pair.positive, pair.negative):
            array = np.asarray(Image.open(path).convert("RGB").resize((64, 64)), dtype=np.float32) / 127.5 - 1
            pixels.append(torch.from_numpy(array).permute(2, 0, 1))
    with torch.no_grad():
        latents = pipe.vae.encode(torch.stack(pixels)).latent_dist.mean * pipe.vae.config.scaling_factor
        latents = torch.cat([latents[0::2], latents[1::2]])  # positives, then negatives
        ids = pipe.tokenizer([p.caption for p in chosen], padding="max_length",
                             max_length=pipe.tokenizer.model_max_length, return_tensors="pt").input_ids
        hidden = pipe.text_encoder(ids)[0].repeat(2, 1, 1)  # each negative under its positive's caption
    noise = torch.randn(latents[:2].shape, generator=torch.Generator().manual_seed(0)).repeat(2, 1, 1, 1)
    timesteps = torch.tensor([300, 600, 300, 600])  # the same noise and t for a pair's two images
    noisy = DDPMScheduler(num_train_timesteps=1000).add_noise(latents, noise, timesteps)
    torch.manual_seed(0)
    unet = pipe.unet
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    optimizer = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=1e-2)

    def errors():
        e = per_sample_error(unet(noisy, timesteps, hidden).sample, noise)
        return e[:2], e[2:]

    with torch.no_grad():
        before, before_accuracy = pair_margin(*errors())
    for _ in range(30):
        loss = contrastive_infonce(*errors(), temperature=0.01)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after, after_accuracy = pair_margin(*errors())
    print(f"margin (e- - e+) on the fixed batch: {before.item():.5f} -> {after.item():.5f}; "
          f"pairs with e+ < e-: {before_accuracy.item():.2f} -> {after_accuracy.item():.2f}")
    # measured: 0.00045 -> 0.02708 (errors are ~1.09 on the random tiny UNet); where the pairs start
    # ordered depends on the random weights, so only the end is asserted
    assert after.item() > before.item() + 1e-3 and after_accuracy.item() == 1.0


def test_the_recorded_seed_of_a_run_without_one_reproduces_it(model, pairs, tmp_path):
    """--seed omitted: the seed is drawn and recorded before the LoRA adapters are drawn from it."""
    def run(out, *seed):
        argv = ["--pretrained_model_name_or_path", str(model), "--train_data_dir", str(pairs), "--output_dir",
                str(out), "--resolution", "64", "--stage_steps", "1,1,1", *seed]
        train(parse_method_args(EvoGen(), argv, "test"), EvoGen())
        return json.loads((out / "training_run.json").read_text())["seed"]

    drawn = run(tmp_path / "drawn")
    assert run(tmp_path / "again", "--seed", str(drawn)) == drawn
    first, again = _lora(tmp_path / "drawn"), _lora(tmp_path / "again")
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)


def test_margin_objective_starts_at_log2_and_dco_trains(model, pairs, tmp_path):
    from diffusers import StableDiffusionPipeline

    result = _run(EvoGen(), model, pairs, tmp_path / "m", "--objective", "margin", "--stage_steps", "1,1,1",
                  "--train_batch_size", 2, "--learning_rate", 1e-3, "--checkpointing_steps", 100)
    assert result.metrics[0]["objective_loss"] == pytest.approx(math.log(2), abs=1e-6)  # model == reference
    assert result.metrics[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # w_d defaults to 0 for margin
    # after training, the reference (adapters disabled) is still exactly the base UNet,
    # and the trained UNet is not
    from diffusers import UNet2DConditionModel

    from contrastive_diffusers.training.lora import adapters_disabled

    base = UNet2DConditionModel.from_pretrained(model, subfolder="unet")
    g = torch.Generator().manual_seed(0)
    x, hidden = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 77, base.config.cross_attention_dim, generator=g)
    t = torch.tensor([500])
    with torch.no_grad():
        expected = base(x, t, hidden).sample
        trained = result.unet(x, t, hidden).sample
        with adapters_disabled(result.unet):
            reference = result.unet(x, t, hidden).sample
    assert torch.allclose(reference, expected, atol=1e-6) and not torch.allclose(trained, expected, atol=1e-6)

    images = tmp_path / "dog"
    images.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(images / f"{i}.png")
        rows.append(json.dumps({"file_name": f"{i}.png", "text": "a photo of sks dog"}))
    (images / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    dco = _run(DCO(), model, images, tmp_path / "d", "--max_train_steps", 3, "--learning_rate", 1e-3,
               "--text_encoder_lr", 1e-3, "--checkpointing_steps", 100, "--train_text_encoder")
    assert dco.metrics[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert dco.metrics[-1]["loss"] != pytest.approx(math.log(2), abs=1e-6)
    pipe = StableDiffusionPipeline.from_pretrained(model)
    ids = pipe.tokenizer(["a photo of sks dog"], return_tensors="pt").input_ids
    with torch.no_grad():
        before = pipe.text_encoder(ids)[0]
        pipe.load_lora_weights(tmp_path / "d")  # UNet and text-encoder LoRA
        after = pipe.text_encoder(ids)[0]
    assert any("text_encoder" in k for k in _lora(tmp_path / "d"))
    assert (after - before).abs().max() > 1e-6  # the loaded text-encoder LoRA acts
    # a caption with a "{}" slot (a ReVersion text.json) would be trained as written: refused
    (images / "metadata.jsonl").write_text(json.dumps({"file_name": "0.png", "text": "a photo of {} dog"}) + "\n"
                                           + rows[1] + "\n")
    with pytest.raises(DataError, match=r"0.png in .* have captions with a '\{\}' slot, which DCO trains as written"):
        _run(DCO(), model, images, tmp_path / "slot", "--max_train_steps", 1)


def test_text_encoder_lora_has_its_own_learning_rate(model, tmp_path):
    """DCO's text-encoder LoRA learns at the authors' 5e-6 beside the UNet's 5e-5 (kyungmnlee/dco
    customize.py --text_encoder_lr); EvoGen's, without --text_encoder_lr, at --learning_rate."""
    images = tmp_path / "dog"
    images.mkdir()
    Image.new("RGB", (64, 64), (200, 40, 40)).save(images / "0.png")
    (images / "metadata.jsonl").write_text(json.dumps({"file_name": "0.png", "text": "a photo of sks dog"}) + "\n")
    dco = _run(DCO(), model, images, tmp_path / "d", "--max_train_steps", 2, "--checkpointing_steps", 100,
               "--train_text_encoder", "--lr_scheduler", "linear")
    assert [(m["lr"], m["text_encoder_lr"]) for m in dco.metrics] == [
        pytest.approx((5e-5 / 2, 5e-6 / 2)), pytest.approx((0.0, 0.0))]  # linear decay scales both groups
    unet_only = _run(DCO(), model, images, tmp_path / "u", "--max_train_steps", 1, "--checkpointing_steps", 100)
    assert "text_encoder_lr" not in unet_only.metrics[0] and unet_only.metrics[0]["lr"] == pytest.approx(5e-5)
    args = parse_method_args(EvoGen(), ["--pretrained_model_name_or_path", "m", "--train_data_dir", "d",
                                        "--train_text_encoder"], "evogen")
    assert args.text_encoder_lr is None
    # without --train_text_encoder there is nothing it applies to: unset, and refused when given
    dco_args = parse_method_args(DCO(), ["--pretrained_model_name_or_path", "m", "--train_data_dir", "d"], "dco")
    assert dco_args.text_encoder_lr is None
    for extra in (["--text_encoder_lr", "0", "--train_text_encoder"], ["--text_encoder_lr", "1e-4"]):
        with pytest.raises(SystemExit):
            parse_method_args(DCO(), ["--pretrained_model_name_or_path", "m", "--train_data_dir", "d", *extra], "dco")


def test_a_checkpoint_from_before_text_encoder_lr_resumes_as_it_ran(model, tmp_path, monkeypatch, recwarn):
    """A DCO checkpoint written when the text encoders learned at --learning_rate in the one
    optimizer group resumes that way (its optimizer state has one group), with no warning."""
    from contrastive_diffusers.training.lora import LoraMethod
    from contrastive_diffusers.training.method import TrainingMethod

    images = tmp_path / "dog"
    images.mkdir()
    Image.new("RGB", (64, 64), (200, 40, 40)).save(images / "0.png")
    (images / "metadata.jsonl").write_text(json.dumps({"file_name": "0.png", "text": "a photo of sks dog"}) + "\n")
    options = ("--max_train_steps", 2, "--checkpointing_steps", 1, "--train_text_encoder")
    with monkeypatch.context() as old_version:
        old_version.setattr(LoraMethod, "optimizer_groups", TrainingMethod.optimizer_groups)
        _run(DCO(), model, images, tmp_path / "run", *options)
    state_file = tmp_path / "run" / "checkpoint-1" / "training_state.json"
    state = json.loads(state_file.read_text())
    del state["settings"]["text_encoder_lr"]  # as that version wrote it
    state_file.write_text(json.dumps(state))
    recwarn.clear()
    resumed = _run(DCO(), model, images, tmp_path / "run", *options, "--resume_from_checkpoint",
                   tmp_path / "run" / "checkpoint-1")
    assert [m["step"] for m in resumed.metrics] == [1, 2] and "text_encoder_lr" not in resumed.metrics[-1]
    assert not [w for w in recwarn if "changed settings" in str(w.message)]
    # the continued run's own checkpoints continue the same way
    again = _run(DCO(), model, images, tmp_path / "run", "--max_train_steps", 3, "--checkpointing_steps", 1,
                 "--train_text_encoder", "--resume_from_checkpoint", "latest")
    assert [m["step"] for m in again.metrics] == [1, 2, 3] and "text_encoder_lr" not in again.metrics[-1]


def test_argument_errors(model, pairs, tmp_path):
    def parse(method, *extra):
        argv = ["--pretrained_model_name_or_path", str(model), "--train_data_dir", str(pairs),
                "--output_dir", str(tmp_path), *map(str, extra)]
        return parse_method_args(method, argv, "evogen")

    assert parse(EvoGen(), "--stage_steps", "3,4,5").max_train_steps == 12
    # weights by objective: the contrastive term at the authors' 0.1 (at 1 it wrecked the ShapesWorld
    # model), the margin one at 1 without the MSE; an explicit weight wins
    contrastive, margin = parse(EvoGen()), parse(EvoGen(), "--objective", "margin")
    assert (contrastive.contrastive_loss_weight, contrastive.denoise_loss_weight) == (0.1, 1.0)
    assert (margin.contrastive_loss_weight, margin.denoise_loss_weight) == (1.0, 0.0)
    assert parse(EvoGen(), "--contrastive_loss_weight", "0.5").contrastive_loss_weight == 0.5
    for extra in (["--stage_steps", "3,4", "--max_train_steps", 5], ["--stage_steps", "5,5", "--max_train_steps", 3000],
                  ["--placeholder_token", "<x>"],
                  ["--flip_p", 0.5], ["--advance_metric", "margin"], ["--stage_steps", "a,b"]):
        with pytest.raises(SystemExit):
            parse(EvoGen(), *extra)
    with pytest.raises(ValueError, match="one --stage_steps value per stage"):
        _run(EvoGen(), model, pairs, tmp_path / "x", "--stage_steps", "1,1")


@pytest.mark.slow
def test_accelerate_launch_and_train_cli(model, pairs, tmp_path):
    import os
    import subprocess
    import sys

    from contrastive_diffusers.training.cli import METHODS

    assert {"evogen", "dco"} <= set(METHODS)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = tmp_path / "launched"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--num_processes", "1", "--cpu", "-m", "contrastive_diffusers.training.evogen",
           "--pretrained_model_name_or_path", str(model), "--train_data_dir", str(pairs), "--output_dir", str(out),
           "--resolution", "64", "--seed", "0", "--stage_steps", "1,1,1", "--checkpointing_steps", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Trained evogen in 3 steps" in done.stdout
    assert (out / "pytorch_lora_weights.safetensors").exists()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # the weights' staging folder is gone
    state = json.loads((out / "checkpoint-2" / "training_state.json").read_text())
    assert state["curriculum"]["index"] == 2
    cli = subprocess.run([sys.executable, "-m", "contrastive_diffusers", "train", "evogen", "--help"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert cli.returncode == 0 and "--stage_steps" in cli.stdout and "--objective" in cli.stdout


def test_advance_rule_ends_stages_early_and_a_finished_run_resumes_cleanly(model, pairs, tmp_path):
    # a threshold every check passes: each stage ends after its first check (1 step)
    common = ["--stage_steps", "2,2,2", "--train_batch_size", 2, "--checkpointing_steps", 3, "--learning_rate", 1e-3,
              "--advance_metric", "val_loss", "--advance_threshold", 1e9, "--advance_check_steps", 1,
              "--advance_eval_pairs", 2]
    first = _run(EvoGen(), model, pairs, tmp_path / "o", *common)
    assert [m["stage"] for m in first.metrics] == [1, 2, 3] and first.global_step == 3
    assert all(m.get("advanced") for m in first.metrics)
    weights = _lora(tmp_path / "o")
    # resuming the finished run (its checkpoint is at the last step) trains nothing and saves the same LoRA
    again = _run(EvoGen(), model, pairs, tmp_path / "o", *common, "--resume_from_checkpoint", "latest")
    assert again.global_step == 3 and again.state["curriculum"]["index"] == 3
    assert all(torch.equal(weights[k], v) for k, v in _lora(tmp_path / "o").items())
