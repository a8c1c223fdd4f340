"""Several seeds of a prompt in one pipeline call (``seed_batch``): each image and record as the
one-image call makes it, up to the rounding of batched arithmetic.

Tolerance: a batched convolution or matmul may sum in another order than a batch of one, so
float32 results differ in the last bits; after the decode to 8-bit pixels, plain images (2-50
steps) and the short guided runs here differ by at most 1 level of 255 (``PIXEL_TOLERANCE``,
measured 0 or 1 on the embedded model and tiny-sd1), first-step guidance losses by a relative
1e-6 or less (``LOSS_TOLERANCE`` leaves room). A 50-step Attend-and-Excite run, whose 20-iteration
refinements amplify those bits, measured up to 63 levels on one image of 4: not tested here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contrastive_diffusers.eval import PromptItem
from contrastive_diffusers.eval.bench import BenchConfig, BenchInputError, run_benchmark
from contrastive_diffusers.eval.bench_generate import seed_batches
from contrastive_diffusers.eval.bench_setup import BenchItem
from contrastive_diffusers.guidance.engine import StepRecord
from contrastive_diffusers.models.loading import load_pipeline
from contrastive_diffusers.runs import (
    generate_images,
    generation_options,
    guidance_summary,
)

PIXEL_TOLERANCE = 1  # 8-bit levels
LOSS_TOLERANCE = 1e-4  # relative
SEEDS = [0, 1, 2, 3]
PROMPTS = [
    PromptItem("car-bench", "a red car and a blue bench", None, [["red", "car"], ["blue", "bench"]]),
    PromptItem("cat-dog", "a cat and a dog", None, [["cat"], ["dog"]]),
]
FAST = {"model": "tiny-sd1", "steps": 2, "height": 64, "width": 64, "progress": False, "clip_model": None}

pytestmark = pytest.mark.usefixtures("single_thread")


def _pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def _max_difference(images_a, images_b) -> int:
    return max(int(np.abs(_pixels(a) - _pixels(b)).max()) for a, b in zip(images_a, images_b, strict=True))


@pytest.mark.parametrize("model, steps", [("embedded", 5), ("tiny-sd1", 2)])
def test_a_batch_of_seeds_draws_the_one_seed_images(model, steps):
    pipe = load_pipeline(model, "cpu", torch.float32, quiet=True)
    pipe.set_progress_bar_config(disable=True)
    options = generation_options(pipe, steps=steps, height=64 if model == "tiny-sd1" else None,
                                 width=64 if model == "tiny-sd1" else None)
    prompt = "a red circle and a blue square"
    single = [generate_images(pipe, prompt, [seed], options).images[0] for seed in SEEDS]
    batched = generate_images(pipe, prompt, SEEDS, options).images
    assert len(batched) == len(SEEDS)
    assert _max_difference(single, batched) <= PIXEL_TOLERANCE
    # the seeds differ, so the images do: the batch did not draw one noise for all
    assert _max_difference(single[:1], single[1:2]) > 10


def test_guidance_summary_is_per_image():
    records = [
        StepRecord(step=0, timestep=981.0, step_size=20.0, loss=[0.5, 0.25], refinement_iterations=[3, 0],
                   updated=[True, False], skipped_nonfinite=[False, True]),
        StepRecord(step=1, timestep=961.0, step_size=20.0, loss=[0.4, 0.2], refinement_iterations=[1, 2],
                   updated=[True, True], skipped_nonfinite=[False, False]),
    ]
    assert guidance_summary(records, 0) == {"guided_steps": 2, "updates": 2, "refinement_iterations": 4,
                                            "skipped_nonfinite": 0, "first_step_loss": 0.5}
    assert guidance_summary(records, 1) == {"guided_steps": 2, "updates": 1, "refinement_iterations": 2,
                                            "skipped_nonfinite": 1, "first_step_loss": 0.25}
    assert guidance_summary([], 0)["first_step_loss"] is None


def test_seed_batches_group_a_method_and_prompt_in_order():
    a, b = (BenchItem(p, p.token_groups, None, p.token_groups, {}, {}, None) for p in PROMPTS)
    todo = [("none", a, 0), ("conform", a, 0), ("none", a, 1), ("conform", a, 1), ("none", b, 0), ("none", a, 2)]
    one = seed_batches(todo, 1)
    assert [(n, i.prompt.id, s) for n, i, s in one] == [(n, i.prompt.id, [s]) for n, i, s in todo]  # today's order
    two = seed_batches(todo, 2)
    assert [(n, i.prompt.id, s) for n, i, s in two] == [
        ("none", "car-bench", [0, 1]), ("none", "car-bench", [2]), ("conform", "car-bench", [0, 1]),
        ("none", "cat-dog", [0]),
    ]


def test_seed_batch_must_be_positive(tmp_path):
    with pytest.raises(BenchInputError, match="seed_batch must be at least 1"):
        BenchConfig(output_dir=tmp_path, seed_batch=0)


def _records(run_dir: Path) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {(r["method"], r["prompt_id"], r["seed"]): r for r in rows}


def _same_record(a: dict, b: dict) -> None:
    """Every field equal except the time; guidance losses within the rounding tolerance."""
    a, b = dict(a), dict(b)
    assert (a.pop("seconds") is None) == (b.pop("seconds") is None)
    guidance_a, guidance_b = a.pop("guidance"), b.pop("guidance")
    assert a == b
    if guidance_a is None:
        assert guidance_b is None
        return
    loss_a, loss_b = guidance_a.pop("first_step_loss"), guidance_b.pop("first_step_loss")
    assert loss_b == pytest.approx(loss_a, rel=LOSS_TOLERANCE)
    assert guidance_a == guidance_b


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Plain, CONFORM and SynGen (not applicable to "a cat and a dog") at four seeds, one image
    per call and four per call."""
    root = tmp_path_factory.mktemp("batching")
    runs = {}
    for batch in (1, 4):
        config = BenchConfig(output_dir=root / f"batch-{batch}", methods=["none", "conform", "syngen"],
                             prompt_set=PROMPTS, seeds=SEEDS, seed_batch=batch, **FAST)
        runs[batch] = (config.output_dir, run_benchmark(config))
    return runs


