"""``accelerate launch`` on CPU: one process with batch 2 and two processes (gloo) with batch 1
see the same examples, noise and timesteps, so their loss curves match."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from contrastive_diffusers.models.tiny import tiny_pipeline
from contrastive_diffusers.training.embeddings import word_embedding


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(processes, out, model, data, batch):
    launcher = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--num_processes",
        str(processes),
    ]
    launcher += ["--multi_gpu", "--main_process_port", str(_free_port())] if processes > 1 else ["--cpu"]
    cmd = launcher + [
        "-m",
        "contrastive_diffusers.training.reversion",
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
        "--max_train_steps",
        "4",
        "--gradient_accumulation_steps",
        "2",
        "--checkpointing_steps",
        "2",
        "--train_batch_size",
        str(batch),
        # large enough steps that an unsynchronised or untrained row would show
        "--learning_rate",
        "0.05",
        "--lr_scheduler",
        "cosine",
        "--lr_warmup_steps",
        "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "training_run.json").read_text())


@pytest.mark.slow
def test_two_cpu_processes_match_one(tmp_path):
    model, data = tmp_path / "model", tmp_path / "data"
    tiny_pipeline("sd1").save_pretrained(model)
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(data / f"{i}.png")
    (data / "text.json").write_text(
        json.dumps({f"{i}.png": ["cat {} basket", "a dog {} the red box"] for i in range(3)})
    )

    one = _launch(1, tmp_path / "one", model, data, batch=2)
    two = _launch(2, tmp_path / "two", model, data, batch=1)
    assert (one["num_processes"], two["num_processes"]) == (1, 2)
    assert one["effective_learning_rate"] == two["effective_learning_rate"]  # scale_lr counts processes
    assert [m["step"] for m in two["metrics"]] == [1, 2, 3, 4]
    # Same examples, noise, timesteps and (gathered) steering negatives: the same losses, and
    # the warmup + cosine schedule at the same point of every step.
    for a, b in zip(one["metrics"], two["metrics"]):
        assert a["denoise_loss"] == pytest.approx(b["denoise_loss"], abs=1e-5)
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-9)
    assert (tmp_path / "two" / "checkpoint-2" / "random_states_1.pkl").exists()
    a = load_file(tmp_path / "one" / "learned_embeds.safetensors")["<R>"][0]
    b = load_file(tmp_path / "two" / "learned_embeds.safetensors")["<R>"][0]
    pipe = tiny_pipeline("sd1")
    start = word_embedding(pipe.tokenizer, pipe.text_encoder.get_input_embeddings().weight, "and")
    moved = (a - start).abs().max()
    assert moved > 0.01  # the row trained
    assert (a - b).abs().max() < 0.01 * moved  # and both runs trained it the same way
