"""The benchmark script runs end to end (on the tiny model) and reports what it promises."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "guidance_benchmark.py"


@pytest.mark.slow
def test_benchmark_script_on_the_tiny_model(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("guidance_benchmark", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "results.json"
    argv = ["--shape", "tiny", "--size", "128", "--steps", "2", "--threads", "1", "--json", str(out),
            "--methods", "none,diffusers_attend_and_excite,attend_and_excite,syngen"]
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| attend_and_excite |" in printed and "x floor" in printed
    rows = {row["method"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"none", "diffusers_attend_and_excite", "attend_and_excite", "syngen"}
    assert rows["none"]["x_plain"] == pytest.approx(1.0)
    assert rows["attend_and_excite"]["max_abs_diff_vs_diffusers"] < 1e-4  # same images as diffusers
    assert rows["attend_and_excite"]["passes"] >= 3 and rows["attend_and_excite"]["floor_s"] > 0
    assert rows["syngen"]["guided_steps"] == 3  # PNDM: 2 steps are 3 loop iterations
