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
