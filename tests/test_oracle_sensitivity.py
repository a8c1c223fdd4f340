"""benchmarks/oracle_sensitivity.py: an evidence run's images rescored with the oracle before
2026-12-02, on a hand-made run folder whose verdicts differ between the two oracles."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from contrastive_diffusers.shapes.render import render
from contrastive_diffusers.shapes.world import BACKGROUND, Scene, ShapeObject

REPO = Path(__file__).resolve().parents[1]
SPEC = {"objects": [{"shape": "square", "color": "orange", "count": 1, "size": None, "exact": False}], "relation": None}
PROMPTS = ["p0", "p1"]
SEEDS = [0, 1]


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("oracle_sensitivity", REPO / "benchmarks" / "oracle_sensitivity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _images():
    """A rendered orange square, and a yellow one faded to 45% over the background: the earlier
    oracle read that as an orange square (its line reaches 0.5 first), the current one reads
    nothing (yellow fits best, and is below the 0.5 cut)."""
    orange = np.asarray(render(Scene((ShapeObject("square", "orange", "large", x=0.5, y=0.5),)), 32))
    yellow = np.asarray(render(Scene((ShapeObject("square", "yellow", "large", x=0.5, y=0.5),)), 32)).astype(float)
    background = np.asarray(BACKGROUND, dtype=float)
    faded = np.round(background + 0.45 * (yellow - background)).astype(np.uint8)
    return orange, faded


def _run_folder(root: Path, none_verdict: float = 0.0) -> Path:
    """none: faded squares (current 0, earlier 1); conform: orange squares (1 under both);
    conform-tuned kept the defaults, so it has no folder and reads conform's images."""
    orange, faded = _images()
    rows = []
    for method, image in (("none", faded), ("conform", orange)):
        for prompt in PROMPTS:
            folder = root / "test" / method / prompt
            folder.mkdir(parents=True, exist_ok=True)
            for seed in SEEDS:
                Image.fromarray(image).save(folder / f"{seed}.png")
                (folder / f"{seed}.json").write_text(json.dumps({
                    "method": method, "prompt_id": prompt, "seed": seed, "status": "ok",
                    "image": f"{method}/{prompt}/{seed}.png", "spec": SPEC}))
    (root / "test" / "bench.json").write_text(json.dumps({"fingerprint": {}}))  # not an image record
    for method, verdict in (("none", none_verdict), ("conform", 1.0), ("conform-tuned", 1.0)):
        rows += [{"method": method, "prompt_id": p, "category": "two_object", "seed": s, "status": "ok",
                  "oracle_success": verdict} for p in PROMPTS for s in SEEDS]
    records = root / "evidence-records.jsonl"
    head = {"arms": ["none", "conform", "conform-tuned"], "n_seeds": 2, "metric": "oracle_success"}
    records.write_text("\n".join(json.dumps(r) for r in [head, *rows]) + "\n")
    return records


def test_the_two_oracles_tables_and_changed_verdicts(script, tmp_path):
    records = _run_folder(tmp_path)
    out = tmp_path / "sensitivity.json"
    assert script.main(["--run-dir", str(tmp_path), "--records", str(records), "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    now, before = result["variants"]["current"], result["variants"]["before-2026-12-02"]
    assert (now["candidate_weight"], before["candidate_weight"]) == (0.25, 0.5)
    assert now["methods"]["none"]["two_object"]["mean"] == 0.0
    assert before["methods"]["none"]["two_object"]["mean"] == 1.0
    for arm in ("conform", "conform:tuned"):
        assert now["paired"][arm]["two_object"]["delta"] == 1.0 and now["paired"][arm]["two_object"]["n"] == 4
        assert before["paired"][arm]["two_object"]["delta"] == 0.0
    assert result["changed_verdicts"] == {"none": {"images": 4, "changed": 4},
                                          "conform": {"images": 4, "changed": 0},
                                          "conform:tuned": {"images": 4, "changed": 0}}
    table = out.with_suffix(".md").read_text()
    assert "| none (success) | two_object | 0.000 [0.000, 0.000] (4) | 1.000 [1.000, 1.000] (4) |" in table
    assert "| conform:tuned | two_object | +1.000 [+1.000, +1.000] (4) | +0.000 [+0.000, +0.000] (4) |" in table


def test_a_folder_that_is_not_the_records_run_is_refused(script, tmp_path):
    records = _run_folder(tmp_path, none_verdict=1.0)  # what the earlier oracle said: not these records' oracle
    with pytest.raises(SystemExit, match="4 images' verdicts under the current oracle differ"):
        script.main(["--run-dir", str(tmp_path), "--records", str(records), "--output", str(tmp_path / "x.json")])
    (tmp_path / "test" / "conform" / "p1" / "1.json").unlink()
    with pytest.raises(SystemExit, match="no image for conform p1 seed 1"):
        script.main(["--run-dir", str(tmp_path), "--records", str(records), "--output", str(tmp_path / "x.json")])


@pytest.mark.parametrize("name", ["evidence", "evidence-mmdit"])
def test_the_committed_sensitivity_agrees_with_the_committed_evidence(name):
    """Under the current oracle the rescored run gives the committed evidence tables."""
    results = REPO / "benchmarks" / "results" / "shapesworld"
    evidence = json.loads((results / f"{name}.json").read_text())
    sensitivity = json.loads((results / f"{name.replace('evidence', 'oracle-sensitivity')}.json").read_text())
    assert sensitivity["variants"]["current"]["methods"] == evidence["methods"]
    assert sensitivity["variants"]["current"]["paired"] == evidence["paired"]
    assert sensitivity["records"] == f"{name}-records.jsonl"
