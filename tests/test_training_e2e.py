"""End to end on tiny saved pipelines (CPU, 64 px, a few steps): ReVersion and MCPL train only
the new rows, save files stock diffusers loads, resume exactly, and their contrastive terms
fall; SD 2.x (pads with "!", v-prediction), SDXL (two encoders), bf16, gradient checkpointing."""

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contrastive_diffusers.models.tiny import tiny_pipeline
from contrastive_diffusers.training.args import parse_method_args
from contrastive_diffusers.training.interrupt import StopRequests, TrainingInterrupted
from contrastive_diffusers.training.loop import train
from contrastive_diffusers.training.mcpl import MCPL
from contrastive_diffusers.training.reversion import ReVersion
from contrastive_diffusers.training.save import load_learned_embeds
from contrastive_diffusers.training.textual_inversion import TextualInversion

# Tiny models gain nothing from threads; on a shared machine extra threads spin.
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    paths = {}
    for kind in ("sd1", "sd2", "sdxl"):
        tiny_pipeline(kind).save_pretrained(root / kind)
        paths[kind] = root / kind
    return paths


def _images(folder, n):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(folder / f"{i}.png")


@pytest.fixture(scope="module")
def relation_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("relation")
    _images(folder, 3)
    (folder / "text.json").write_text(
        json.dumps({f"{i}.png": ["cat {} basket", "a dog {} the red box"] for i in range(3)})
    )
    return folder


@pytest.fixture(scope="module")
def concept_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("concepts")
    _images(folder, 3)
    with open(folder / "metadata.jsonl", "w") as f:
        for i in range(3):
            f.write(json.dumps({"file_name": f"{i}.png", "text": "a <c1> ball on a <c2> box"}) + "\n")
    return folder


def _run(method, model, data, out, *extra, on_step=None):
    argv = [
        "--pretrained_model_name_or_path",
        str(model),
        "--train_data_dir",
        str(data),
        "--output_dir",
        str(out),
        "--resolution",
        "64",
        "--seed",
        "0",
        "--gradient_accumulation_steps",
        "1",
        *map(str, extra),
    ]
    return train(parse_method_args(method, argv, "test"), method, on_step=on_step)


def _original_weight(model, subfolder="text_encoder"):
    from transformers import CLIPTextModel

    return CLIPTextModel.from_pretrained(model, subfolder=subfolder).get_input_embeddings().weight.detach()


def test_reversion_end_to_end(models, relation_data, tmp_path):
    from diffusers import StableDiffusionPipeline

    out = tmp_path / "out"
    result = _run(
        ReVersion(),
        models["sd1"],
        relation_data,
        out,
        "--max_train_steps",
        3,
        "--train_batch_size",
        2,
        "--checkpointing_steps",
        2,
        "--save_steps",
        2,
        "--validation_prompt",
        "cat <R> dog",
        "--validation_steps",
        3,
        "--num_validation_images",
        2,
        "--validation_num_inference_steps",
        2,
    )
    assert result.global_step == 3
    original = _original_weight(models["sd1"])
    weight = result.text_encoders[0].get_input_embeddings().weight.detach()
    assert torch.equal(weight[: original.shape[0]], original)  # every other row bit-identical
    and_row = original[result.tokenizers[0].convert_tokens_to_ids("and</w>")]
    assert not torch.allclose(result.learned[0][0], and_row)  # the new row trained away from "and"
    assert torch.equal(weight[original.shape[0]], result.learned[0][0])

    # the output loads with stock diffusers and carries the trained row
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            "checkpoint-2",
            "learned_embeds-steps-2",
            "learned_embeds.json",
            "learned_embeds.safetensors",
            "README.md",
            "training_run.json",
            "validation",
        ]
    )
    pipe = StableDiffusionPipeline.from_pretrained(models["sd1"])
    pipe.load_textual_inversion(out / "learned_embeds.safetensors")
    token_id = pipe.tokenizer.convert_tokens_to_ids("<R>")
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight[token_id], result.learned[0][0])
    assert (out / "learned_embeds-steps-2" / "learned_embeds.safetensors").exists()
    assert Image.open(out / "validation" / "step-3.png").size == (128, 64)

    # the learned token changes the image (against the same pipeline with <R> = "and")
    def image(p):
        p.set_progress_bar_config(disable=True)
        return np.asarray(
            p(
                "cat <R> dog",
                num_inference_steps=2,
                height=64,
                width=64,
                output_type="np",
                generator=torch.Generator().manual_seed(0),
            ).images[0]
        )

    base = StableDiffusionPipeline.from_pretrained(models["sd1"])
    base.load_textual_inversion({"<R>": and_row.clone()})
    assert np.abs(image(pipe) - image(base)).max() > 1e-4

    run = json.loads((out / "training_run.json").read_text())
    assert run["status"] == "finished" and run["global_step"] == 3 and len(run["metrics"]) == 3
    assert {"loss", "denoise_loss", "steering_loss", "lr", "step_time_s"} <= set(run["metrics"][0])
    assert run["effective_learning_rate"] == pytest.approx(2.5e-4 * 2)  # scale_lr: batch 2 x accumulation 1
    assert run["tokens"][0]["initializer_pieces"] == [["and</w>"]]
    assert run["summary"]["median_step_time_s"] > 0 and run["summary"]["peak_memory_mb"] > 0