def test_batched_records_equal_the_unbatched_ones(two_runs):
    (one_dir, one), (four_dir, four) = two_runs[1], two_runs[4]
    assert one.generated == four.generated == 20 and four.failed == 0  # 2 x 4 plain, 2 x 4 conform, 1 x 4 syngen
    records_one, records_four = _records(one_dir), _records(four_dir)
    assert records_one.keys() == records_four.keys()
    for key, record in records_one.items():
        _same_record(record, records_four[key])
        if record["status"] == "ok":
            images = [Image.open(run / record["image"]) for run in (one_dir, four_dir)]
            assert _max_difference(images[:1], images[1:]) <= PIXEL_TOLERANCE
    assert sum(r["status"] == "not_applicable" for r in records_four.values()) == 4  # syngen on cat-dog


def test_batched_guided_images_have_per_image_summaries_and_heatmaps(two_runs):
    four_dir, _ = two_runs[4]
    guided = [r for r in _records(four_dir).values() if r["method"] == "conform"]
    assert len(guided) == 8
    for record in guided:
        assert set(record["guidance"]) == {"guided_steps", "updates", "refinement_iterations", "skipped_nonfinite",
                                           "first_step_loss"}
        assert record["attention"] == f"conform/{record['prompt_id']}/{record['seed']}-attention.png"
        assert Image.open(four_dir / record["attention"]).size[0] > 0
    # each image's own loss: four seeds of a prompt do not share one summary
    losses = {r["guidance"]["first_step_loss"] for r in guided if r["prompt_id"] == "car-bench"}
    assert len(losses) == 4


def test_a_resumed_batch_draws_only_the_missing_seeds(tmp_path):
    first = BenchConfig(output_dir=tmp_path / "run", methods=["none", "conform"], prompt_set=PROMPTS[:1],
                        seeds=[0, 2], seed_batch=4, **FAST)
    assert run_benchmark(first).generated == 4
    kept = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*.png")}
    (tmp_path / "run" / "conform" / "car-bench" / "2.json").unlink()  # an image lost mid-batch
    second = BenchConfig(output_dir=tmp_path / "run", methods=["none", "conform"], prompt_set=PROMPTS[:1],
                         seeds=SEEDS, seed_batch=4, **FAST)
    result = run_benchmark(second)
    assert result.generated == 5 and result.failed == 0  # seeds 1 and 3 of both methods, conform's seed 2
    unchanged = [p for p, t in kept.items() if p.stat().st_mtime_ns == t]
    assert sorted(p.relative_to(tmp_path / "run").as_posix() for p in unchanged) == [
        "conform/car-bench/0-attention.png", "conform/car-bench/0.png", "none/car-bench/0.png", "none/car-bench/2.png",
    ]
    reference = BenchConfig(output_dir=tmp_path / "reference", methods=["none", "conform"], prompt_set=PROMPTS[:1],
                            seeds=SEEDS, **FAST)
    run_benchmark(reference)
    resumed, unbatched = _records(tmp_path / "run"), _records(tmp_path / "reference")
    for key, record in unbatched.items():
        _same_record(record, resumed[key])


def test_the_bench_command_passes_the_seed_batch(tmp_path):
    from contrastive_diffusers.cli import main

    args = ["bench", "--model", "tiny-sd1", "--steps", "1", "--height", "64", "--width", "64", "--method", "none",
            "--prompts", "attend_and_excite:animals", "--num-prompts", "1", "--seeds", "0", "1", "2",
            "--seed-batch", "2", "--clip-model", "none", "--output-dir", str(tmp_path / "run"), "--quiet"]
    assert main(args) == 0
    ledger = json.loads((tmp_path / "run" / "bench.json").read_text())
    assert ledger["runs"][-1]["settings"]["seed_batch"] == 2
    assert len(list((tmp_path / "run" / "none").rglob("*.png"))) == 3
