"""Every method launched the way users launch it (``accelerate launch -m ...`` on the CPU), its
output loaded by stock diffusers, and the learned tokens changing the generated image."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from contrastive_diffusers.models.tiny import tiny_pipeline

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread")]

METHODS = {
    # method: (data layout, learned tokens, their initializers, prompt using them)
    "reversion": ("text.json", ["<R>"], ["and"], "cat <R> basket"),
    "mcpl": ("metadata.jsonl", ["<c1>", "<c2>"], ["ball", "box"], "a <c1> ball on a <c2> box"),
    "textual_inversion": ("metadata.jsonl", ["<c1>"], ["ball"], "a photo of <c1>"),
}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    tiny_pipeline("sd1").save_pretrained(folder)
    return folder


def _data(folder, layout, tokens):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    if layout == "text.json":
        (folder / "text.json").write_text(json.dumps({f"{i}.png": ["cat {} basket"] for i in range(2)}))
    else:
        caption = {1: "a photo of {}", 2: "a {} ball on a {} box"}[len(tokens)].format(*tokens)
        rows = [json.dumps({"file_name": f"{i}.png", "text": caption}) for i in range(2)]
        (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n")


def _image(pipe, prompt):
    generator = torch.Generator().manual_seed(0)
    out = pipe(prompt, num_inference_steps=2, height=64, width=64, generator=generator, output_type="np")
    return out.images[0]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_accelerate_launch_output_loads_and_changes_the_image(method, model, tmp_path):
    layout, tokens, initializers, prompt = METHODS[method]
    data, out = tmp_path / "data", tmp_path / "out"
    _data(data, layout, tokens)
    token_args = (
        ["--placeholder_token", tokens[0], "--initializer_token", initializers[0]]
        if len(tokens) == 1
        else ["--placeholder_tokens", ",".join(tokens), "--initializer_tokens", ",".join(initializers)]
    )
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", f"contrastive_diffusers.training.{method}",
        "--pretrained_model_name_or_path", str(model), "--train_data_dir", str(data), "--output_dir", str(out),
        "--resolution", "64", "--train_batch_size", "1", "--gradient_accumulation_steps", "1",
        "--max_train_steps", "3", "--learning_rate", "0.05", "--seed", "0", *token_args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]

    pipe = StableDiffusionPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    # the same prompt with each token standing for its initializer word: what training started from
    before = _image(pipe, " ".join(
        initializers[tokens.index(word)] if word in tokens else word for word in prompt.split()
    ))
    files = sorted(str(p) for p in out.glob("learned_embeds*.safetensors"))
    assert len(files) == len(tokens)
    pipe.load_textual_inversion(files)
    after = _image(pipe, prompt)
    assert np.abs(after - before).max() > 1e-3
