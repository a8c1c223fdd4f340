"""``accelerate launch`` on CPU: one process with batch 2 and two processes (gloo) with batch 1
see the same examples, noise and timesteps, so their loss curves match; a stop signal to one
of two processes stops both at the same step."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from contrastive_diffusers.models.tiny import tiny_pipeline


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model_and_data(tmp_path, images: int, captions: list[str]):
    """A saved tiny SD 1.x model and a ReVersion folder of random images."""
    model, data = tmp_path / "model", tmp_path / "data"
    tiny_pipeline("sd1").save_pretrained(model)
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(images):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(data / f"{i}.png")
    (data / "text.json").write_text(json.dumps({f"{i}.png": captions for i in range(images)}))
    return model, data


def _launcher(processes: int) -> list[str]:
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
    return launcher + (["--multi_gpu", "--main_process_port", str(_free_port())] if processes > 1 else ["--cpu"])


def _launch(processes, out, model, data, batch):
    cmd = _launcher(processes) + [
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
    model, data = _model_and_data(tmp_path, 3, ["cat {} basket", "a dog {} the red box"])

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
    start = pipe.text_encoder.get_input_embeddings().weight[pipe.tokenizer.convert_tokens_to_ids("and</w>")].detach()
    moved = (a - start).abs().max()
    assert moved > 0.01  # the row trained
    assert (a - b).abs().max() < 0.01 * moved  # and both runs trained it the same way


def _worker_pid(rank: int, marker: str) -> int | None:
    """The pid of the launched worker with ``RANK=rank`` whose command line names ``marker``."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read().decode(errors="replace")
            environ = open(f"/proc/{entry}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if marker in cmdline and "accelerate" not in cmdline and f"RANK={rank}".encode() in environ:
            return int(entry)
    return None


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the worker's pid in /proc")
def test_a_signal_to_one_process_stops_both_at_the_same_step(tmp_path):
    """SIGTERM to rank 1 alone (as when one node is told to stop): the processes agree on the
    stop, so both finish the same step, save one checkpoint together and exit with 143."""
    model, data = _model_and_data(tmp_path, 2, ["cat {} basket"])
    out = tmp_path / "stopped"
    process = subprocess.Popen(
        _launcher(2) + ["-m", "contrastive_diffusers.training.reversion", "--pretrained_model_name_or_path", str(model),
         "--train_data_dir", str(data), "--output_dir", str(out), "--resolution", "64", "--seed", "0",
         "--max_train_steps", "100000", "--checkpointing_steps", "2", "--train_batch_size", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.monotonic() + 180
        # checkpoint-2 saved: both workers are inside the training loop
        while not (out / "checkpoint-2" / "training_state.json").exists():
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-3000:]
            time.sleep(0.2)
        pid = _worker_pid(1, str(out))
        assert pid is not None, "rank 1 not found"
        os.kill(pid, signal.SIGTERM)
        _, stderr = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
    stops = re.findall(r"interrupted: SIGTERM received: stopped at step (\d+)", stderr)
    assert len(stops) == 2 and stops[0] == stops[1], stderr[-3000:]  # both ranks, the same step
    codes = re.findall(r"exitcode\s*:\s*(\d+)", stderr)  # the launcher's report of its workers
    assert len(codes) >= 2 and set(codes) == {"143"}, stderr[-3000:]
    step = int(stops[0])
    assert step >= 2
    saved = out / f"checkpoint-{step}"
    assert (saved / "training_state.json").exists() and (saved / "random_states_1.pkl").exists()
    assert json.loads((out / "training_run.json").read_text())["status"] == "interrupted"
