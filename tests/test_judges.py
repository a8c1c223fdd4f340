"""The judge framework: the registry, the Judge interface, and the bench plumbing (judging in
the score stage, re-judging on changed settings, the summary's judge agreement with the oracle),
with a small deterministic judge of our own."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
from PIL import Image

from contrastive_diffusers.atomic_io import write_json_atomic
from contrastive_diffusers.cli.bench import add_bench_parser, judge_arguments
from contrastive_diffusers.eval.bench import BenchConfig
from contrastive_diffusers.eval.bench_score import score_stage
from contrastive_diffusers.eval.judges import JUDGES, Judge, judge_class, judge_table, load_judge, load_judges
from contrastive_diffusers.eval.run_folder import BenchInputError, new_record, read_record
from contrastive_diffusers.eval.summary import summarize


class RednessJudge(Judge):
    """Scores an image by its mean red channel (0..1); ``threshold`` is a setting."""

    name = "redness"
    metric_names = ("redness",)
    options = ("clip_model",)

    def __init__(self, clip_model=None, threshold: float = 0.5, device="cpu", dtype=None, batch_size: int = 16):
        super().__init__(device, dtype, batch_size)
        self.clip_model, self.threshold, self.calls = clip_model, threshold, 0

    def settings(self):
        return {**super().settings(), "threshold": self.threshold}

    def score(self, images, records):
        self.calls += 1
        values = [float(np.asarray(image)[..., 0].mean() / 255) for image in images]
        return [{"metrics": {"redness": v}, "details": {"red": v > self.threshold}} for v in values]

    def summarize(self, records):
        rows = [[m, float(np.mean([r["metrics"]["redness"] for r in records if r["method"] == m]))]
                for m in dict.fromkeys(r["method"] for r in records)]
        return judge_table("Redness", ["method", "redness"], rows)


def _progress(total, desc, unit):
    class Bar:
        def update(self, n):
            pass

        def close(self):
            pass

    return Bar()


@pytest.fixture
def folder(tmp_path):
    """Three records with images of known redness (0.2, 0.6, 1.0)."""
    paths = []
    for seed, red in enumerate((51, 153, 255)):
        image = tmp_path / "none" / "p" / f"{seed}.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (red, 0, 0)).save(image)
        record = new_record("none", "p", "a red square", "color", seed)
        record.update(status="ok", image=f"none/p/{seed}.png")
        path = tmp_path / "none" / "p" / f"{seed}.json"
        write_json_atomic(path, record)
        paths.append(path)
    return tmp_path, paths


KEY = {"clip": None, "captioner": None}


def test_registry():
    assert set(JUDGES) >= {"t2i-compbench", "geneval"}
    assert judge_class("t2i-compbench").metric_names == ("bvqa", "t2i_clip")
    with pytest.raises(ValueError, match="unknown judge 'vqa'; the known judges are: geneval, t2i-compbench"):
        load_judge("vqa")
    with pytest.raises(ValueError, match="unknown judge option"):
        load_judges([], {"vqa_modle": "x"})
    judge = RednessJudge()
    # objects pass through; an option goes only to judges that take it
    assert load_judges([judge], {"vqa_model": "unused", "clip_model": None}) == [judge]
    with pytest.raises(ValueError, match="named twice"):
        load_judges([judge, RednessJudge()])


def test_judge_interface():
    with pytest.raises(ValueError, match="batch_size"):
        RednessJudge(batch_size=0)
    assert RednessJudge().empty_result("why") == {"metrics": {"redness": None}, "details": {"skipped": "why"}}
    assert RednessJudge().dtype is not None and str(RednessJudge().device) == "cpu"
    with pytest.raises(ValueError, match="needs 2 cells"):
        judge_table("t", ["a", "b"], [["x"]])
    with pytest.raises(TypeError):
        Judge()  # abstract


def test_score_stage_judges_and_rejudges_on_changed_settings(folder):
    run_dir, paths = folder
    judge = RednessJudge()
    assert score_stage(run_dir, paths, None, None, KEY, False, _progress, [judge]) == 3
    records = [read_record(p) for p in paths]
    assert [r["metrics"]["redness"] for r in records] == pytest.approx([0.2, 0.6, 1.0])
    assert [r["judges"]["redness"]["details"]["red"] for r in records] == [False, True, True]
    assert all(r["judges"]["redness"]["settings"] == {"name": "redness", "threshold": 0.5} for r in records)
    assert all(r["scorer"] == KEY for r in records)
    # nothing to do on a second call; a changed setting re-judges every image
    assert score_stage(run_dir, paths, None, None, KEY, False, _progress, [judge]) == 0 and judge.calls == 1
    stricter = RednessJudge(threshold=0.8)
    assert score_stage(run_dir, paths, None, None, KEY, False, _progress, [stricter]) == 3
    assert [read_record(p)["judges"]["redness"]["details"]["red"] for p in paths] == [False, False, True]


def test_judge_metrics_survive_a_clip_rescore(folder, tiny_clip_dir):
    from contrastive_diffusers.eval import ClipScorer

    run_dir, paths = folder
    judge = RednessJudge()
    score_stage(run_dir, paths, None, None, KEY, False, _progress, [judge])
    # CLIP scores the records afterwards (a new scorer key): its metrics replace the record's,
    # the judge's are merged back without judging again
    scorer, key = ClipScorer.from_pretrained(tiny_clip_dir, device="cpu"), {"clip": "tiny", "captioner": None}
    assert score_stage(run_dir, paths, scorer, None, key, False, _progress, [judge]) == 3 and judge.calls == 1
    records = [read_record(p) for p in paths]
    assert [r["metrics"]["redness"] for r in records] == pytest.approx([0.2, 0.6, 1.0])
    assert all("clip_score" in r["metrics"] and r["scorer"] == key for r in records)


def test_summary_judge_agreement_with_the_oracle():
    # bvqa vs oracle: pairs (0.9, 1), (0.6, 0), (0.2, 0), (0.4, 1) for "none"; (0.7, 1) for "x"
    rows = [("none", 0.9, 1.0), ("none", 0.6, 0.0), ("none", 0.2, 0.0), ("none", 0.4, 1.0), ("x", 0.7, 1.0)]
    records = [{"method": m, "prompt_id": f"p{i}", "seed": 0, "status": "ok", "category": None,
                "metrics": {"oracle_success": o, "bvqa": b}} for i, (m, b, o) in enumerate(rows)]
    agreement = summarize(records)["judge_agreement"]["bvqa"]
    xs, ys = [0.9, 0.6, 0.2, 0.4], [1, 0, 0, 1]
    mx, my = sum(xs) / 4, sum(ys) / 4
    r = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / math.sqrt(
        sum((x - mx) ** 2 for x in xs) * sum((y - my) ** 2 for y in ys))
    assert agreement["none"]["r"] == pytest.approx(r) and agreement["none"]["n"] == 4
    assert agreement["none"]["accuracy"] == pytest.approx(0.5)  # 0.9 right, 0.6 wrong, 0.2 right, 0.4 wrong
    assert agreement["x"] == {"r": None, "accuracy": 1.0, "n": 1}
    assert agreement["all methods"]["accuracy"] == pytest.approx(0.6)
    assert summarize([{**r, "metrics": {"bvqa": 0.5}} for r in records])["judge_agreement"] == {}


def test_bench_config_and_cli_arguments(tmp_path):
    with pytest.raises(BenchInputError, match="unknown judge 'vqa'"):
        BenchConfig(output_dir=tmp_path, judges=["vqa"])
    config = BenchConfig(output_dir=tmp_path, judges=["t2i-compbench", RednessJudge()],
                         judge_options={"vqa_model": "some/model"})
    settings = config.settings()
    assert settings["judges"] == ["t2i-compbench", "redness"] and settings["judge_options"] == {"vqa_model": "some/model"}
    json.dumps(settings)
    parser = argparse.ArgumentParser()
    add_bench_parser(parser.add_subparsers())
    args = parser.parse_args(["bench", "--judge", "t2i-compbench,geneval", "--judge", "t2i-compbench",
                              "--vqa-model", "v", "--judge-clip-model", "c"])
    assert judge_arguments(args) == (["t2i-compbench", "geneval"], {"vqa_model": "v", "detector": None,
                                                                    "clip_model": "c"})


def test_judge_metrics_stay_when_the_clip_metrics_are_hidden(folder, tiny_clip_dir):
    """A folder scored with one CLIP and judged, then judged again with no CLIP (`bench
    --clip-model none --judge ...`): the other CLIP's metrics are hidden, the judge's are not."""
    from contrastive_diffusers.eval import ClipScorer
    from contrastive_diffusers.eval.run_folder import Ledger, gather

    run_dir, paths = folder
    scorer, key = ClipScorer.from_pretrained(tiny_clip_dir, device="cpu"), {"clip": "tiny", "captioner": None}
    score_stage(run_dir, paths, scorer, None, key, False, _progress, [RednessJudge()])
    assert score_stage(run_dir, paths, None, None, KEY, False, _progress, [RednessJudge(threshold=0.1)]) == 3
    ledger = Ledger(run_dir, {"fingerprint": {}, "methods": {"none": None}, "prompts": {"p": "a red square"},
                              "categories": {"p": "color"}, "seeds": [0, 1, 2], "runs": []})
    records = gather(run_dir, ledger, {("none", "p", s) for s in range(3)}, KEY)
    assert [r["metrics"] for r in records] == [{"redness": pytest.approx(v)} for v in (0.2, 0.6, 1.0)]
    assert all(r["scored_by"] == key for r in records)
    assert summarize(records)["metrics"] == ["redness"]


@pytest.mark.parametrize("text", ['{"method": "none", "status": "ok"', "[]", "{}", '{"status": "ok"}', "3"])
def test_a_damaged_record_is_redone_and_named(folder, text):
    from contrastive_diffusers.eval.run_folder import Ledger, gather

    run_dir, paths = folder
    paths[1].write_text(text)
    assert read_record(paths[1]) is None
    assert score_stage(run_dir, paths, None, None, KEY, False, _progress, []) == 0  # not read as an image to score
    ledger = Ledger(run_dir, {"fingerprint": {}, "methods": {"none": None}, "prompts": {"p": "a red square"},
                              "categories": {"p": "color"}, "seeds": [0, 1, 2], "runs": []})
    record = gather(run_dir, ledger, {("none", "p", s) for s in range(3)}, KEY)[1]
    assert record["status"] == "failed" and record["error"].startswith("unreadable record none/p/1.json")


def _geneval_judge():
    """GenEvalJudge's table and row checks without its models (they read only these attributes)."""
    from contrastive_diffusers.eval.judges.geneval import GenEvalJudge
    from contrastive_diffusers.eval.judges.geneval_rules import GenEvalSettings

    judge = GenEvalJudge.__new__(GenEvalJudge)
    judge.rules, judge.detector_name, judge.clip_name = GenEvalSettings(), "detector", "clip"
    return judge