class _Killed(Exception):
    pass


def test_interrupted_run_resumes_exactly(models, relation_data, tmp_path):
    handler_before = signal.getsignal(signal.SIGINT)
    common = [
        "--max_train_steps",
        4,
        "--train_batch_size",
        2,
        "--gradient_accumulation_steps",
        2,
        "--checkpointing_steps",
        2,
        "--lr_scheduler",
        "cosine",
        "--lr_warmup_steps",
        1,
        "--learning_rate",
        1e-3,
    ]
    straight = _run(ReVersion(), models["sd1"], relation_data, tmp_path / "a", *common)

    def kill_after_three(step, _):
        if step == 3:
            raise _Killed

    with pytest.raises(_Killed):
        _run(ReVersion(), models["sd1"], relation_data, tmp_path / "b", *common, on_step=kill_after_three)
    assert json.loads((tmp_path / "b" / "training_run.json").read_text())["status"] == "failed"
    (tmp_path / "b" / "checkpoint-9").mkdir()  # a save cut short (no state file) is not resumed from
    resumed = _run(
        ReVersion(), models["sd1"], relation_data, tmp_path / "b", *common, "--resume_from_checkpoint", "latest"
    )
    assert resumed.global_step == 4
    assert torch.allclose(resumed.learned[0], straight.learned[0], atol=1e-6, rtol=0)
    for a, b in zip(straight.metrics, resumed.metrics):
        assert a["step"] == b["step"] and a["loss"] == pytest.approx(b["loss"], abs=1e-6)
        assert a["lr"] == pytest.approx(b["lr"])
    assert [m["step"] for m in resumed.metrics] == [1, 2, 3, 4]
    # A new run into the folder would prune or mix the finished run's checkpoints: refused.
    with pytest.raises(ValueError, match="already holds checkpoints of an earlier run.*--resume_from_checkpoint latest"):
        _run(ReVersion(), models["sd1"], relation_data, tmp_path / "b", *common)
    assert (tmp_path / "b" / "checkpoint-4" / "training_state.json").exists()
    # another tool's checkpoint folder (no state file) in a new run's folder: refused, not pruned
    (tmp_path / "foreign" / "checkpoint-5000").mkdir(parents=True)
    with pytest.raises(ValueError, match="checkpoint folders without training_state.json \\(checkpoint-5000\\)"):
        _run(ReVersion(), models["sd1"], relation_data, tmp_path / "foreign", *common)
    assert (tmp_path / "foreign" / "checkpoint-5000").is_dir()
    with pytest.raises(ValueError, match="resume with the same seed"):
        _run(
            ReVersion(),
            models["sd1"],
            relation_data,
            tmp_path / "b",
            *common[:-2],
            "--learning_rate",
            1e-3,
            "--resume_from_checkpoint",
            "checkpoint-2",
            "--seed",
            5,
        )

    # Ctrl-C: the step in progress ends, a checkpoint is saved there (3 is not a checkpointing
    # step) and the run resumes from it exactly.
    def ctrl_c_at_three(step, _):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted, match="SIGINT received: stopped at step 3") as stopped:
        _run(ReVersion(), models["sd1"], relation_data, tmp_path / "c", *common, on_step=ctrl_c_at_three)
    assert stopped.value.exit_code == 130 and stopped.value.checkpoint == tmp_path / "c" / "checkpoint-3"
    assert (tmp_path / "c" / "checkpoint-3" / "training_state.json").exists()
    assert json.loads((tmp_path / "c" / "training_run.json").read_text())["status"] == "interrupted"
    assert signal.getsignal(signal.SIGINT) is handler_before  # restored after the run
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = _run(
            ReVersion(), models["sd1"], relation_data, tmp_path / "c", *common, "--resume_from_checkpoint", "latest"
        )
    assert not [w for w in caught if "changed settings" in str(w.message)]
    assert torch.allclose(resumed.learned[0], straight.learned[0], atol=1e-6, rtol=0)

    # Resuming with settings the steps depend on changed is allowed, but named and recorded;
    # --max_train_steps counts for the cosine schedule.
    with pytest.warns(UserWarning, match=r"changed settings \(--learning_rate 0.001 -> 0.002; --max_train_steps 4 -> 5\)"):
        _run(
            ReVersion(),
            models["sd1"],
            relation_data,
            tmp_path / "c",
            *common[:1],
            5,
            *common[2:-2],
            "--learning_rate",
            2e-3,
            "--resume_from_checkpoint",
            "checkpoint-2",
            "--checkpointing_steps",
            10,
        )
    record = json.loads((tmp_path / "c" / "training_run.json").read_text())
    assert record["resumed_with_changed_settings"] == {
        "learning_rate": {"checkpoint": 1e-3, "run": 2e-3},
        "max_train_steps": {"checkpoint": 4, "run": 5},
    }


