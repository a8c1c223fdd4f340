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