def test_geneval_overall_is_left_out_for_a_method_missing_tasks():
    """GenEval's overall averages the same tasks for every model: CONFORM, not applicable to
    single objects, gets none, and every method the mean over the tasks all have."""
    def record(method, prompt, tag, correct):
        metrics = None if correct is None else {"geneval_correct": float(correct)}
        return {"method": method, "prompt_id": prompt, "judge_metadata": {"tag": tag, "include": []},
                "metrics": metrics}

    verdicts = {"single_object": [1, 1], "two_object": [1, 0], "position": [0, 0]}
    records = [record("none", f"{tag}-{k}", tag, v) for tag, vs in verdicts.items() for k, v in enumerate(vs)]
    records += [record("conform", f"single_object-{k}", "single_object", None) for k in range(2)]
    records += [record("conform", f"two_object-{k}", "two_object", v) for k, v in enumerate([1, 1])]
    records += [record("conform", f"position-{k}", "position", v) for k, v in enumerate([1, 0])]
    table = _geneval_judge().summarize(records)
    assert table["columns"][:6] == ["method", "overall", "overall, shared tasks", "single_object", "two_object",
                                    "position"]
    none, conform = table["rows"]
    assert none[:6] == ["none", pytest.approx((1 + 0.5 + 0) / 3), pytest.approx((0.5 + 0) / 2), 1.0, 0.5, 0.0]
    assert conform[:6] == ["conform", None, pytest.approx((1 + 0.5) / 2), None, 1.0, 0.5]
    assert "conform: single_object" in table["notes"][-1] and "averages two_object, position for" in table["notes"][-1]
    # a method with no judged image at all is named, not silently absent
    table = _geneval_judge().summarize(records + [record("syngen", "single_object-0", "single_object", None)])
    assert [row[0] for row in table["rows"]] == ["none", "conform"]
    assert table["notes"][-1].startswith("No judged GenEval image for syngen")
    # every method with every task: GenEval's overall alone, as summary_scores prints it
    table = _geneval_judge().summarize([r for r in records if r["method"] == "none"])
    assert table["columns"][:3] == ["method", "overall", "single_object"] and len(table["notes"]) == 2


