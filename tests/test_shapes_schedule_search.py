"""The schedule search tunes on train-split prompts, checks the choice on test prompts, resumes."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "shapes_schedule_search.py"


def _load():
    spec = importlib.util.spec_from_file_location("shapes_schedule_search", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_grid_and_settings():
    search = _load()
    grid = search.parse_grid(["step_size=5,10", "attn_res=8", "temperature=0.25"])
    assert grid == [{"step_size": 5, "attn_res": 8, "temperature": 0.25},
                    {"step_size": 10, "attn_res": 8, "temperature": 0.25}]
    method, attn_res = search.build("conform", grid[1])
    assert attn_res == (8, 8) and method.schedule.step_size == 10 and method.temperature == 0.25
    with pytest.raises(TypeError):
        search.build("attend_and_excite", {"no_such_option": 1})
    with pytest.raises(SystemExit, match="KEY=V1"):
        search.parse_grid(["step_size"])


def test_tuning_prompts_are_not_test_prompts():
    search = _load()
    tune, test = search.prompt_sets(40, 24)
    assert len(tune) == 40 and len(test) == 24
    assert {i.category for i in tune + test} == {"two_object"}
    assert not {i.prompt for i in tune} & {i.prompt for i in search.shapes_prompts("test")}


@pytest.mark.slow
def test_search_on_the_embedded_model_resumes(tmp_path, monkeypatch):
    search = _load()
    out = tmp_path / "search.json"
    argv = ["--method", "attend_and_excite", "--grid", "step_size=5,10", "--seeds", "0", "--tune-prompts", "1",
            "--test-prompts", "1", "--steps", "2", "--output", str(out)]
    assert search.main(argv) == 0
    results = json.loads(out.read_text())
    assert set(results["tune"]) == {"plain", '{"step_size": 5}', '{"step_size": 10}'}
    assert results["best"] in ({"step_size": 5}, {"step_size": 10})
    assert len(results["test"]) == 3 and all(r["n"] == 1 for r in results["test"].values())
    # a rerun with the same arguments generates nothing
    monkeypatch.setattr(search, "success_rate", lambda *a, **k: pytest.fail("regenerated a finished point"))
    assert search.main(argv) == 0
    assert json.loads(out.read_text()) == results