def test_a_second_ctrl_c_stops_at_once(models, relation_data, tmp_path, monkeypatch):
    def twice(step, _):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)

    # Back to back, the second signal is the first one delivered again (as launchers forward
    # it): the run still stops after the step and saves.
    with pytest.raises(TrainingInterrupted, match="stopped at step 1"):
        _run(ReVersion(), models["sd1"], relation_data, tmp_path / "forwarded", "--max_train_steps", 3, on_step=twice)
    assert (tmp_path / "forwarded" / "checkpoint-1" / "training_state.json").exists()

    monkeypatch.setattr(StopRequests, "same_request_s", 0.0)
    with pytest.raises(KeyboardInterrupt, match="SIGINT received twice") as stopped:
        _run(ReVersion(), models["sd1"], relation_data, tmp_path / "twice", "--max_train_steps", 3, on_step=twice)
    assert not isinstance(stopped.value, TrainingInterrupted)
    assert not list((tmp_path / "twice").glob("checkpoint-*"))
    assert json.loads((tmp_path / "twice" / "training_run.json").read_text())["status"] == "interrupted"
    assert TrainingInterrupted(1, tmp_path, "SIGTERM").exit_code == 143


@pytest.mark.slow
def test_the_command_saves_a_checkpoint_on_ctrl_c(models, relation_data, tmp_path):
    """A real SIGINT to a training process: exit code 130, a checkpoint at the step it stopped."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "contrastive_diffusers.training.reversion",
            "--pretrained_model_name_or_path",
            str(models["sd1"]),
            "--train_data_dir",
            str(relation_data),
            "--output_dir",
            str(tmp_path),
            "--resolution",
            "64",
            "--max_train_steps",
            "100000",
            "--checkpointing_steps",
            "100000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    record = tmp_path / "training_run.json"
    deadline = time.monotonic() + 120
    while not (record.exists() and '"running"' in record.read_text()) and process.poll() is None:
        assert time.monotonic() < deadline, "the training did not start"
        time.sleep(0.2)
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    step = json.loads(record.read_text())["global_step"]
    assert step >= 1 and f"stopped at step {step}" in stderr and "--resume_from_checkpoint latest" in stderr
    assert (tmp_path / f"checkpoint-{step}" / "training_state.json").exists()


def test_mcpl_end_to_end_two_tokens(models, concept_data, tmp_path):
    from diffusers import StableDiffusionPipeline

    out = tmp_path / "out"
    # batch 3 with 2 tokens: not a multiple of the token count
    result = _run(
        MCPL(),
        models["sd1"],
        concept_data,
        out,
        "--placeholder_tokens",
        "<c1>,<c2>",
        "--initializer_tokens",
        "red,white",
        "--max_train_steps",
        2,
        "--train_batch_size",
        3,
        "--attn_res",
        4,
        "--bind_adjectives",
        "<c1>:<c2>",
        "--checkpointing_steps",
        10,
    )
    # per-image relation words: a token that only one image's caption has still trains
    per_image = tmp_path / "per-image"
    _images(per_image, 2)
    (per_image / "metadata.jsonl").write_text(
        "".join(
            json.dumps({"file_name": f"{i}.png", "text": text}) + "\n"
            for i, text in enumerate(["<b> <on-0> <x>", "<b> <under-1> <x>"])
        )
    )
    varied = _run(
        MCPL(),
        models["sd1"],
        per_image,
        tmp_path / "varied",
        "--placeholder_tokens",
        "<b>,<x>,<on-0>,<under-1>",
        "--initializer_tokens",
        "ball,box,on,under",
        "--max_train_steps",
        2,
        "--train_batch_size",
        1,
        "--attn_res",
        4,
        "--checkpointing_steps",
        10,
        "--adam_weight_decay",
        0,  # so that only a gradient can move a row
    )
    start_on = _original_weight(models["sd1"])[varied.tokenizers[0].convert_tokens_to_ids("on</w>")]
    assert (varied.learned[0][2] - start_on).abs().max() > 1e-4
    assert (tmp_path / "varied" / "learned_embeds-under-1.safetensors").exists()
    original = _original_weight(models["sd1"])
    weight = result.text_encoders[0].get_input_embeddings().weight.detach()
    assert torch.equal(weight[: original.shape[0]], original)
    files = sorted(str(p) for p in out.glob("learned_embeds-*.safetensors"))
    assert [p.rsplit("/", 1)[1] for p in files] == ["learned_embeds-c1.safetensors", "learned_embeds-c2.safetensors"]
    pipe = StableDiffusionPipeline.from_pretrained(models["sd1"])
    pipe.load_textual_inversion(files)
    loaded = pipe.text_encoder.get_input_embeddings().weight
    for i, token in enumerate(["<c1>", "<c2>"]):
        assert torch.equal(loaded[pipe.tokenizer.convert_tokens_to_ids(token)], result.learned[0][i])
    run = json.loads((out / "training_run.json").read_text())
    assert {"promptcl_loss", "mask_fraction"} <= set(run["metrics"][0])
    assert 0 < run["metrics"][0]["mask_fraction"] < 1
    assert run["method_settings"]["attn_res"] == 4 and run["method_settings"]["attn_layers"]
    # the official code names the mask's tokens and PromptCL's apart (--attn_words, --presudo_words_infonce)
    common = ["--placeholder_tokens", "<c1>,<c2>", "--initializer_tokens", "red,white", "--max_train_steps", 1,
              "--train_batch_size", 3, "--attn_res", 4, "--checkpointing_steps", 10]
    both = _run(MCPL(), models["sd1"], concept_data, tmp_path / "both", *common).metrics[0]
    chosen = _run(MCPL(), models["sd1"], concept_data, tmp_path / "chosen", *common, "--attn_tokens", "<c1>",
                  "--promptcl_tokens", "<c2>").metrics[0]
    assert chosen["mask_fraction"] != both["mask_fraction"]  # one token's maps make the mask, not both
    assert both["promptcl_loss"] > 0 and chosen["promptcl_loss"] == 0  # one token alone has no negatives
    with pytest.warns(UserWarning, match="pairs each token with a copy of another token"):  # batch 3, 2 tokens
        official = _run(MCPL(), models["sd1"], concept_data, tmp_path / "official", *common,
                        "--promptcl_pairing", "official").metrics[0]
    assert official["promptcl_loss"] > 0 and official["promptcl_loss"] != both["promptcl_loss"]


def test_contrastive_losses_fall_on_a_fixed_batch(models, tmp_path):
    folder = tmp_path / "one"
    _images(folder, 1)
    (folder / "text.json").write_text(json.dumps({"0.png": ["cat {} basket"]}))
    result = _run(
        ReVersion(),
        models["sd1"],
        folder,
        tmp_path / "r",
        "--max_train_steps",
        8,
        "--train_batch_size",
        1,
        "--prepositions",
        "on,under,above,beside",
        "--learning_rate",
        2e-3,
        "--no_scale_lr",
        "--checkpointing_steps",
        100,
    )
    steer = [m["steering_loss"] for m in result.metrics]
    assert steer[-1] < 0.5 * steer[0], steer

    meta = tmp_path / "two"
    _images(meta, 1)
    (meta / "metadata.jsonl").write_text(json.dumps({"file_name": "0.png", "text": "a <c1> on a <c2>"}) + "\n")
    result = _run(
        MCPL(),
        models["sd1"],
        meta,
        tmp_path / "m",
        "--placeholder_tokens",
        "<c1>,<c2>",
        "--initializer_tokens",
        "red,red",
        "--max_train_steps",
        8,
        "--train_batch_size",
        1,
        "--view_templates",
        "{}|a photo of {}",
        "--learning_rate",
        2e-3,
        "--no_scale_lr",
        "--attn_mask",
        "none",
        # weighted 1 (not 7.5e-4), PromptCL leads the update rather than the denoising loss
        # (measured: 1.288 -> 0.971 over the 8 steps, falling at every step)
        "--promptcl_weight",
        1.0,
        "--checkpointing_steps",
        100,
    )
    cl = [m["promptcl_loss"] for m in result.metrics]
    assert cl[-1] < 0.9 * cl[0], cl


def test_sd2_pads_with_a_real_token_and_predicts_v(models, relation_data, tmp_path):
    result = _run(
        ReVersion(),
        models["sd2"],
        relation_data,
        tmp_path / "o",
        "--max_train_steps",
        2,
        "--train_batch_size",
        2,
        "--checkpointing_steps",
        10,
    )
    assert result.tokenizers[0].pad_token == "!"
    original = _original_weight(models["sd2"])
    assert torch.equal(result.text_encoders[0].get_input_embeddings().weight[: original.shape[0]], original)
    run = json.loads((tmp_path / "o" / "training_run.json").read_text())
    assert run["prediction_type"] == "v_prediction" and np.isfinite(run["metrics"][-1]["loss"])


def test_sdxl_trains_both_encoders_and_writes_one_file_per_encoder(models, concept_data, tmp_path):
    from diffusers import StableDiffusionXLPipeline
    from safetensors.torch import load_file

    out = tmp_path / "out"
    result = _run(
        MCPL(),
        models["sdxl"],
        concept_data,
        out,
        "--placeholder_tokens",
        "<c1>,<c2>",
        "--initializer_tokens",
        "red,white",
        "--max_train_steps",
        2,
        "--train_batch_size",
        2,
        "--checkpointing_steps",
        10,
        "--validation_prompt",
        "a <c1> ball",
        "--validation_steps",
        2,
        "--num_validation_images",
        1,
        "--validation_num_inference_steps",
        2,
    )
    assert len(result.learned) == 2
    assert (out / "validation" / "step-2.png").exists()
    for k, sub in enumerate(["text_encoder", "text_encoder_2"]):
        original = _original_weight(models["sdxl"], sub)
        weight = result.text_encoders[k].get_input_embeddings().weight.detach()
        assert torch.equal(weight[: original.shape[0]], original)
        assert not torch.allclose(result.learned[k][0], original[result.tokenizers[k].convert_tokens_to_ids("red</w>")])
    names = sorted(p.name for p in out.glob("learned_embeds*.safetensors"))
    assert names == sorted(f"learned_embeds{e}-{n}.safetensors" for e in ("", "_2", "_sdxl") for n in ("c1", "c2"))
    pipe = StableDiffusionXLPipeline.from_pretrained(models["sdxl"])
    pipe.load_textual_inversion(
        str(out / "learned_embeds-c1.safetensors"), text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer
    )
    pipe.load_textual_inversion(
        str(out / "learned_embeds_2-c1.safetensors"), text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2
    )
    for k, (enc, tok) in enumerate([(pipe.text_encoder, pipe.tokenizer), (pipe.text_encoder_2, pipe.tokenizer_2)]):
        assert torch.equal(enc.get_input_embeddings().weight[tok.convert_tokens_to_ids("<c1>")], result.learned[k][0])
    # diffusers' documented single-file SDXL format
    state = load_file(out / "learned_embeds_sdxl-c2.safetensors")
    assert torch.equal(state["clip_l"][0], result.learned[0][1]) and torch.equal(
        state["clip_g"][0], result.learned[1][1]
    )
    fresh = StableDiffusionXLPipeline.from_pretrained(models["sdxl"])
    assert load_learned_embeds(fresh, out) == ["<c1>", "<c2>"]


def test_bf16_mixed_precision_keeps_the_rows_in_float32(models, relation_data, tmp_path):
    result = _run(
        ReVersion(),
        models["sd1"],
        relation_data,
        tmp_path / "o",
        "--max_train_steps",
        2,
        "--train_batch_size",
        2,
        "--mixed_precision",
        "bf16",
        "--checkpointing_steps",
        10,
    )
    # as diffusers' textual inversion script: the text encoder stays in float32 (autocast runs it)
    assert result.text_encoders[0].dtype == torch.float32 and result.learned[0].dtype == torch.float32
    run = json.loads((tmp_path / "o" / "training_run.json").read_text())
    assert run["mixed_precision"] == "bf16" and all(np.isfinite(m["loss"]) for m in run["metrics"])
    original = _original_weight(models["sd1"])
    assert torch.equal(result.text_encoders[0].get_input_embeddings().weight[: original.shape[0]], original)


def test_fp16_mixed_precision_trains_and_validates(models, relation_data, tmp_path):
    """The usual GPU setting, on the CPU: half-precision frozen models, float32 rows, and a
    validation image although the VAE decodes in another dtype than the latents."""
    out = tmp_path / "o"
    result = _run(
        ReVersion(),
        models["sd1"],
        relation_data,
        out,
        "--max_train_steps",
        2,
        "--train_batch_size",
        2,
        "--mixed_precision",
        "fp16",
        "--validation_prompt",
        "cat <R> basket",
        "--validation_steps",
        2,
        "--validation_num_inference_steps",
        2,
        "--checkpointing_steps",
        10,
    )
    assert result.text_encoders[0].dtype == torch.float32 and result.learned[0].dtype == torch.float32
    run = json.loads((out / "training_run.json").read_text())
    assert run["mixed_precision"] == "fp16" and all(np.isfinite(m["loss"]) for m in run["metrics"])
    grid = Image.open(out / "validation" / "step-2.png")
    assert grid.size == (4 * 64, 64) and np.asarray(grid).std() > 0  # 4 validation images (the default)


def test_gradient_checkpointing_gives_the_same_training(models, concept_data, tmp_path):
    common = [
        "--placeholder_tokens",
        "<c1>,<c2>",
        "--initializer_tokens",
        "red,white",
        "--max_train_steps",
        2,
        "--train_batch_size",
        2,
        "--attn_res",
        4,
        "--checkpointing_steps",
        10,
    ]
    plain = _run(MCPL(), models["sd1"], concept_data, tmp_path / "a", *common)
    checkpointed = _run(MCPL(), models["sd1"], concept_data, tmp_path / "b", *common, "--gradient_checkpointing")
    assert plain.metrics[0]["loss"] == pytest.approx(checkpointed.metrics[0]["loss"], abs=1e-6)
    assert torch.allclose(plain.learned[0], checkpointed.learned[0], atol=1e-6)


def test_textual_inversion_without_captions(models, tmp_path):
    _images(tmp_path / "d", 2)
    result = _run(
        TextualInversion(),
        models["sd1"],
        tmp_path / "d",
        tmp_path / "o",
        "--placeholder_token",
        "<t>",
        "--initializer_token",
        "cat",
        "--max_train_steps",
        3,
        "--checkpointing_steps",
        1,
        "--checkpoints_total_limit",
        2,
    )
    assert result.global_step == 3 and (tmp_path / "o" / "learned_embeds.safetensors").exists()
    assert sorted(p.name for p in (tmp_path / "o").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]


def test_a_finished_run_is_not_overwritten_and_an_unwritable_folder_is_refused(models, tmp_path):
    """generate, bench and tune refuse to overwrite; so does train: a finished run without a
    checkpoint to resume keeps its learned files, and a folder that cannot be written fails
    before the model loads."""
    _images(tmp_path / "d", 2)
    options = ("--initializer_token", "cat", "--max_train_steps", 1)
    _run(TextualInversion(), models["sd1"], tmp_path / "d", tmp_path / "o", "--placeholder_token", "<x>", *options)
    learned = (tmp_path / "o" / "learned_embeds.safetensors").read_bytes()
    for extra in ((), ("--resume_from_checkpoint", "latest")):
        with pytest.raises(ValueError, match=r"holds a finished training run \(textual_inversion for <x>; "):
            _run(TextualInversion(), models["sd1"], tmp_path / "d", tmp_path / "o", "--placeholder_token", "<y>",
                 *options, *extra)
    assert (tmp_path / "o" / "learned_embeds.safetensors").read_bytes() == learned
    if Path("/proc/self").is_dir():
        with pytest.raises(ValueError, match="cannot write to --output_dir /proc/cd-test: No such file"):
            _run(TextualInversion(), models["sd1"], tmp_path / "d", "/proc/cd-test", "--placeholder_token", "<y>",
                 *options)


def test_module_and_cli_entry_points(models, relation_data, tmp_path):
    import argparse

    from contrastive_diffusers.training.cli import add_train_parser

    done = subprocess.run(
        [sys.executable, "-m", "contrastive_diffusers.training.reversion", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        done.returncode == 0 and "--steering_loss_weight" in done.stdout and "--resume_from_checkpoint" in done.stdout
    )
    parser = argparse.ArgumentParser(prog="contrastive-diffusers")
    add_train_parser(parser.add_subparsers())
    args = parser.parse_args(
        [
            "train",
            "reversion",
            "--pretrained_model_name_or_path",
            str(models["sd1"]),
            "--train_data_dir",
            str(relation_data),
            "--output_dir",
            str(tmp_path / "o"),
            "--resolution",
            "64",
            "--max_train_steps",
            "1",
            "--gradient_accumulation_steps",
            "1",
        ]
    )
    assert args.run(args) == 0 and (tmp_path / "o" / "learned_embeds.safetensors").exists()
    args = parser.parse_args(
        [
            "train",
            "mcpl",
            "--pretrained_model_name_or_path",
            str(models["sd1"]),
            "--train_data_dir",
            str(tmp_path / "missing"),
            "--placeholder_tokens",
            "<a>",
            "--initializer_tokens",
            "b",
            "--output_dir",
            str(tmp_path / "new" / "p"),
        ]
    )
    assert args.run(args) == 2
    assert not (tmp_path / "new").exists()  # refused data leave no empty output folder, nor its parents
