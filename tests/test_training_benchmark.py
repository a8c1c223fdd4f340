"""The training benchmark runs end to end on the tiny model and reports every method."""

import json

import pytest

from contrastive_diffusers.training import benchmark


@pytest.mark.slow
def test_training_benchmark_on_the_tiny_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "rows.json"
    argv = ["--shape", "tiny", "--resolution", "64", "--steps", "2", "--gradient_checkpointing", "off", "--json", str(out)]
    assert benchmark.main(argv) == 0
    assert "| mcpl | no |" in capsys.readouterr().out
    rows = {r["method"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"textual_inversion", "reversion", "mcpl"}
    assert rows["textual_inversion"]["x_step_time_vs_ti"] == pytest.approx(1.0)
    assert all(r["step_time_s"] > 0 and r["peak_memory_mb"] > 0 for r in rows.values())


@pytest.mark.slow
def test_lora_benchmark_on_the_tiny_model(tmp_path, capsys, monkeypatch):
    """Every EvoGen objective and DCO beside plain LoRA, with the UNet passes each needs."""
    import math

    from contrastive_diffusers.training.evogen import UNET_PASSES

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "lora.json"
    argv = ["--suite", "lora", "--shape", "tiny", "--resolution", "64", "--steps", "2",
            "--gradient_checkpointing", "off", "--json", str(out)]
    assert benchmark.main(argv) == 0
    printed = capsys.readouterr().out
    for row in ("| evogen denoise = plain LoRA | no | 1 + 0 |", "| evogen contrastive | no | 2 + 0 |",
                "| evogen margin | no | 2 + 2 |", "| dco | no | 1 + 1 |"):
        assert row in printed
    report = json.loads(out.read_text())
    assert report["suite"] == "lora"
    rows = {r["method"]: r for r in report["rows"]}
    assert set(rows) == {"denoise", "contrastive", "margin", "dco"}
    for name, r in rows.items():
        assert (r["unet_passes_with_grad"], r["unet_passes_no_grad"]) == UNET_PASSES[name]
        for key in ("step_time_s", "peak_memory_mb", "x_step_time_vs_lora", "x_peak_memory_vs_lora",
                    "x_cost_per_unet_pass_vs_lora", "x_cost_per_grad_pass_vs_lora", "final_loss"):
            assert math.isfinite(r[key]), (name, key)
        assert r["step_time_s"] > 0 and r["peak_memory_mb"] > 0
    assert rows["denoise"]["x_cost_per_unet_pass_vs_lora"] == pytest.approx(1.0)


@pytest.mark.slow
@pytest.mark.usefixtures("single_thread")
def test_mcpl_records_each_map_once_per_step_with_gradient_checkpointing(tmp_path, monkeypatch):
    """Gradient checkpointing re-runs the recorded layers in the backward; MCPL reads its maps
    once per step, so the recomputation records nothing (it used to record a second copy of
    every map and keep it, with its autograd graph, until the next step), and training with
    checkpointing learns what training without it learns."""
    import torch

    from contrastive_diffusers.guidance.attention import AttentionRecorder
    from contrastive_diffusers.models.tiny import tiny_pipeline
    from contrastive_diffusers.training.args import parse_method_args
    from contrastive_diffusers.training.loop import train
    from contrastive_diffusers.training.mcpl import MCPL

    tiny_pipeline("sd1").save_pretrained(tmp_path / "model")
    _, concepts = benchmark.write_data(tmp_path / "data")
    recorded = []
    original = AttentionRecorder.record
    monkeypatch.setattr(AttentionRecorder, "record", lambda self, *a: (recorded.append(a[0]), original(self, *a))[1])

    def run(checkpointing):
        method, left_over = MCPL(), []
        argv = ["--pretrained_model_name_or_path", str(tmp_path / "model"), "--train_data_dir", str(concepts),
                "--output_dir", str(tmp_path / f"out-{checkpointing}"), "--resolution", "64", "--seed", "0",
                "--placeholder_tokens", "<c1>,<c2>", "--initializer_tokens", "ball,box", "--max_train_steps", "2",
                "--train_batch_size", "1", "--gradient_accumulation_steps", "1", "--checkpointing_steps", "100"]
        recorded.clear()
        result = train(parse_method_args(method, argv + (["--gradient_checkpointing"] if checkpointing else []), "t"),
                       method, on_step=lambda step, record: left_over.append(dict(method.recorder.maps)))
        return method, list(recorded), left_over, result

    method, with_ckpt, left_with, learned_with = run(True)
    _, without_ckpt, _, learned_without = run(False)
    layers = method.layers
    assert len(layers) >= 1
    assert with_ckpt == without_ckpt == layers * 2  # one map per recorded layer per step, 2 steps
    assert left_with == [{}, {}]  # no maps (and no recomputation graph) kept past the step
    for ours, plain in zip(learned_with.learned, learned_without.learned):
        torch.testing.assert_close(ours, plain, rtol=1e-5, atol=1e-6)