def test_geneval_rows_are_checked_before_drawing(tmp_path, tiny_clip_dir):
    from contrastive_diffusers.eval import PromptItem
    from contrastive_diffusers.eval.bench import run_benchmark

    judge = _geneval_judge()
    good = {"tag": "position", "include": [{"class": "car", "count": 1},
                                           {"class": "bench", "count": 1, "position": ["left of", 0]}]}
    assert judge.input_problem(good) is None and judge.input_problem(None) is None
    assert judge.input_problem({"prompt": "no row"}) is None  # not GenEval's: skipped when judged
    bad = {**good, "include": [good["include"][0], {**good["include"][1], "position": ["left of", 1]}]}
    assert "index of an earlier include row" in judge.input_problem(bad)

    class RowChecker(RednessJudge):
        input_problem = judge.input_problem

    items = [PromptItem("ok", "a car and a bench", "position", None, good),
             PromptItem("broken", "a bench left of a car", "position", None, bad)]
    config = BenchConfig(output_dir=tmp_path / "run", model="tiny-sd1", methods=["none"], prompt_set=items,
                         seeds=[0], steps=2, height=64, width=64, progress=False, clip_model=None,
                         judges=[RowChecker()])
    with pytest.raises(BenchInputError, match=r"prompt 'broken' \('a bench left of a car'\): GenEval include row 1 "
                                               r"has position \['left of', 1\].*fix it in the prompt file"):
        run_benchmark(config)
    assert not list((tmp_path / "run").glob("none/*/*.png"))  # refused before the first image


