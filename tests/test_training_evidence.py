"""The ShapesWorld training evidence: oracle judgement, paired comparisons, the experiments'
data and prompts, the report, and the command end to end on smoke sizes."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from contrastive_diffusers.eval.stats import t_quantile
from contrastive_diffusers.eval.train_evidence import EvalPrompt, comparison, judge
from contrastive_diffusers.eval.train_experiments import (
    MCPL_CONCEPTS,
    _dco_prompts,
    _evogen_prompts,
    _mcpl_prompts,
    _reversion_prompts,
)
from contrastive_diffusers.eval.train_report import training_markdown
from contrastive_diffusers.shapes.export import (
    DCO_SUBJECT,
    export_dco,
    export_reversion,
)
from contrastive_diffusers.shapes.oracle import detect
from contrastive_diffusers.shapes.render import render
from contrastive_diffusers.shapes.spec import CaptionSpec, ObjectSpec
from contrastive_diffusers.shapes.world import Scene, ShapeObject

ROOT = Path(__file__).resolve().parents[1]


def _scene():
    return Scene((ShapeObject("circle", "red", "large", "solid", 0.25, 0.5),
                  ShapeObject("square", "blue", "large", "solid", 0.75, 0.5)), (0, "left of", 1))


def test_judge_reads_objects_relation_and_absent_concepts():
    image = render(_scene(), 32)
    red_circle, blue_square = ObjectSpec("circle", "red"), ObjectSpec("square", "blue")
    left = CaptionSpec((red_circle, blue_square), (0, "left of", 1)).to_dict()
    right = CaptionSpec((red_circle, blue_square), (0, "right of", 1)).to_dict()
    assert judge(image, EvalPrompt("a", "", left)) == {"success": 1.0, "objects": 1.0, "clean": 1.0}
    assert judge(image, EvalPrompt("b", "", right)) == {"success": 0.0, "objects": 1.0, "clean": 1.0}
    alone = {"objects": [red_circle.to_dict()], "relation": None}
    # the red circle is there, but so is the concept that must be absent
    assert judge(image, EvalPrompt("c", "", alone, absent=(blue_square.to_dict(),))) == {
        "success": 0.0, "objects": 1.0, "clean": 0.0}


def _record(method, prompt, seed, value):
    return {"method": method, "prompt_id": prompt, "seed": seed, "status": "ok", "metrics": {"success": value}}


def test_comparison_pairs_by_prompt_and_seed_with_t_intervals():
    method = [1, 1, 0, 1]
    baseline = [0, 1, 0, 0]
    keys = [("p", 0), ("p", 1), ("q", 0), ("q", 1)]
    records = [_record("m", p, s, v) for (p, s), v in zip(keys, method)]
    records += [_record("b", p, s, v) for (p, s), v in zip(reversed(keys), reversed(baseline))]  # other order
    records.append(_record("b", "r", 0, 1.0))  # unpaired: counts in b's mean, not in the pairs
    entry = comparison(records, "success", "m", ["b"], 1.234, "label")
    assert entry["metric"] == "label" and entry["minutes"] == 1.23
    assert entry["method"]["mean"] == 0.75 and entry["method"]["n"] == 4
    assert entry["baselines"]["b"]["mean"] == pytest.approx(2 / 5) and entry["baselines"]["b"]["n"] == 5
    # differences 1, 0, 0, 1: mean 0.5, s = sqrt(1/3), half-width t(0.975, 3) s / 2
    half = t_quantile(0.975, 3) * math.sqrt(1 / 3) / 2
    assert half == pytest.approx(0.918694, abs=1e-6)
    assert entry["paired"]["b"] == pytest.approx({"delta": 0.5, "ci_low": 0.5 - half, "ci_high": 0.5 + half, "n": 4})
    # with the prompts as the samples: both prompts' mean difference is 0.5, so no spread between them
    assert entry["paired_by_prompt"]["b"] == {"delta": 0.5, "ci_low": 0.5, "ci_high": 0.5, "n": 2}
    assert set(entry) == {"metric", "method", "baselines", "paired", "paired_by_prompt", "minutes"}
    text = training_markdown({"x": entry}, {})
    assert "| b | 0.400 [" in text and "(n=5)" in text and "+0.500 [" in text


def test_the_verdict_reads_the_interval_across_training_seeds_when_there_is_one():
    pooled = {"delta": -0.046, "ci_low": -0.087, "ci_high": -0.006, "n": 108}
    entry = {"metric": "success", "minutes": 1.0, "method": {"mean": 0.2, "ci_low": 0.1, "ci_high": 0.3, "n": 108},
             "baselines": {"b": {"mean": 0.25, "ci_low": 0.15, "ci_high": 0.35, "n": 108}}, "paired": {"b": pooled}}
    assert "| b | 0.250 [0.150, 0.350] (n=108) | -0.046 [-0.087, -0.006] (worse) |" in training_markdown({"x": entry}, {})
    entry["across_training_seeds"] = {"b": {"mean": -0.046, "ci_low": -0.245, "ci_high": 0.153, "n": 3}}
    assert ("| -0.046 [-0.087, -0.006] over images; across training seeds [-0.245, +0.153] (no clear difference) |"
            in training_markdown({"x": entry}, {}))


def test_the_verdict_reads_the_interval_over_prompts_when_there_is_one():
    pooled = {"delta": 0.1, "ci_low": 0.02, "ci_high": 0.18, "n": 72}
    entry = {"metric": "success", "minutes": 1.0, "method": {"mean": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 72},
             "baselines": {"b": {"mean": 0.4, "ci_low": 0.3, "ci_high": 0.5, "n": 72}}, "paired": {"b": pooled},
             "paired_by_prompt": {"b": {"delta": 0.1, "ci_low": -0.05, "ci_high": 0.25, "n": 12}}}
    assert ("| +0.100 [+0.020, +0.180] over images; over prompts [-0.050, +0.250] (no clear difference) |"
            in training_markdown({"x": entry}, {}))


def test_an_only_call_keeps_the_sections_of_experiments_it_did_not_run(tmp_path):
    # a fresh work folder holds the details of the experiments this call ran only: the others'
    # arm tables and example lines stay as the call that made them wrote them
    from contrastive_diffusers.eval.train_report import markdown_sections, write_report

    stat = {"mean": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 8}
    entry = {"metric": "success", "minutes": 1.0, "method": stat, "baselines": {"b": stat},
             "paired": {"b": {"delta": 0.0, "ci_low": -0.1, "ci_high": 0.1, "n": 8}}}
    arms = {"arms": {"m": {"success": stat}, "b": {"success": stat}}}
    write_report({"x": entry, "y": entry}, {"x": arms, "y": arms}, tmp_path / "work", tmp_path)
    first = markdown_sections((tmp_path / "training.md").read_text())
    assert "| arm | success |" in first["x"] and "| arm | success |" in first["y"]
    changed = {**entry, "minutes": 2.0}
    write_report({"x": entry, "y": changed}, {"y": arms}, tmp_path / "work", tmp_path)
    second = markdown_sections((tmp_path / "training.md").read_text())
    assert second["x"] == first["x"] and "2.0 minutes" in second["y"] and "| arm | success |" in second["y"]


def test_comparison_without_spread_has_no_interval():
    entry = comparison([_record("m", "p", 0, 1.0), _record("b", "p", 0, 0.0)], "success", "m", ["b"], 0.0)
    assert entry["method"] == {"mean": 1.0, "ci_low": None, "ci_high": None, "n": 1}
    assert entry["paired"]["b"]["delta"] == 1.0 and entry["paired"]["b"]["ci_low"] is None
    json.dumps(entry, allow_nan=False)  # valid JSON: no NaN


def test_reversion_prompts_use_object_pairs_the_exemplars_never_show(tmp_path):
    folders = export_reversion(tmp_path / "r", per_relation=6, size=32)
    exemplars = json.loads((folders["above"] / "text.json").read_text())
    templates = {t for texts in exemplars.values() for t in texts}
    prompts = _reversion_prompts("above", exemplars, 5, 0)
    assert len({p.text for p in prompts}) == 5
    for p in prompts:
        assert "{R}" in p.text and p.spec["relation"] == [0, "above", 1]
        assert p.text.replace("{R}", "{}") not in templates
    # exemplars showing the first two pairs drawn: those pairs give way to others
    shown = {"0.png": [p.text.replace("{R}", "{}") for p in prompts[:2]]}
    others = _reversion_prompts("above", shown, 5, 0)
    assert not {p.text for p in prompts[:2]} & {p.text for p in others}
    assert [p.text for p in others[:3]] == [p.text for p in prompts[2:]]


def test_mcpl_prompts_require_each_concept_without_the_other():
    prompts = _mcpl_prompts()
    (t1, _, c1, s1), (t2, _, c2, s2) = MCPL_CONCEPTS
    alone = {p.text: p for p in prompts if p.category == "alone"}
    assert set(alone) == {f"a {t1}", f"a {t2}"}
    assert alone[f"a {t1}"].spec["objects"] == [ObjectSpec(s1, c1).to_dict()]
    assert alone[f"a {t1}"].absent == (ObjectSpec(s2, c2).to_dict(),)
    assert all(p.absent for p in prompts)


def test_dco_export_draws_the_subject_and_prompts_compose_it(tmp_path):
    from PIL import Image

    word, color, shape = DCO_SUBJECT
    folder = export_dco(tmp_path / "d", n=3, size=32)
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == [f"a {word} {shape}", f"a photo of a {word} {shape}",
                                         f"an image of a {word} {shape}"]
    for row in rows:  # the oracle reads the subject back from every image
        found = detect(Image.open(folder / row["file_name"]))
        assert [(o.color, o.shape) for o in found] == [(color, shape)]
    prompts = _dco_prompts(4)
    assert prompts[0].category == "fidelity" and all(p.category == "composition" for p in prompts[1:])
    assert all(p.spec["objects"][0] == ObjectSpec(shape, color).to_dict() for p in prompts)
    assert sum(p.spec["relation"] is not None for p in prompts) == 2


def test_evogen_prompts_come_from_the_test_split_categories():
    prompts = _evogen_prompts(2)
    assert [p.category for p in prompts] == ["two_object"] * 2 + ["relation"] * 2 + ["count"] * 2 + ["held_out"] * 2
    assert all(p.id.startswith("shapes-test-") for p in prompts)


def _script():
    spec = importlib.util.spec_from_file_location("shapes_training_evidence", ROOT / "benchmarks" / "shapes_training_evidence.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_smoke_command_writes_the_report_and_resumes(tmp_path, single_thread, capsys):
    script = _script()
    out, results = tmp_path / "work", tmp_path / "results"
    argv = ["--output-dir", str(out), "--smoke", "--only", "dco", "--results-dir", str(results), "--threads", "1"]
    assert script.main(argv) == 0
    data = json.loads((results / "training.json").read_text())
    entry = data["dco"]
    assert set(entry) == {"metric", "method", "baselines", "paired", "paired_by_prompt", "minutes", "sizes",
                          "last_call"}
    assert entry["last_call"]["command"].endswith("--output-dir DIR --smoke")
    assert entry["sizes"]["dco_steps"] == 1 and entry["sizes"]["train_seeds"] == [0]  # the smoke sizes
    assert not any(k.startswith(("mcpl_", "reversion_", "evogen_")) for k in entry["sizes"])
    assert set(entry["baselines"]) == set(entry["paired"]) == {"dreambooth_lora"}
    assert entry["method"]["n"] == 2 and entry["paired"]["dreambooth_lora"]["n"] == 2
    for name in ("training.md", "training-dco.png", "training-dco-examples.png"):
        assert (results / name).stat().st_size > 0
    assert (out / "dco" / "runs" / "dco" / "README.md").exists()  # the model card beside the weights
    records = (out / "dco" / "records.jsonl").read_text()
    run = json.loads((out / "dco" / "runs" / "dco" / "training_run.json").read_text())
    assert script.main(argv) == 0  # resumed: nothing trained or drawn again
    assert (out / "dco" / "records.jsonl").read_text() == records
    assert json.loads((out / "dco" / "runs" / "dco" / "training_run.json").read_text()) == run
    assert np.isfinite(json.loads((results / "training.json").read_text())["dco"]["minutes"])
    # a changed recipe does not silently reuse the finished runs of the old one
    assert script.main(argv + ["--set", "dco_lr=0.5"]) == 2
    assert "learning_rate: 0.0001 -> 0.5" in capsys.readouterr().err
    # paths are not settings: a moved work folder keeps its runs
    from contrastive_diffusers.eval.train_evidence import _check_same_settings

    _check_same_settings(out, {"train_data_dir": "/old/data", "seed": 0}, {"train_data_dir": "/new/data", "seed": 0})
    # a second training seed: its own runs and image seeds, pairs within each seed, each seed's difference
    assert script.main(argv + ["--set", "train_seeds=0,1"]) == 0
    assert (out / "dco" / "runs" / "dco-seed1" / "README.md").exists()
    seeds = {json.loads(line)["seed"] for line in (out / "dco" / "records.jsonl").read_text().splitlines()}
    assert {0, 100_000, 1000, 101_000} <= seeds
    entry = json.loads((results / "training.json").read_text())["dco"]
    assert entry["paired"]["dreambooth_lora"]["n"] == 4
    assert set(entry["by_training_seed"]["dreambooth_lora"]) == {"0", "1"}
    assert all(s["n"] == 2 for s in entry["by_training_seed"]["dreambooth_lora"].values())
    per_seed = [s["delta"] for s in entry["by_training_seed"]["dreambooth_lora"].values()]
    across = entry["across_training_seeds"]["dreambooth_lora"]  # the training seeds as the samples
    assert across["n"] == 2 and across["mean"] == pytest.approx(sum(per_seed) / 2)
    report = (results / "training.md").read_text()
    assert "Each training seed's paired difference from dreambooth_lora: seed 0:" in report
    assert entry["sizes"]["train_seeds"] == [0, 1] and "train_seeds=[0, 1]" in report  # this call's sizes


def test_recipe_overrides_are_typed_and_named():
    from contrastive_diffusers.eval.train_experiments import FULL, with_overrides

    sizes = with_overrides(FULL, ["mcpl_steps=120", "dco_lr=1e-4", "seeds=0,1,2,3"])
    assert (sizes.mcpl_steps, sizes.dco_lr, sizes.seeds) == (120, 1e-4, (0, 1, 2, 3))
    assert sizes.reversion_steps == FULL.reversion_steps and with_overrides(FULL, []) == FULL
    with pytest.raises(ValueError, match="FIELD one of"):
        with_overrides(FULL, ["mcpl_step=3"])
    assert with_overrides(FULL, ["train_seeds=0,2"]).train_seeds == (0, 2)
    with pytest.raises(ValueError, match="train_seeds must name at least one seed"):
        with_overrides(FULL, ["train_seeds="])
    with pytest.raises(ValueError, match="seeds must be >= 0 and leave DCO's fidelity seeds below 100000"):
        with_overrides(FULL, ["seeds=0,100000"])
    with pytest.raises(ValueError, match="mcpl_steps needs an integer"):
        with_overrides(FULL, ["mcpl_steps=1.5"])


class _BlankPipeline:
    """Draws white images (the oracle finds nothing) and counts what it drew."""

    def __init__(self, drawn):
        self.drawn = drawn

    def __call__(self, texts, **kwargs):
        from types import SimpleNamespace

        from PIL import Image

        self.drawn += texts
        return SimpleNamespace(images=[Image.new("RGB", (32, 32), (255, 255, 255)) for _ in texts])


@pytest.fixture
def fake_dco(monkeypatch):
    """The DCO experiment with training and drawing replaced: what is drawn, and what exported."""
    import contrastive_diffusers.eval.train_evidence as evidence
    import contrastive_diffusers.eval.train_experiments as experiments

    drawn, exported = [], []
    monkeypatch.setattr(evidence, "load_pipeline", lambda arm: _BlankPipeline(drawn))
    monkeypatch.setattr(experiments, "train_once", lambda method, argv, out: Path(out))

    def export(data, n, size):
        exported.append(n)
        Path(data).mkdir(parents=True)

    monkeypatch.setattr(experiments, "export_dco", export)
    return drawn, exported


def test_a_smaller_recipe_counts_only_its_own_images(tmp_path, fake_dco):
    from contrastive_diffusers.eval.train_experiments import FULL, run_experiment, with_overrides

    drawn, _ = fake_dco
    entry, _ = run_experiment("dco", tmp_path, with_overrides(FULL, ["dco_prompts=2"]))
    assert entry["method"]["n"] == 12 and len(drawn) == 2 * (12 + 12)  # 2 arms x (composition + fidelity)
    drawn.clear()
    entry, details = run_experiment("dco", tmp_path, with_overrides(FULL, ["dco_prompts=2", "seeds=0,1"]))
    assert entry["method"]["n"] == entry["paired"]["dreambooth_lora"]["n"] == 4 and drawn == []
    entry, details = run_experiment("dco", tmp_path, with_overrides(FULL, ["dco_prompts=1"]))
    assert entry["method"]["n"] == 6 and details["arms"]["dco"]["success/fidelity"]["n"] == 6 and drawn == []


def test_a_recipe_asking_for_other_data_is_refused(tmp_path, fake_dco):
    from contrastive_diffusers.eval.train_evidence import RecipeChangedError
    from contrastive_diffusers.eval.train_experiments import FULL, run_experiment, with_overrides

    _, exported = fake_dco
    run_experiment("dco", tmp_path, with_overrides(FULL, ["dco_prompts=1", "seeds=0"]))
    run_experiment("dco", tmp_path, with_overrides(FULL, ["dco_prompts=1", "seeds=0"]))
    assert exported == [6]  # exported once, then reused
    with pytest.raises(RecipeChangedError, match=r"other sizes \(images: 6 -> 24\)"):
        run_experiment("dco", tmp_path, with_overrides(FULL, ["dco_prompts=1", "seeds=0", "dco_images=24"]))
    assert exported == [6]


def test_an_image_whose_prompt_changed_is_drawn_again(tmp_path, monkeypatch):
    import contrastive_diffusers.eval.train_evidence as evidence

    drawn = []
    monkeypatch.setattr(evidence, "load_pipeline", lambda arm: _BlankPipeline(drawn))
    spec = {"objects": [ObjectSpec("circle", "red").to_dict()], "relation": None}
    path, settings = tmp_path / "records.jsonl", evidence.GenerationSettings(steps=1)
    evidence.score_arm(evidence.Arm("a"), [EvalPrompt("p", "a red circle", spec)], [0, 1], path, settings)
    records = evidence.score_arm(evidence.Arm("a"), [EvalPrompt("p", "one red circle", spec)], [0], path, settings)
    assert drawn == ["a red circle", "a red circle", "one red circle"]
    assert [(r["prompt"], r["seed"]) for r in records] == [("one red circle", 0)]
    assert len(evidence.read_records(path)) == 2  # one record per image: the later line replaced the earlier


def test_a_line_cut_by_an_interrupted_write_does_not_swallow_the_next(tmp_path, monkeypatch):
    import contrastive_diffusers.eval.train_evidence as evidence

    drawn = []
    monkeypatch.setattr(evidence, "load_pipeline", lambda arm: _BlankPipeline(drawn))
    spec = {"objects": [ObjectSpec("circle", "red").to_dict()], "relation": None}
    prompts = [EvalPrompt(f"p{k}", "a red circle", spec) for k in range(4)]
    path, settings = tmp_path / "records.jsonl", evidence.GenerationSettings(steps=1, batch=1)
    evidence.score_arm(evidence.Arm("a"), prompts[:2], [0], path, settings)
    text = path.read_text()
    path.write_text(text[: text.index("\n") + 20])  # the second line cut in the middle
    records = evidence.score_arm(evidence.Arm("a"), prompts, [0], path, settings)
    assert sorted(r["prompt_id"] for r in records) == ["p0", "p1", "p2", "p3"]
    assert len(drawn) == 2 + 3  # p1 (cut), p2 and p3 drawn by the second call
    assert all(json.loads(line) for line in path.read_text().splitlines())
    # a whole record whose newline was not written yet: drawn again, not counted and then dropped
    path.write_text(path.read_text().rstrip("\n"))
    drawn.clear()
    records = evidence.score_arm(evidence.Arm("a"), prompts, [0], path, settings)
    assert len(records) == 4 and len(drawn) == 1


def test_recipes_that_cannot_run_are_refused_before_training():
    from contrastive_diffusers.eval.train_experiments import FULL, with_overrides

    for override, message in [("batch=0", r"batch must be a positive integer, got 0 \(--set batch=N\)"),
                              ("mcpl_steps=-5", "mcpl_steps must be a positive integer"),
                              ("dco_lr=nan", "dco_lr must be a positive number"),
                              ("evogen_steps=2", "evogen_steps must be at least 3"),
                              ("seeds=0,0,1", r"seeds names a seed twice: \(0, 0, 1\)")]:
        with pytest.raises(ValueError, match=message):
            with_overrides(FULL, [override])


def test_more_reversion_prompts_than_object_pairs_are_refused(tmp_path):
    from contrastive_diffusers.eval.train_evidence import RecipeError

    exemplars = json.loads((export_reversion(tmp_path / "r", per_relation=6, size=32)["above"] / "text.json")
                           .read_text())
    with pytest.raises(RecipeError, match=r"only \d+ object pairs .* use --set reversion_prompts=\d+ or fewer"):
        _reversion_prompts("above", exemplars, 2000, 0)
