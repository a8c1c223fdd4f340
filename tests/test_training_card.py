"""The model card beside trained weights, and DCO's DreamBooth-style baseline objective."""

import json
import math
import shlex

import numpy as np
import pytest
from PIL import Image

from contrastive_diffusers.models.tiny import tiny_pipeline
from contrastive_diffusers.training.args import parse_method_args
from contrastive_diffusers.training.card import CardFacts, card_text, write_model_card
from contrastive_diffusers.training.dco import DCO
from contrastive_diffusers.training.loop import train

pytestmark = pytest.mark.usefixtures("single_thread")


def test_card_has_the_hub_metadata_and_the_facts(tmp_path):
    from huggingface_hub import ModelCard

    facts = CardFacts(base_model="some/model", method="dco", description="DCO: LoRA personalization.",
                      data="data/dog", num_examples=3, steps=7, command=["python", "-m", "x", "--a", "b c"],
                      usage="pipe.load_lora_weights('out')", settings={"learning_rate": 0.001})
    path = write_model_card(tmp_path, facts)
    assert path == tmp_path / "README.md"
    card = ModelCard.load(path)  # the Hub's own parser reads the metadata block
    assert card.data.base_model == "some/model"
    assert card.data.library_name == "diffusers"
    assert card.data.tags == ["diffusers", "contrastive-diffusers", "dco", "lora"]
    text = card_text(facts)
    assert "- Optimizer steps: 7" in text and "- Data: `data/dog` (3 examples)" in text
    assert "python -m x --a 'b c'" in text  # the command, quoted so it can be pasted back
    assert "- learning_rate: `0.001`" in text


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-sd1")
    tiny_pipeline("sd1").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    images = tmp_path_factory.mktemp("dog")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(images / f"{i}.png")
        rows.append(json.dumps({"file_name": f"{i}.png", "text": "a photo of sks dog"}))
    (images / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    return images


def _argv(model, data, out, *extra):
    return ["--pretrained_model_name_or_path", str(model), "--train_data_dir", str(data), "--output_dir", str(out),
            "--resolution", "64", "--seed", "0", "--max_train_steps", "2", "--learning_rate", "1e-3",
            "--checkpointing_steps", "100", *map(str, extra)]


def test_lora_output_has_a_model_card_with_the_run(model, subject, tmp_path):
    argv = _argv(model, subject, tmp_path / "d")
    train(parse_method_args(DCO(), argv, "python -m contrastive_diffusers.training.dco"), DCO())
    text = (tmp_path / "d" / "README.md").read_text()
    assert f"base_model: {model}" in text
    assert "- Optimizer steps: 2" in text and f"- Data: `{subject}` (2 examples)" in text
    assert shlex.join(["python", "-m", "contrastive_diffusers.training.dco", *argv]) in text
    assert "pipe.load_lora_weights(" in text


def test_dco_denoise_objective_is_the_plain_denoising_loss(model, subject, tmp_path):
    dco = train(parse_method_args(DCO(), _argv(model, subject, tmp_path / "a"), "dco"), DCO())
    plain = train(parse_method_args(DCO(), _argv(model, subject, tmp_path / "b", "--objective", "denoise"), "dco"),
                  DCO())
    # same seed, same first step: the DCO loss starts at log 2 (model == reference), the
    # baseline's loss is the denoising MSE itself, equal to DCO's logged denoising loss
    assert dco.metrics[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert plain.metrics[0]["loss"] == pytest.approx(dco.metrics[0]["denoise_loss"], rel=1e-5)
    assert "reference_denoise_loss" not in plain.metrics[0]
