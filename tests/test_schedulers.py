"""``--scheduler``: sample with another diffusers scheduler, as a benchmark's protocol fixes it."""

import json

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline
from PIL import Image

from contrastive_diffusers.cli import main
from contrastive_diffusers.eval import BenchConfig, run_benchmark
from contrastive_diffusers.models.schedulers import scheduler_names, use_scheduler
from contrastive_diffusers.models.tiny import tiny_pipeline
from contrastive_diffusers.prompts import PromptItem


def test_use_scheduler_builds_the_class_from_the_models_config():
    pipe = tiny_pipeline("sd1")
    betas = pipe.scheduler.betas.clone()
    assert use_scheduler(pipe, None) is pipe and type(pipe.scheduler).__name__ == "PNDMScheduler"
    use_scheduler(pipe, "DDIMScheduler")
    assert isinstance(pipe.scheduler, DDIMScheduler)
    assert torch.equal(pipe.scheduler.betas, betas)  # the model's noise schedule carries over
    assert pipe.config["scheduler"][1] == "DDIMScheduler"  # registered: save_pretrained writes it


@pytest.mark.parametrize("name, message", [("Nope", "unknown scheduler 'Nope'"),
                                           ("FlowMatchEulerDiscreteScheduler", "does not fit this model")])
def test_bad_scheduler_names_the_problem_and_the_choices(name, message):
    pipe = tiny_pipeline("sd1")
    with pytest.raises(ValueError, match=message) as err:
        use_scheduler(pipe, name)
    assert "DDIMScheduler" in str(err.value) and "DDIMScheduler" in scheduler_names(pipe)


def test_a_scheduler_whose_dependency_is_missing_says_what_to_install(monkeypatch):
    # diffusers puts a placeholder in place of a class whose extra dependency (torchsde for
    # DPMSolverSDEScheduler) is missing; it lists the backends, only the missing ones are named
    import diffusers
    from diffusers.utils import DummyObject

    class NeedsMoreScheduler(metaclass=DummyObject):
        _backends = ["torch", "nosuchpackage"]

    monkeypatch.setattr(diffusers, "NeedsMoreScheduler", NeedsMoreScheduler, raising=False)
    with pytest.raises(ValueError, match=r"^scheduler NeedsMoreScheduler needs nosuchpackage: pip install nosuchpackage"):
        use_scheduler(tiny_pipeline("sd1"), "NeedsMoreScheduler")


def test_generate_with_scheduler_equals_the_stock_pipeline_with_it(tmp_path):
    out = tmp_path / "run"
    args = ["generate", "a cat and a dog", "--model", "tiny-sd1", "--method", "none", "--steps", "3",
            "--height", "64", "--width", "64", "--scheduler", "DDIMScheduler", "--no-heatmaps", "--quiet",
            "--output-dir", str(out)]
    assert main(args) == 0
    settings = json.loads((out / "settings.json").read_text())
    assert settings["scheduler"] == "DDIMScheduler"
    ours = np.asarray(Image.open(out / settings["images"][0]["image"]))

    pipe = tiny_pipeline("sd1")
    stock = StableDiffusionPipeline(**pipe.components)
    stock.scheduler = DDIMScheduler.from_config(stock.scheduler.config)
    stock.set_progress_bar_config(disable=True)
    image = stock("a cat and a dog", num_inference_steps=3, height=64, width=64, guidance_scale=7.5,
                  generator=torch.Generator("cpu").manual_seed(0)).images[0]
    assert np.abs(ours.astype(int) - np.asarray(image).astype(int)).max() <= 1


def test_bench_records_the_scheduler_and_refuses_to_mix_samplers(tmp_path):
    fast = dict(model="tiny-sd1", steps=2, height=64, width=64, progress=False, methods=["none"],
                prompt_set=[PromptItem(id="p", prompt="a cat and a dog", token_groups=[["cat"], ["dog"]])],
                clip_model=None, heatmaps=False)
    with pytest.raises(ValueError, match="unknown scheduler 'DDIM'"):
        run_benchmark(BenchConfig(output_dir=tmp_path / "bad", scheduler="DDIM", **fast))
    run_benchmark(BenchConfig(output_dir=tmp_path / "run", scheduler="DDIMScheduler", **fast))
    ledger = json.loads((tmp_path / "run" / "bench.json").read_text())
    assert ledger["fingerprint"]["scheduler"] == "DDIMScheduler"
    with pytest.raises(ValueError, match="different settings.*scheduler"):  # left out: the model's own
        run_benchmark(BenchConfig(output_dir=tmp_path / "run", **fast))


def test_second_order_schedulers_sample_plain_runs_and_are_refused_for_guided_ones(tmp_path, capsys):
    """Heun visits each timestep twice, which step-indexed guidance cannot follow: refused
    before anything is written, naming the first-order choices; plain runs keep it."""
    fast = dict(model="tiny-sd1", steps=2, height=64, width=64, progress=False, scheduler="HeunDiscreteScheduler",
                prompt_set=[PromptItem(id="p", prompt="a cat and a dog", token_groups=[["cat"], ["dog"]])],
                clip_model=None, heatmaps=False)
    with pytest.raises(ValueError, match="HeunDiscreteScheduler is a solver of order 2.*--scheduler EulerDiscrete"):
        run_benchmark(BenchConfig(output_dir=tmp_path / "guided", methods=["none", "ae"], **fast))
    assert not (tmp_path / "guided").exists()
    run_benchmark(BenchConfig(output_dir=tmp_path / "plain", methods=["none"], **fast))
    assert json.loads((tmp_path / "plain" / "bench.json").read_text())["fingerprint"]["scheduler"] == "HeunDiscreteScheduler"
    args = ["generate", "a cat and a dog", "--model", "tiny-sd1", "--method", "syngen", "--steps", "2",
            "--scheduler", "HeunDiscreteScheduler", "--quiet", "--output-dir", str(tmp_path / "gen")]
    assert main(args) == 2
    assert "order 2" in capsys.readouterr().err and not (tmp_path / "gen").exists()