def test_a_resumed_run_rejudges_prompts_whose_category_or_row_changed(tmp_path, tiny_clip_dir):
    from contrastive_diffusers.eval import PromptItem
    from contrastive_diffusers.eval.bench import run_benchmark

    def bench(items, judge, clip_model=str(tiny_clip_dir)):
        return run_benchmark(BenchConfig(
            output_dir=tmp_path / "run", model="tiny-sd1", methods=["none"], prompt_set=items, seeds=[0],
            steps=2, height=64, width=64, progress=False, clip_model=clip_model, judges=[judge]))

    items = [PromptItem("a", "a red car", "color", None, {"note": 1}), PromptItem("b", "a blue bench", "color")]
    first = RednessJudge()
    before = {r["prompt_id"]: r for r in bench(items, first).records}
    assert first.calls == 1 and all("clip_score" in r["metrics"] for r in before.values())
    same = RednessJudge()
    assert bench(items, same).scored == 0 and same.calls == 0  # nothing changed: nothing judged again
    # a changed category or evaluation row: judged again, with no CLIP model at hand...
    changed = [PromptItem("a", "a red car", "color", None, {"note": 2}), PromptItem("b", "a blue bench", "texture")]
    again = RednessJudge()
    result = bench(changed, again, clip_model=None)
    assert result.generated == 0 and result.scored == 2 and again.calls == 1
    records = {r["prompt_id"]: r for r in result.records}
    assert records["a"]["judge_metadata"] == {"note": 2} and records["b"]["category"] == "texture"
    assert all(r["metrics"] == {"redness": before[k]["metrics"]["redness"]} for k, r in records.items())
    # ...and the CLIP metrics, which the change does not touch, are still there for their model
    kept = {r["prompt_id"]: r for r in bench(changed, RednessJudge()).records}
    assert all(kept[k]["metrics"] == before[k]["metrics"] for k in kept)
    # changed token groups: new CLIP metrics; a judge-only run in between keeps the verdicts
    # and leaves the record to the next CLIP run
    regrouped = [PromptItem("a", "a red car", "color", [["car"]], {"note": 2}), changed[1]]
    assert bench(regrouped, RednessJudge(), clip_model=None).scored == 0
    rescored = bench(regrouped, RednessJudge())
    final = {r["prompt_id"]: r for r in rescored.records}
    assert rescored.scored == 1 and final["a"]["token_groups"] == [["car"]]
    assert final["a"]["scorer"] == final["b"]["scorer"] and "clip_score" in final["a"]["metrics"]
    assert final["a"]["metrics"]["redness"] == before["a"]["metrics"]["redness"]


def test_a_changed_method_configuration_names_the_setting(tmp_path):
    """Two configurations of one method name: the message names the first differing setting,
    also one that a side lacks against one that is None on the other."""
    from contrastive_diffusers.eval.run_folder import Ledger

    ledger = Ledger(tmp_path)
    ledger.merge({"steps": 2}, {"m": {"method": "conform", "schedule": {"steps": 5, "extra": None}}}, {}, {}, [0])
    with pytest.raises(BenchInputError, match=r"method 'm' made with another configuration \(schedule.steps: 5 "
                                              r"there, 6 now\)"):
        ledger.merge({"steps": 2}, {"m": {"method": "conform", "schedule": {"steps": 6, "extra": None}}}, {}, {}, [0])
    with pytest.raises(BenchInputError, match=r"\(schedule.extra: None there, '\(not set\)' now\)"):
        ledger.merge({"steps": 2}, {"m": {"method": "conform", "schedule": {"steps": 5}}}, {}, {}, [0])
