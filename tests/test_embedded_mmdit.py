"""The shipped SD3-format ShapesWorld model: stock loading, its name in ``generate`` / ``bench``
(same prompt set, oracle and CLIP as the UNet model), determinism, a smoke generation the
oracle checks, guidance on it, and a clear error when the weights are missing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from contrastive_diffusers.cli import main
from contrastive_diffusers.shapes import check, embedded_mmdit_dir, shapes_prompts

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def pipe():
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline.from_pretrained(embedded_mmdit_dir())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _generate(pipe, prompts, seed, steps=28):
    generators = [torch.Generator().manual_seed(seed) for _ in prompts]
    # the stock call needs the model's T5 length (its default, 256, pads with tokens it never saw)
    return pipe(list(prompts), num_inference_steps=steps, generator=generators, output_type="np",
                max_sequence_length=pipe.tokenizer_3.model_max_length).images


def test_folder_is_a_stock_sd3_pipeline_in_float32(pipe):
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    assert type(pipe).__name__ == "StableDiffusion3Pipeline"
    assert isinstance(pipe.transformer, SD3Transformer2DModel)
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler)
    assert {pipe.transformer.dtype, pipe.vae.dtype, pipe.text_encoder_3.dtype} == {torch.float32}
    assert pipe.default_sample_size * pipe.vae_scale_factor == 32
    weights = sum(f.stat().st_size for f in embedded_mmdit_dir().rglob("*.safetensors"))
    assert weights <= 20 * 2**20
    assert not list(embedded_mmdit_dir().rglob("*.bin")) and not list(embedded_mmdit_dir().rglob("*.pt"))
    assert (embedded_mmdit_dir() / "README.md").read_text().startswith("---\nlibrary_name: diffusers")


def test_same_seed_same_image_and_seeds_differ(pipe):
    a = _generate(pipe, ["a red circle"], seed=3, steps=8)
    b = _generate(pipe, ["a red circle"], seed=3, steps=8)
    c = _generate(pipe, ["a red circle"], seed=4, steps=8)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 0.01


def test_single_objects_are_drawn_as_asked(pipe):
    """Smoke test of the committed weights: the first eight single-object prompts of the test
    split at seed 0, checked by the oracle (the card's single-object rate is far above 6 of 8)."""
    items = [item for item in shapes_prompts("test") if item.category == "single"][:8]
    images = _generate(pipe, [item.prompt for item in items], seed=0)
    results = [check((image * 255).round().astype(np.uint8), item.metadata["spec"]) for image, item in zip(images, items)]
    assert sum(r.success for r in results) >= 6, [(i.prompt, r.success) for i, r in zip(items, results)]


def test_bench_on_the_mmdit_model_uses_the_worlds_prompts_oracle_and_clip(tmp_path):
    from contrastive_diffusers.eval.bench import BenchConfig

    config = BenchConfig(output_dir=tmp_path, model="embedded-mmdit")
    assert (config.prompt_set, config.clip_model) == ("shapes", "embedded-clip")
    code = main(["bench", "--model", "embedded-mmdit", "--prompts", "shapes:sample", "--num-prompts", "2",
                 "--method", "none,conform", "--steps", "6", "--output-dir", str(tmp_path), "--quiet"])
    assert code == 0
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    ok = [r for r in records if r["status"] == "ok"]
    assert ok and all("oracle_success" in r["metrics"] and "clip_score" in r["metrics"] for r in ok)
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert bench["fingerprint"]["pipeline"] == "GuidedStableDiffusion3Pipeline"


def test_missing_weights_name_the_fix(tmp_path, monkeypatch):
    from contrastive_diffusers.models import embedded, loading

    monkeypatch.setattr(embedded, "_MMDIT_FOLDER", tmp_path / "nothing")
    with pytest.raises(loading.LoadError, match="--format mmdit"):
        loading.load_pipeline("embedded-mmdit", "cpu", torch.float32, quiet=True)


@pytest.mark.parametrize("method", ["attend_and_excite", "conform", "ebama", "syngen"])
def test_paper_settings_lower_their_loss_on_the_trained_model(method):
    """On trained weights (not the tiny random ones) every method's update at the paper's step
    size lowers the loss it was taken on, re-evaluated right after, in most updates."""
    from contrastive_diffusers.guidance.methods import get_method
    from contrastive_diffusers.models.loading import load_pipeline

    pipe = load_pipeline("embedded-mmdit", "cpu", torch.float32, quiet=True)
    pipe.set_progress_bar_config(disable=True)
    prompts = ["a red circle and a blue square", "a green triangle and a yellow diamond"]
    guidance = get_method(method).with_schedule(refinement_iterations=2)  # the paper's steps, a short refinement
    out = pipe(prompts, guidance=guidance, token_groups="auto", num_inference_steps=10, output_type="np",
               generator=[torch.Generator().manual_seed(s) for s in range(2)], record_loss_after_update=True)
    pairs = [(before, after) for record in out.guidance_records
             for before, after, updated in zip(record.loss, record.loss_after_update, record.updated) if updated]
    lower = sum(after < before for before, after in pairs)
    assert len(pairs) >= 6 and lower >= 0.8 * len(pairs), (lower, len(pairs))


@pytest.mark.parametrize("folder", ["embedded", "embedded-mmdit"])
def test_shipped_cards_are_what_their_training_logs_write(folder):
    """The shipped models' README.md is the card `shapes.train` writes from their training_log.json."""
    from contrastive_diffusers.models.embedded import embedded_model_dir
    from contrastive_diffusers.shapes.train.card import model_card

    path = embedded_model_dir() if folder == "embedded" else embedded_mmdit_dir()
    assert model_card(json.loads((path / "training_log.json").read_text())) == (path / "README.md").read_text()
