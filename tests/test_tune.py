"""`tune`: the search space and plan, the train/test split, the search and confirmation on the
embedded and tiny models, resuming, the errors, and its output in generate / bench."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

from contrastive_diffusers.cli import main
from contrastive_diffusers.eval import PromptItem
from contrastive_diffusers.eval.bench import BenchConfig, run_benchmark
from contrastive_diffusers.eval.tune import TuneConfig, rung_scores, run_tuning, split_prompts
from contrastive_diffusers.eval.tune import _check_folder as tune_check_folder
from contrastive_diffusers.eval.tune_report import search_rows
from contrastive_diffusers.eval.tune_runs import arm_tables
from contrastive_diffusers.eval.tune_space import (Plan, build_candidate, plan_halving, same_guidance, search_space,
                                                  split_by_hash)
from contrastive_diffusers.guidance import load_method
from contrastive_diffusers.runs import build_methods

pytestmark = pytest.mark.usefixtures("single_thread")
REPO = Path(__file__).resolve().parents[1]
TINY_PROMPTS = [PromptItem(f"p{i}", text, "objects", groups) for i, (text, groups) in enumerate([
    ("a red car and a blue bench", [["red", "car"], ["blue", "bench"]]),
    ("a cat and a dog", [["cat"], ["dog"]]),
    ("a green apple and a bowl", [["green", "apple"], ["bowl"]]),
    ("a red cat and a blue dog", [["red", "cat"], ["blue", "dog"]]),
    ("a car and a bench", [["car"], ["bench"]]),
    ("a blue apple and a red bowl", [["blue", "apple"], ["red", "bowl"]]),
    ("a dog and a bench", [["dog"], ["bench"]]),
    ("a green cat and a red car", [["green", "cat"], ["red", "car"]]),
])]


# ============================================================================ space, plan, split


def test_search_space_starts_with_the_defaults_and_builds_every_candidate():
    space = search_space("conform", map_sizes=[(16, 16)])
    assert space[0] == {} and len(space) == 1 + 4 * 3 * 2 * 3 * 2  # steps x last step x refinement x temperature x maps
    assert search_space("conform", [(16, 16)]) == space  # a fixed order: resuming finds the same candidates
    steps = {c["step_size"] for c in space[1:]}
    assert steps == {5.0, 10.0, 20.0, 40.0}  # x0.25 .. x2 of the paper's 20
    method, attn_res = build_candidate("ebama", {"step_size": 5.0, "max_update_step": 0.5, "intensity_weight": 1.0,
                                                 "attn_res": (16, 16)})
    assert method.intensity_weight == 1.0 and attn_res == (16, 16)
    assert method.schedule.step_size == 5.0 and method.schedule.resolve(20).max_update_step == 10
    assert load_method(json.loads(method.to_json_string())).config() == method.config()
    assert build_candidate("syngen", {}) [0].config() == build_candidate("syngen", {})[0].config()


def test_a_grid_point_that_guides_as_the_defaults_is_searched_once():
    # SynGen guides steps 0-24 of 50; the grid's "last step 0.5" at the paper's step size is
    # the same guidance in a 50-step loop (the 2026-12-03 UNet evidence searched it beside the
    # defaults and ended on a tie of the two), not in a 28-step one
    twin = {"step_size": 20.0, "max_update_step": 0.5}
    assert same_guidance("syngen", twin, 50) == same_guidance("syngen", {}, 50)
    assert same_guidance("syngen", twin, 51) == same_guidance("syngen", {}, 51)  # PNDM's loop at 50 steps
    assert same_guidance("syngen", twin, 28) != same_guidance("syngen", {}, 28)
    # the MMDiT guider reads step 25 as 25/50 of any loop: twins at 28 steps too, and EBAMA's
    # 26/50 (14.56 of 28) lands on step 14 as 0.5 does
    assert same_guidance("syngen", twin, 28, paper_fractions=True) == same_guidance("syngen", {}, 28, True)
    ebama_twin = {"step_size": 20.0, "max_update_step": 0.5, "intensity_weight": 0.5}
    assert same_guidance("ebama", ebama_twin, 28, True) == same_guidance("ebama", {}, 28, True)
    assert same_guidance("ebama", ebama_twin, 50, True) != same_guidance("ebama", {}, 50, True)
    assert twin in search_space("syngen", [(16, 16)]) and twin in search_space("syngen", [(16, 16)], loop_steps=28)
    at_50 = search_space("syngen", [(16, 16)], loop_steps=50)
    assert twin not in at_50 and at_50 == [c for c in search_space("syngen", [(16, 16)]) if c != twin]  # order kept
    assert ebama_twin not in search_space("ebama", [], loop_steps=28, paper_fractions=True)
    # A&E: the same, with the paper's refinement at steps 0, 10 and 20 (fractions 0, 0.2, 0.4)
    ae_twin = {"step_size": 20.0, "max_update_step": 0.5, "refinement_iterations": 20}
    assert ae_twin not in search_space("attend_and_excite", [(16, 16)], loop_steps=50)
    assert ae_twin in search_space("attend_and_excite", [(16, 16)], loop_steps=20)
    # without refinement updates the targets do not matter; a map size, a weight or a step size does
    no_refinement = {"step_size": 20.0, "max_update_step": 0.5, "refinement_iterations": 0}
    assert (same_guidance("attend_and_excite", no_refinement, 50)
            == same_guidance("attend_and_excite", {**no_refinement, "max_update_step": 25}, 50))
    assert same_guidance("syngen", twin, 50) != same_guidance("syngen", {**twin, "attn_res": (16, 16)}, 50)
    assert same_guidance("conform", {"temperature": 1.0}, 50) != same_guidance("conform", {}, 50)
    assert same_guidance("syngen", {"step_size": 10.0}, 50) != same_guidance("syngen", {}, 50)
    # a candidate that guides no step is plain generation, whatever its step size or weight
    assert (same_guidance("ebama", {"step_size": 5.0, "max_update_step": 0.25, "intensity_weight": 1.0}, 3)
            == same_guidance("ebama", {"step_size": 40.0, "max_update_step": 0.25}, 3) == "no step guided")
    for method in ("attend_and_excite", "conform", "ebama", "syngen"):
        for steps, fractions in ((2, False), (50, False), (28, True)):
            kept = search_space(method, [(16, 16)], loop_steps=steps, paper_fractions=fractions)
            keys = [same_guidance(method, c, steps, fractions) for c in kept]
            assert len(keys) == len(set(keys)) and kept[0] == {}


def test_the_loop_the_guider_sees():
    import torch

    from contrastive_diffusers.eval.tune import guided_loop
    from contrastive_diffusers.models.loading import load_pipeline

    # PNDM (SD 1.x, the tiny sd1) runs one iteration more than asked; the MMDiT guider reads
    # paper step indices as fractions
    loops = {model: guided_loop(load_pipeline(model, "cpu", torch.float32, quiet=True), 50)
             for model in ("tiny-sd1", "embedded", "embedded-mmdit")}
    assert loops == {"tiny-sd1": (51, False), "embedded": (50, False), "embedded-mmdit": (50, True)}


def test_a_run_too_short_to_tell_settings_apart_says_so(tmp_path):
    # one MMDiT step: SynGen's step 25 of 50 and every fraction of the grid resolve to no guided
    # step, so there is nothing to compare (not "raise the budget")
    with pytest.raises(ValueError, match="In 1 denoising steps every setting of syngen.*raise --steps"):
        run_tuning(TuneConfig(tmp_path / "t", "syngen", model="embedded-mmdit", steps=1, progress=False))


def test_a_folder_searched_over_other_candidates_is_refused(tmp_path):
    from contrastive_diffusers.eval.tune import _check_candidates

    config = TuneConfig(tmp_path, "syngen")
    twin = {"step_size": 20.0, "max_update_step": 0.5}
    now = [{}, {"step_size": 5.0, "max_update_step": 0.25}]
    for state in ({"plan": {"settings": [{}, twin]}}, {"search": [{"settings": {}}, {"settings": twin}]}):
        with pytest.raises(ValueError, match=r"candidate 1: \{'step_size': 20.0.*choose another --output-dir"):
            _check_candidates(config, state, now)
    _check_candidates(config, {"plan": {"settings": now}}, now)  # the same list resumes
    _check_candidates(config, {}, now)  # a new folder
    # a search of an earlier version killed before its table: only its candidate files tell
    folder = tmp_path / "candidates"
    folder.mkdir()
    for index, candidate in enumerate([{}, twin]):
        (folder / f"syngen-c{index:02d}.json").write_text(build_candidate("syngen", candidate)[0].to_json_string())
    with pytest.raises(ValueError, match=r"candidate 1: another method \(syngen-c01.json\) there"):
        _check_candidates(config, {}, now)
    _check_candidates(config, {}, [{}, twin])
    # files written under another diffusers release are the same settings
    path = folder / "syngen-c01.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "_diffusers_version": "0.35.2"}))
    _check_candidates(config, {}, [{}, twin])
    with pytest.raises(ValueError, match="candidate 2: no candidate there"):
        _check_candidates(config, {"plan": {"settings": now}}, [*now, twin])


def test_plan_halves_the_candidates_and_fits_the_budget():
    plan = plan_halving(96, 100, 300, 1)
    assert plan == Plan(10, (2, 4, 8, 16), 1)
    assert plan.images == 10 * 2 + 5 * 4 + 3 * 8 + 2 * 16 == 96
    assert plan.drawn == 10 * 2 + 5 * 2 + 3 * 4 + 2 * 8 == 58
    assert plan_halving(4, 100, 300, 1) == Plan(2, (2,), 1)
    assert plan_halving(24, 100, 3, 2).prompts[-1] <= 3  # never more prompts than the split has
    with pytest.raises(ValueError, match="cannot compare two settings"):
        plan_halving(1, 100, 300, 1)


def test_hash_split_is_deterministic_and_disjoint():
    train, test = split_by_hash(TINY_PROMPTS)
    assert {i.id for i in train}.isdisjoint({i.id for i in test}) and len(train) + len(test) == len(TINY_PROMPTS)
    again = split_by_hash(list(reversed(TINY_PROMPTS)))
    assert {i.id for i in again[1]} == {i.id for i in test}
    # a text held twice (CC-500 repeats lines) lands on one side under both ids, in any order
    repeated = [PromptItem(f"p-{n}", f"a cat number {n % 7}") for n in range(40)]
    for order in (repeated, repeated[::-1]):
        train, test = split_by_hash(order)
        assert {i.prompt for i in train}.isdisjoint({i.prompt for i in test}) and train and test


def test_shapes_split_uses_the_world_splits(tmp_path):
    train, test = split_prompts(TuneConfig(tmp_path, "conform"))
    assert {i.metadata["split"] for i in train} == {"train"} and {i.metadata["split"] for i in test} == {"test"}
    assert not {i.prompt for i in train} & {i.prompt for i in test}
    # every single-object caption of the train split is also a test prompt, so none is left to tune on
    assert {i.category for i in train} == {"two_object", "relation"}
    assert "held_out" in {i.category for i in test}
    with pytest.raises(ValueError, match="has no category 'nosuch'; its categories: .*two_object"):
        split_prompts(TuneConfig(tmp_path, "conform", categories=["two_object", "nosuch"]))


def test_arm_tables_pair_by_prompt_and_seed():
    def rec(method, prompt, seed, value, category="c"):
        return {"method": method, "prompt_id": prompt, "seed": seed, "category": category, "status": "ok",
                "metrics": {"oracle_success": value}}

    records = [rec("none", "a", 0, 0.0), rec("none", "b", 0, 1.0), rec("none", "c", 0, 0.0),
               rec("m", "c", 0, 1.0), rec("m", "a", 0, 1.0), rec("m", "b", 0, 1.0)]
    tables = arm_tables(records, "oracle_success", ["none", "m"])
    assert tables["methods"]["m"]["c"] == {"mean": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n": 3, "n_prompts": 3}
    delta = tables["paired"]["m"]["c"]  # differences 1, 0, 1: mean 2/3, s = 0.57735, t(0.975, 2) = 4.302653
    half = 4.302653 * 0.5773503 / math.sqrt(3)
    assert delta["delta"] == pytest.approx(2 / 3) and delta["n"] == 3
    assert delta["ci_low"] == pytest.approx(2 / 3 - half, abs=1e-5)
    assert 2 / 3 + half > 1 and delta["ci_high"] == 1.0  # a 0/1 metric's difference cannot exceed 1
    none = tables["methods"]["none"]["c"]  # 0, 1, 0: 1/3 -+ the same half-width, past both ends
    assert none["mean"] == pytest.approx(1 / 3, abs=1e-6) and (none["ci_low"], none["ci_high"]) == (0.0, 1.0)


def test_arm_tables_do_not_clip_unbounded_metrics():
    records = [{"method": "none", "prompt_id": p, "seed": 0, "category": "c", "status": "ok",
                "metrics": {"clip_score": v}} for p, v in (("a", 20.0), ("b", 30.0))]
    stat = arm_tables(records, "clip_score", ["none"])["methods"]["none"]["c"]
    half = 12.706205 * math.sqrt(50.0) / math.sqrt(2)  # t(0.975, 1) x s / sqrt(n)
    assert stat["ci_low"] == pytest.approx(25 - half, abs=1e-4) and stat["ci_high"] == pytest.approx(25 + half, abs=1e-4)


def test_arm_tables_intervals_count_prompts_not_seeds():
    # two seeds of each of three prompts that move together: the interval is over the three
    # prompts (cluster-robust), not over six independent images
    values = {("a", 0): 20.0, ("a", 1): 22.0, ("b", 0): 30.0, ("b", 1): 32.0, ("c", 0): 25.0, ("c", 1): 27.0}
    records = [{"method": "none", "prompt_id": p, "seed": seed, "category": "c", "status": "ok",
                "metrics": {"clip_score": v}} for (p, seed), v in values.items()]
    records += [{**r, "method": "m", "metrics": {"clip_score": r["metrics"]["clip_score"] + (1.0 if r["seed"] else 3.0)}}
                for r in records]
    tables = arm_tables(records, "clip_score", ["none", "m"])
    stat = tables["methods"]["none"]["c"]
    # prompt sums of deviations from 26: -10, +10, 0; se^2 = 3/2 x 200 / 6^2; t(0.975, 2) = 4.302653
    half = 4.302653 * math.sqrt(1.5 * 200 / 36)
    assert (stat["n"], stat["n_prompts"], stat["mean"]) == (6, 3, 26.0)
    assert stat["ci_low"] == pytest.approx(26 - half, abs=1e-4) and stat["ci_high"] == pytest.approx(26 + half, abs=1e-4)
    pooled_half = 2.570582 * math.sqrt(106 / 5) / math.sqrt(6)  # what six independent images would give
    assert half > 2.5 * pooled_half
    delta = tables["paired"]["m"]["c"]  # +3 on seed 0, +1 on seed 1 of every prompt: prompt sums all 0
    assert (delta["delta"], delta["n"], delta["n_prompts"]) == (2.0, 6, 3) and delta["ci_low"] == delta["ci_high"] == 2.0


def test_failed_search_images_count_as_zero():
    # c0 draws all four prompts; c1 fails on the two hard ones and scores higher on the easy
    # ones: left out, its failures would rank it first.
    def rec(method, prompt, value=None, status="ok"):
        return {"method": method, "prompt_id": prompt, "seed": 0, "status": status,
                "metrics": None if value is None else {"clip_score": value}}

    records = [rec("c0", "easy1", 30.0), rec("c0", "easy2", 28.0), rec("c0", "hard1", 21.0), rec("c0", "hard2", 20.0),
               rec("c1", "easy1", 31.0), rec("c1", "easy2", 29.0), rec("c1", "hard1", status="failed"),
               rec("c1", "hard2", status="failed"), rec("c1", "single", status="not_applicable"),
               rec("c0", "single", status="not_applicable"), rec("other", "easy1", 5.0)]
    scores = rung_scores(records, ["c0", "c1"], "clip_score")
    assert scores["c0"] == {"mean": 24.75, "images": 4, "failed": 0}
    assert scores["c1"] == {"mean": (31 + 29 + 0 + 0) / 4, "images": 4, "failed": 2}
    assert rung_scores([rec("c1", "a", status="failed")], ["c1"], "oracle_success")["c1"]["mean"] == 0.0
    # everyone else right: a failed image still counts as wrong (the rung's lowest score was 1.0)
    oracle = [{**rec("c0", "a"), "metrics": {"oracle_success": 1.0}}, {**rec("c1", "a"), "metrics": {"oracle_success": 1.0}},
              rec("c1", "b", status="failed"), {**rec("c0", "b"), "metrics": {"oracle_success": 1.0}}]
    assert rung_scores(oracle, ["c0", "c1"], "oracle_success") == {
        "c0": {"mean": 1.0, "images": 2, "failed": 0}, "c1": {"mean": 0.5, "images": 2, "failed": 1}}
    # a cosine below 0: failures count as the lowest score
    cos = [{**rec("c0", "a"), "metrics": {"min_object_similarity": -0.2}}, rec("c1", "a", status="failed")]
    assert rung_scores(cos, ["c0", "c1"], "min_object_similarity")["c1"]["mean"] == -0.2
    row = search_rows({"search": [{"candidate": 1, "label": "x", "rung": 1, "images": 4, "failed": 2, "mean": 25.0,
                                   "rung_means": [0.5, 25.0], "status": "stopped after rung 1"}]})[1][0]
    assert row[3] == "4 (2 failed, counted as 0 or the rung's lowest score)" and row[5] == "0.500 / 25.000"


def test_tune_report_names_failed_test_images(tmp_path):
    from types import SimpleNamespace

    from contrastive_diffusers.eval.tune_report import write_tune_report

    config = SimpleNamespace(output_dir=tmp_path, method="conform", model="embedded", metric="oracle_success",
                             steps=2, seeds=[0], budget=18)
    records = [{"method": "conform:tuned", "prompt_id": "p", "seed": 0, "status": "failed", "error": "NaN image"},
               {"method": "none", "prompt_id": "p", "seed": 0, "status": "ok", "metrics": {"oracle_success": 1.0}}]
    paths = write_tune_report(config, {"search": []}, records)
    expected = "Failed test images, left out of the tables below (their errors: confirm/summary.md): conform:tuned 1."
    assert expected in paths["markdown"].read_text() and expected in paths["html"].read_text()


# ============================================================================ errors


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="Unknown tuning metric 'sharpness'"):
        TuneConfig(tmp_path, "conform", metric="sharpness")
    with pytest.raises(ValueError, match="tiny-sd1.*cannot have it"):
        TuneConfig(tmp_path, "conform", model="tiny-sd1", metric="oracle_success")
    with pytest.raises(ValueError, match="Unknown guidance method"):
        TuneConfig(tmp_path, "nothing")
    with pytest.raises(ValueError, match="too small for a test split.*--budget 18"):
        run_tuning(TuneConfig(tmp_path / "small", "attend_and_excite", budget=10, steps=1, progress=False))
    singles = [PromptItem(f"s{i}", f"a {c} cat", "single", [[c, "cat"]]) for i, c in enumerate(["red", "blue", "green", "white"])]
    with pytest.raises(ValueError, match="CONFORM needs at least two token groups"):
        run_tuning(TuneConfig(tmp_path / "one", "conform", model="tiny-sd1", prompt_set=singles, clip_model="tiny-clip",
                              steps=1, progress=False))
    with pytest.raises(ValueError, match=r"train split has no prompt of the categories single \(it holds count, "):
        run_tuning(TuneConfig(tmp_path / "single", "attend_and_excite", categories=["single"], steps=1, progress=False))
    uncategorised = [PromptItem(f"u{i}", f"a red cat and a blue dog number {i}") for i in range(6)]
    with pytest.raises(ValueError, match="has no category 'None'; its prompts have none"):
        split_prompts(TuneConfig(tmp_path, "conform", prompt_set=uncategorised, categories=["None"]))
    # the oracle reads ShapesWorld specs: a prompt set without them would score no image
    pairs = [PromptItem(f"p{i}", f"a red cat and a blue dog {i}", "two", [["red", "cat"], ["blue", "dog"]])
             for i in range(8)]
    with pytest.raises(ValueError, match="oracle_success is the ShapesWorld oracle.*8 prompt.*have none.*--metric"):
        run_tuning(TuneConfig(tmp_path / "nospec", "attend_and_excite", prompt_set=pairs, steps=1, progress=False))
    assert not any((tmp_path / name).exists() for name in ("small", "one", "single", "nospec"))  # nothing written


def test_no_confirm_needs_no_test_prompts(tmp_path, monkeypatch):
    # every prompt the method suits falls in the train split: the search alone still runs
    import contrastive_diffusers.eval.tune as tune

    monkeypatch.setattr(tune, "successive_halving", lambda config, plan, candidates, train: (_ for _ in ()).throw(
        RuntimeError(f"search on {len(train)}")))
    items = [PromptItem(f"p{i}", f"a red cat and a blue dog {i}", "two", [["red", "cat"], ["blue", "dog"]])
             for i in range(8)]
    train, test = split_by_hash(items)
    singles = [PromptItem(f"s{i}", "a red cat", "one", [["red", "cat"]]) for i in range(40)]
    test_ids = {i.id for i in split_by_hash(singles)[1]}
    mixed = [i for i in items if i in train] + [i for i in singles if i.id in test_ids]
    config = dict(model="tiny-sd1", prompt_set=mixed, clip_model="tiny-clip", steps=2, progress=False,
                  metric="clip_score")
    with pytest.raises(ValueError, match="No prompt of the test split suits conform"):
        run_tuning(TuneConfig(tmp_path / "a", "conform", **config))
    with pytest.raises(RuntimeError, match=f"search on {len(train)}"):
        run_tuning(TuneConfig(tmp_path / "b", "conform", confirm=False, **config))


def test_a_folder_whose_run_stopped_before_its_first_image_takes_new_settings(tmp_path):
    out = tmp_path / "t"
    (out / "candidates").mkdir(parents=True)
    (out / "candidates" / "conform-c00.json").write_text("{}")
    (out / "tune.json").write_text(json.dumps({"config": {"clip_model": "a typo"}, "status": "searching"}))
    (out / "search").mkdir()
    (out / "search" / "bench.json").write_text("{}")  # its ledger, written before the first image
    assert tune_check_folder(TuneConfig(out, "conform")) == {}
    assert not (out / "candidates" / "conform-c00.json").exists() and not (out / "search").exists()
    (out / "tune.json").write_text(json.dumps({"config": {"clip_model": "a typo"}}))
    (out / "search").mkdir()
    (out / "search" / "0.png").write_bytes(b"")
    with pytest.raises(ValueError, match="holds a tune run with other settings"):
        tune_check_folder(TuneConfig(out, "conform"))
    for text, message in (("", "cannot be read"), ("[]", "is not a tune run's record"), ('{"config": 5}', "is not a")):
        (out / "tune.json").write_text(text)
        with pytest.raises(ValueError, match=message):
            tune_check_folder(TuneConfig(out, "conform"))


# ============================================================================ runs


@pytest.fixture(scope="module")
def embedded_tune(tmp_path_factory):
    out = tmp_path_factory.mktemp("tune") / "ae"
    config = TuneConfig(out, "attend_and_excite", budget=24, steps=1, progress=False)
    return config, run_tuning(config)


def test_tune_on_the_embedded_model(embedded_tune):
    config, result = embedded_tune
    state = json.loads((config.output_dir / "tune.json").read_text())
    assert state["status"] == "finished" and state["plan"]["rule"] == "successive halving, rate 2"
    # 24 images: 3 arms x 2 test prompts for the confirmation, 18 for the search: 4 x 2 + 2 x 4 = 16,
    # of which 4 x 2 + 2 x 2 = 12 are drawn (the two survivors keep their first two prompts' images)
    settings = state["plan"].pop("settings")  # the candidates searched, which a resume must find again
    assert state["plan"] == {"candidates": 4, "prompts_per_rung": [2, 4], "images": 16, "drawn": 12,
                             "test_prompts": 2, "rule": "successive halving, rate 2"}
    assert settings == [row["settings"] for row in state["search"]] and settings[0] == {}
    drawn = [p for p in (config.output_dir / "search").rglob("*.png") if p.stem.isdigit()]
    assert len(drawn) == 12
    rows = result.search
    assert [r["status"] for r in rows].count("chosen") == 1 and rows[0]["settings"] == {}
    assert sum(r["images"] for r in rows) <= 16  # the plan's images (a row holds its last rung's count)
    # each row's means at every rung it ran, the last one its mean
    assert all(len(r["rung_means"]) == r["rung"] + 1 and r["rung_means"][-1] == r["mean"] for r in rows)
    assert sorted(len(r["rung_means"]) for r in rows) == [1, 1, 2, 2]
    method = load_method(result.method_file)
    assert method.config() == build_candidate("attend_and_excite", result.chosen)[0].config()
    conf = result.confirmation
    assert set(conf["methods"]) == {"none", "attend_and_excite", "attend_and_excite-tuned"}
    assert conf["methods"]["none"]["all"]["n"] == 2 and "attend_and_excite-tuned vs attend_and_excite" in conf["paired"]
    report = (config.output_dir / "report.md").read_text()
    assert "## Search (train split)" in report and "paired by prompt and seed" in report
    page = (config.output_dir / "report.html").read_text()
    assert page.index("<svg") < page.index("<img") < page.index("Search (train split)</h2>")
    assert "(paper defaults)" in page and "(tuned)" in page


def test_tune_resumes_and_refuses_other_settings(embedded_tune):
    config, result = embedded_tune
    images = sorted((config.output_dir / "search").rglob("*.png"))
    stamps = [p.stat().st_mtime_ns for p in images]
    again = run_tuning(config)
    assert again.chosen == result.chosen and again.search == result.search
    assert [p.stat().st_mtime_ns for p in images] == stamps  # nothing made twice
    with pytest.raises(ValueError, match="other settings \\(budget differ\\)"):
        run_tuning(TuneConfig(config.output_dir, "attend_and_excite", budget=30, steps=1, progress=False))


@pytest.mark.parametrize("model", ["tiny-sd1", "tiny-sdxl", "tiny-sd3"])
def test_tune_mechanics_on_tiny_models(tmp_path, model):
    config = TuneConfig(tmp_path / model, "conform", model=model, prompt_set=TINY_PROMPTS, clip_model="tiny-clip",
                        budget=18, steps=1, progress=False)
    assert config.metric == "min_object_similarity"
    result = run_tuning(config)
    assert load_method(result.method_file).name == "conform"
    assert result.confirmation["methods"]["none"]["all"]["n"] >= 2
    from contrastive_diffusers.eval.tune import map_sizes
    import torch

    from contrastive_diffusers.models.loading import load_pipeline

    # the maps besides the default (4x4 at 128 px on both) are a search axis; an MMDiT's are all
    # of the patch grid's size (its blocks are chosen by measurement), so it has none
    others = map_sizes(load_pipeline(model, "cpu", torch.float32, quiet=True), config)
    assert others == {"tiny-sd1": [(2, 2), (8, 8), (16, 16)], "tiny-sdxl": [(8, 8)], "tiny-sd3": []}[model]


def test_tune_guides_sd3_on_its_t5_text(tmp_path):
    """Prompts over CLIP's 75 tokens resolve only on the T5 part of SD3's joint text."""
    tail = " in a garden" * 30
    long = [PromptItem(p.id, p.prompt + tail, p.category, p.token_groups) for p in TINY_PROMPTS]
    settings = dict(model="tiny-sd3", prompt_set=long, clip_model="tiny-clip", budget=18, steps=1, progress=False)
    with pytest.raises(ValueError, match="No prompt of the train split suits conform.*sees at most 75.*--text-sequence t5"):
        run_tuning(TuneConfig(tmp_path / "clip", "conform", **settings))
    with pytest.raises(ValueError, match="text_sequence.*SD3"):
        run_tuning(TuneConfig(tmp_path / "sd1", "conform", **{**settings, "model": "tiny-sd1"}, text_sequence="t5"))
    config = TuneConfig(tmp_path / "t5", "conform", **settings, text_sequence="t5")
    result = run_tuning(config)
    assert config.key()["text_sequence"] == "t5"
    assert "text_sequence" not in TuneConfig(tmp_path, "conform", text_sequence="clip").key()  # older folders resume
    ledger = json.loads((result.output_dir / "search" / "bench.json").read_text())
    assert ledger["fingerprint"]["generation"]["text_sequence"] == "t5"
    assert result.confirmation["methods"]["conform"]["all"]["n"] >= 2
    assert "--text-sequence t5." in (result.output_dir / "report.md").read_text()  # the method file lacks it


# ============================================================================ the output in generate / bench


def test_method_files_in_generate_and_bench(embedded_tune, tmp_path):
    _, result = embedded_tune
    file = str(result.method_file)
    assert list(build_methods(["none", file])) == ["none", "attend_and_excite-tuned"]
    out = tmp_path / "gen"
    assert main(["generate", "a red circle and a blue square", "--method", f"none,{file}", "--steps", "2",
                 "--output-dir", str(out), "--quiet"]) == 0
    settings = json.loads((out / "settings.json").read_text())
    assert settings["methods"]["attend_and_excite-tuned"] == load_method(file).config()
    assert (out / "attend_and_excite-tuned" / "0-0.png").is_file()

    bench = tmp_path / "bench"
    items = [PromptItem("x", "a red circle and a blue square", "two_object", [["red", "circle"], ["blue", "square"]])]
    run_benchmark(BenchConfig(bench, methods=["none", file], prompt_set=items, steps=2, clip_model=None, progress=False))
    assert (bench / "attend_and_excite-tuned" / "x" / "0.png").is_file()
    changed = tmp_path / "attend_and_excite-tuned.json"  # the same name, another configuration
    changed.write_text(json.dumps({"method": "attend_and_excite", "scale_factor": 1.0}))
    with pytest.raises(ValueError, match=r"another configuration \((\w+\.)*scale_factor: \d.* there, 1\.0 now\)"):
        run_benchmark(BenchConfig(bench, methods=[str(changed)], prompt_set=items, steps=2, clip_model=None,
                                  progress=False))


def test_method_file_names(tmp_path):
    reserved = tmp_path / "conform.json"
    reserved.write_text(json.dumps({"method": "conform"}))
    with pytest.raises(ValueError, match="built-in method name.*rename the file"):
        build_methods([str(reserved)])
    with pytest.raises(ValueError, match="No method config file"):
        build_methods([str(tmp_path / "missing.json")])
    assert main(["generate", "a cat", "--method", str(reserved), "--output-dir", str(tmp_path / "g")]) == 2


def test_tune_command(tmp_path, capsys, monkeypatch):
    assert main(["tune", "--method", "conform", "--budget", "5", "--steps", "1", "--quiet",
                 "--output-dir", str(tmp_path / "t")]) == 2
    assert "too small for a test split" in capsys.readouterr().err
    # the map size is no part of the method file: the last line says it
    import contrastive_diffusers.eval.tune as tune
    from contrastive_diffusers.eval.tune import TuneResult

    monkeypatch.setattr(tune, "run_tuning", lambda config: TuneResult(
        config.output_dir, {"attn_res": [16, 16]}, config.output_dir / "conform-tuned.json", (16, 16), [], None,
        {"html": "report.html"}))
    assert main(["tune", "--method", "conform", "--quiet", "--output-dir", str(tmp_path / "u")]) == 0
    assert "conform-tuned.json, with --attn-res 16 16 (report: report.html)" in capsys.readouterr().out
    assert main(["tune", "--method", "conform", "--model", "tiny-sd3", "--text-sequence", "t5", "--quiet",
                 "--output-dir", str(tmp_path / "v")]) == 0
    assert "conform-tuned.json, with --attn-res 16 16 --text-sequence t5 (report" in capsys.readouterr().out


@pytest.mark.slow
def test_evidence_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location("shapes_evidence", REPO / "benchmarks" / "shapes_evidence.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--output-dir", str(tmp_path), "--smoke", "--methods", "attend_and_excite", "conform"]) == 0
    data = json.loads((tmp_path / "evidence.json").read_text())
    assert set(data) == {"n_seeds", "methods", "paired"} and data["n_seeds"] == 1
    assert set(data["methods"]) == {"none", "attend_and_excite", "conform", "attend_and_excite:tuned", "conform:tuned"}
    assert set(data["paired"]) == set(data["methods"]) - {"none"}
    assert set(data["methods"]["none"]) == {"two_object", "relation", "held_out", "single"}
    stat = data["methods"]["none"]["two_object"]
    assert set(stat) == {"mean", "ci_low", "ci_high", "n", "n_prompts"} and stat["n"] == stat["n_prompts"] == 2
    assert set(data["paired"]["conform"]["two_object"]) == {"delta", "ci_low", "ci_high", "n", "n_prompts"}
    assert (tmp_path / "evidence.png").is_file() and (tmp_path / "evidence.md").is_file()
    assert (tmp_path / "evidence-grid.png").is_file()
    # the records file holds every test image; the tables recompute from it without drawing
    lines = (tmp_path / "evidence-records.jsonl").read_text().splitlines()
    head = json.loads(lines[0])
    assert head["arms"] == ["none", "attend_and_excite", "conform", "attend_and_excite-tuned", "conform-tuned"]
    assert len(lines) - 1 == sum(s["n"] for arm in data["methods"].values() for s in arm.values()) + sum(
        json.loads(line)["status"] != "ok" for line in lines[1:])
    (tmp_path / "evidence.json").unlink()
    assert script.main(["--output-dir", str(tmp_path / "nothing-drawn"), "--smoke", "--from-records",
                        "--results", str(tmp_path / "evidence.json")]) == 0
    assert json.loads((tmp_path / "evidence.json").read_text()) == data
    assert not (tmp_path / "nothing-drawn").exists()
    assert script.main(["--output-dir", str(tmp_path), "--smoke", "--methods", "attend_and_excite", "conform"]) == 0


@pytest.mark.parametrize("name", ["evidence", "evidence-mmdit"])
def test_committed_evidence_tables_are_what_their_records_give(name, tmp_path):
    """The README's evidence tables come from the committed records (nothing hand-edited), and
    the committed tuned settings load as method files."""
    results = REPO / "benchmarks" / "results" / "shapesworld"
    spec = importlib.util.spec_from_file_location("shapes_evidence", REPO / "benchmarks" / "shapes_evidence.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    records = results / f"{name}-records.jsonl"
    (tmp_path / records.name).write_bytes(records.read_bytes())
    out = tmp_path / f"{name}.json"
    assert script.main(["--output-dir", str(tmp_path / "unused"), "--from-records", "--results", str(out)]) == 0
    assert json.loads(out.read_text()) == json.loads((results / f"{name}.json").read_text())
    assert out.with_suffix(".md").read_text() == (results / f"{name}.md").read_text()
    tuned = sorted((results / f"{name}-tuned").glob("*-tuned.json"))
    methods = build_methods([str(f) for f in tuned])
    assert len(tuned) == 4 and [m.name for m in methods.values()] == ["attend_and_excite", "conform", "ebama", "syngen"]


def test_defaults_chosen_are_not_drawn_twice_in_the_confirmation(tmp_path, monkeypatch):
    import contrastive_diffusers.eval.tune as tune_module

    real = tune_module.search_space
    monkeypatch.setattr(tune_module, "search_space", lambda *a, **k: real(*a, **k)[:1] * 2)  # the defaults twice
    config = TuneConfig(tmp_path / "ae", "attend_and_excite", budget=18, steps=1, progress=False)
    result = run_tuning(config)
    assert result.chosen == {}
    assert not (config.output_dir / "confirm" / "attend_and_excite-tuned").exists()  # no second draw
    conf = result.confirmation
    tuned, defaults = conf["methods"]["attend_and_excite-tuned"]["all"], conf["methods"]["attend_and_excite"]["all"]
    assert tuned == defaults and tuned["n"] >= 2
    assert conf["paired"]["attend_and_excite-tuned vs attend_and_excite"]["all"]["delta"] == 0.0


def test_a_candidates_last_guided_step_also_ends_refinement():
    # CONFORM refines at steps 0, 10 and 20 of 50; a candidate that stops guiding at a quarter
    # (step 12) must not refine at step 20, and its refinement moves with the number of steps
    method, _ = build_candidate("conform", {"step_size": 20.0, "max_update_step": 0.25, "refinement_iterations": 20})
    at_50 = method.schedule.resolve(50)
    assert at_50.max_update_step == 12 and sorted(at_50.refinement) == [0, 10]
    assert max(i for i in range(50) if at_50.is_active(i)) == 11
    assert sorted(method.schedule.resolve(20).refinement) == [0, 4]  # 0/50 and 10/50 of 20 steps
    # the paper defaults keep the paper's own refinement, targets included
    defaults, _ = build_candidate("attend_and_excite", {})
    ae, _ = build_candidate("attend_and_excite", {"max_update_step": 0.5})
    assert ae.schedule.resolve(50).refinement == defaults.schedule.refinement


def test_too_few_test_prompts_say_so_not_raise_the_budget(tmp_path):
    from contrastive_diffusers.eval.tune import _budgets

    with pytest.raises(ValueError, match="Only 1 test prompt.*suit conform.*--no-confirm"):
        _budgets(TuneConfig(tmp_path, "conform", budget=10000), 1)


def test_a_shapes_subset_is_tuned_on_the_whole_world_splits_with_a_warning(tmp_path):
    from contrastive_diffusers.shapes import shapes_prompts

    with pytest.warns(UserWarning, match="whole train split"):
        train, test = split_prompts(TuneConfig(tmp_path, "conform", prompt_set=shapes_prompts("test")[:5]))
    assert len(test) > 5


def test_a_resumed_search_that_ranks_another_first_keeps_the_confirmed_choice(tmp_path, monkeypatch):
    import contrastive_diffusers.eval.tune as tune_module

    config = TuneConfig(tmp_path / "ae", "attend_and_excite", budget=18, steps=1, progress=False)
    first = run_tuning(config)
    saved = first.method_file.read_text()
    real = tune_module.successive_halving

    def reordered(*args, **kwargs):  # as if images redrawn after failures changed the ranking
        best, rows = real(*args, **kwargs)
        other = next(i for i, row in enumerate(rows) if i != best)
        rows[best]["status"], rows[other]["status"] = "stopped after rung 0", "chosen"
        return other, rows

    monkeypatch.setattr(tune_module, "successive_halving", reordered)
    with pytest.warns(UserWarning, match="earlier choice is kept"):
        again = run_tuning(config)
    assert again.chosen == first.chosen and again.method_file.read_text() == saved
    statuses = [row["status"] for row in again.search]
    assert statuses.count("chosen") == 1 and any("earlier choice kept" in s for s in statuses)
    assert again.confirmation == first.confirmation


def test_the_resume_guard_recognises_a_map_size_choice_read_back_from_json(tmp_path, monkeypatch):
    # tune.json holds attn_res as a list, the candidates as a tuple: the earlier choice must
    # still be found among them, not silently replaced by the resumed ranking, also after a
    # resume that was killed in its search
    import contrastive_diffusers.eval.tune as tune_module

    real_space, real_halving = tune_module.search_space, tune_module.successive_halving
    monkeypatch.setattr(tune_module, "search_space",
                        lambda name, sizes, **k: [{}, {"attn_res": tuple(sizes[0])}, *real_space(name, sizes, **k)[1:]])

    def pick(index):
        def halving(config, plan, candidates, train):
            best, rows = real_halving(config, plan, candidates, train)
            for i, row in enumerate(rows):
                row["status"] = "chosen" if i == index else "stopped after rung 0"
            return index, rows
        return halving

    # the guard acts on the search's choice: no confirmation needed
    config = TuneConfig(tmp_path / "ae", "attend_and_excite", budget=4, steps=1, progress=False, confirm=False)
    monkeypatch.setattr(tune_module, "successive_halving", pick(1))
    first = run_tuning(config)
    assert "attn_res" in first.chosen

    def killed(*args):
        raise KeyboardInterrupt

    # a resume killed during its search: the next one still knows the first choice
    monkeypatch.setattr(tune_module, "successive_halving", killed)
    with pytest.raises(KeyboardInterrupt):
        run_tuning(config)
    monkeypatch.setattr(tune_module, "successive_halving", pick(0))
    with pytest.warns(UserWarning, match="earlier choice is kept"):
        again = run_tuning(config)
    assert list(again.chosen["attn_res"]) == list(first.chosen["attn_res"])
