"""The benchmark runner end to end on the tiny offline SD 1.x pipeline and a tiny random CLIP.

Random weights draw noise, so these tests check the machinery: the folder layout, that the
metrics are the scorer's own numbers, resuming, failures recorded, the reports. Runs are
2 steps at 64 px.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from contrastive_diffusers.cli import main
from contrastive_diffusers.eval import ClipScorer, PromptItem
from contrastive_diffusers.eval.bench import BenchConfig, run_benchmark
from contrastive_diffusers.eval.judges import Judge, judge_table
from contrastive_diffusers.eval.judges.geneval import GenEvalJudge

PROMPTS = [
    {"id": "car-bench", "prompt": "a red car and a blue bench", "token_groups": [["red", "car"], ["blue", "bench"]]},
    {"id": "cat-dog", "prompt": "a cat and a dog", "token_groups": [["cat"], ["dog"]]},
    {"id": "apple", "prompt": "a green apple with a bowl"},  # groups found by the parser
]
METHODS = ["none", "conform"]
SEEDS = [0, 1]
FAST = dict(model="tiny-sd1", steps=2, height=64, width=64, progress=False)
REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("single_thread")


def _write_prompts(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def clip_dir(tiny_clip_dir):
    return tiny_clip_dir


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory, clip_dir):
    """2 methods x 3 prompts x 2 seeds, then the same call again."""
    root = tmp_path_factory.mktemp("bench")
    config = BenchConfig(
        output_dir=root / "run",
        methods=METHODS,
        prompt_set=str(_write_prompts(root / "prompts.jsonl", PROMPTS)),
        seeds=SEEDS,
        clip_model=str(clip_dir),
        **FAST,
    )
    first = run_benchmark(config)
    mtimes = {p: p.stat().st_mtime_ns for p in config.output_dir.rglob("*.png")}
    metrics_text = (config.output_dir / "metrics.jsonl").read_text()
    second = run_benchmark(config)
    return config, first, second, mtimes, metrics_text


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_layout_records_and_reports(bench_run):
    config, first, _, _, _ = bench_run
    run = config.output_dir
    assert first.generated == 12 and first.scored == 12 and first.failed == 0
    for method in METHODS:
        for row in PROMPTS:
            for seed in SEEDS:
                image = run / method / row["id"] / f"{seed}.png"
                assert Image.open(image).size == (64, 64)
                record = json.loads((run / method / row["id"] / f"{seed}.json").read_text())
                assert record["status"] == "ok" and record["image"] == f"{method}/{row['id']}/{seed}.png"
                has_heatmap = (run / method / row["id"] / f"{seed}-attention.png").is_file()
                assert has_heatmap == (method == "conform")
    rows = _rows(run)
    assert [(r["method"], r["prompt_id"], r["seed"]) for r in rows] == [
        (m, p["id"], s) for p in PROMPTS for s in SEEDS for m in METHODS
    ]
    assert json.loads((run / "bench.json").read_text())["status"] == "finished"
    summary = json.loads((run / "summary.json").read_text())
    markdown = (run / "summary.md").read_text()
    html = (run / "report.html").read_text()
    for method in METHODS:
        assert method in markdown
    # Every image and every heatmap embedded; nothing fetched from outside the file.
    # + the overview grid above the tables: 3 prompts at seed 0 x 2 methods.
    assert html.count("<img") == 12 + 6 + 6 and "src=\"http" not in html
    assert summary == first.summary


def test_rerun_generates_and_scores_nothing(bench_run):
    config, _, second, mtimes, metrics_text = bench_run
    assert second.generated == 0 and second.scored == 0
    assert {p: p.stat().st_mtime_ns for p in config.output_dir.rglob("*.png")} == mtimes
    assert (config.output_dir / "metrics.jsonl").read_text() == metrics_text


def test_metrics_are_the_scorers_numbers(bench_run, clip_dir):
    config, *_ = bench_run
    scorer = ClipScorer.from_pretrained(clip_dir, device="cpu")
    rows = {(r["method"], r["prompt_id"], r["seed"]): r for r in _rows(config.output_dir)}
    row = rows[("conform", "car-bench", 1)]
    image = Image.open(config.output_dir / row["image"])
    metrics = row["metrics"]
    assert metrics["clip_score"] == pytest.approx(float(scorer.clip_score(image, row["prompt"])[0]), abs=1e-4)
    sims = scorer.object_similarity(image, row["prompt"])
    assert metrics["full_similarity"] == pytest.approx(float(sims["full"][0]), abs=1e-6)
    assert metrics["min_object_similarity"] == pytest.approx(float(sims["min_object"][0]), abs=1e-6)
    assert row["objects"] == pytest.approx(sims["objects"][0], abs=1e-6)
    assert metrics["quality"] == pytest.approx(float(scorer.antonym_scores(image)[0, 0]), abs=1e-6)
    # Contrast captions: each "correct" when the own prompt wins, accuracy their mean.
    # Contrast captions ("a red bench and a blue car" says what swap_attributes says: not made)
    contrast = row["contrast"]
    assert set(contrast) == {"swap_attributes", "replace_object"}
    assert contrast["swap_attributes"]["caption"] == "a blue car and a red bench"
    own = float(scorer.text_embeddings([row["prompt"]])[0] @ scorer.image_embeddings(image)[0])
    for entry in contrast.values():
        assert entry["similarity"] == pytest.approx(
            float(scorer.text_embeddings([entry["caption"]])[0] @ scorer.image_embeddings(image)[0]), abs=1e-6
        )
        assert entry["correct"] == (own > entry["similarity"])
    assert metrics["binding_accuracy"] == float(contrast["swap_attributes"]["correct"])
    assert metrics["binding_text_score"] == float(contrast["swap_attributes"]["correct"])
    assert metrics["replace_object_score"] == float(contrast["replace_object"]["correct"])
    assert metrics["text_text_similarity"] is None  # no captioner
    # "a cat and a dog": no binding contrast (swapping nouns only paraphrases), presence only
    cat_dog = rows[("none", "cat-dog", 0)]["metrics"]
    assert cat_dog["binding_accuracy"] is None and cat_dog["replace_object_score"] in (0.0, 1.0)


def test_seed_means_the_same_start_for_every_method(bench_run):
    config, *_ = bench_run
    run = config.output_dir

    def pixels(method, seed):
        return np.asarray(Image.open(run / method / "car-bench" / f"{seed}.png"), dtype=np.int16)

    assert np.abs(pixels("none", 0) - pixels("none", 1)).max() > 0  # seeds differ
    assert np.abs(pixels("none", 0) - pixels("conform", 0)).max() > 0  # guidance changed the image


def test_summary_means_match_the_records(bench_run):
    config, first, *_ = bench_run
    rows = _rows(config.output_dir)
    for method in METHODS:
        values = [r["metrics"]["clip_score"] for r in rows if r["method"] == method]
        entry = first.summary["per_method"][method]["metrics"]["clip_score"]
        assert entry["mean"] == pytest.approx(np.mean(values)) and entry["n"] == 6


def test_changed_settings_in_the_same_folder_are_refused(bench_run):
    config, *_ = bench_run
    changed = BenchConfig(**{**config.__dict__, "steps": 3})
    steps = config.steps
    with pytest.raises(ValueError, match=rf"different settings \(generation.num_inference_steps: {steps} there, 3 now"):
        run_benchmark(changed)
    # without contrast captions the binding columns would compare methods scored two ways
    with pytest.raises(ValueError, match=r"different settings \(contrast_captions: True there, False now"):
        run_benchmark(BenchConfig(**{**config.__dict__, "contrast": False}))


def test_a_folder_made_before_a_setting_was_recorded_resumes(tmp_path):
    from contrastive_diffusers.eval.run_folder import Ledger

    old_fingerprint = {"model": "m", "generation": {"num_inference_steps": 2}}  # no contrast_captions
    ledger = Ledger(tmp_path)
    ledger.merge(old_fingerprint, {}, {}, {}, [0])
    ledger.save()
    resumed = Ledger.load(tmp_path)
    resumed.merge({**old_fingerprint, "contrast_captions": False}, {}, {}, {}, [0])  # the same command again
    assert resumed.data["fingerprint"]["contrast_captions"] is False
    with pytest.raises(ValueError, match="contrast_captions: False there, True now"):
        resumed.merge({**old_fingerprint, "contrast_captions": True}, {}, {}, {}, [0])


def test_bad_prompt_is_recorded_not_skipped(tmp_path, capsys):
    rows = [
        {"id": "ok", "prompt": "a cat and a dog", "token_groups": [["cat"], ["dog"]]},
        {"id": "bad", "prompt": "a cat and a dog", "token_groups": [["cat"], ["zebra"]]},
    ]
    prompts = _write_prompts(tmp_path / "p.jsonl", rows)
    args = ["bench", "--prompts", str(prompts), "--model", "tiny-sd1", "--steps", "2", "--height", "64",
            "--width", "64", "--method", "none,conform", "--clip-model", "tiny-clip", "--quiet",
            "--output-dir", str(tmp_path / "run")]
    assert main(args) == 1  # finished, with failures
    record = json.loads((tmp_path / "run" / "conform" / "bad" / "0.json").read_text())
    assert record["status"] == "failed" and "zebra" in record["error"]
    assert json.loads((tmp_path / "run" / "none" / "bad" / "0.json").read_text())["status"] == "ok"
    assert "zebra" in (tmp_path / "run" / "summary.md").read_text()
    assert "zebra" in capsys.readouterr().err


def _nan_decoding(monkeypatch, seeds_to_break):
    """The VAE decodes the images of ``seeds_to_break`` (by batch row) to NaN, as an fp16 overflow would."""
    import diffusers
    from diffusers.models.autoencoders.vae import DecoderOutput

    decode = diffusers.AutoencoderKL.decode

    def nan_decode(self, z, *args, **kwargs):
        out = decode(self, z, *args, **kwargs)
        sample = (out[0] if isinstance(out, tuple) else out.sample).clone()
        sample[list(seeds_to_break)] = float("nan")
        return DecoderOutput(sample=sample) if kwargs.get("return_dict", True) else (sample,)

    monkeypatch.setattr(diffusers.AutoencoderKL, "decode", nan_decode)


def test_an_image_that_decoded_to_nan_is_a_failed_record(tmp_path, clip_dir, monkeypatch):
    # written black, the image would be scored as one the model drew (CLIP binding metrics of 1.0 were seen)
    _nan_decoding(monkeypatch, [1])
    result = run_benchmark(_fast_config(tmp_path, clip_dir, prompt_set=PROMPT_ITEMS[:1], seeds=[0, 1], seed_batch=2))
    by_seed = {r["seed"]: r for r in result.records}
    assert by_seed[0]["status"] == "ok" and by_seed[0]["metrics"]
    assert by_seed[1]["status"] == "failed" and "NaN or infinite pixels" in by_seed[1]["error"]
    assert not by_seed[1].get("metrics") and (tmp_path / "run" / by_seed[1]["image"]).is_file()


def test_unreadable_image_in_a_score_only_run(bench_run, tmp_path, capsys, clip_dir):
    import shutil

    config, *_ = bench_run
    run = tmp_path / "copy"
    shutil.copytree(config.output_dir, run)
    broken = run / "none" / "cat-dog" / "1.png"
    broken.write_bytes(b"not a png")
    code = main(["score", str(run), "--clip-model", str(clip_dir), "--force", "--quiet"])
    assert code == 1
    record = json.loads((run / "none" / "cat-dog" / "1.json").read_text())
    assert record["status"] == "failed" and "cannot read image" in record["error"] and str(broken) in record["error"]
    assert "cannot read image" in (run / "summary.md").read_text()
    assert sum(r["status"] == "ok" for r in _rows(run)) == 11
    assert "cannot read image" in capsys.readouterr().err


def test_score_replaces_contrast_captions_made_by_an_older_version(bench_run, tmp_path, clip_dir):
    import shutil

    config, *_ = bench_run
    run = tmp_path / "copy"
    shutil.copytree(config.output_dir, run)
    path = run / "none" / "car-bench" / "0.json"
    record = json.loads(path.read_text())
    made_now = record["contrast_captions"]
    record["contrast_captions"] = {**made_now, "swap_attributes": "an blue car and an red bench"}
    path.write_text(json.dumps(record))
    assert main(["score", str(run), "--clip-model", str(clip_dir), "--quiet"]) == 0
    rescored = json.loads(path.read_text())
    assert rescored["contrast_captions"] == made_now and rescored["metrics"] is not None
    assert rescored["metrics"]["binding_accuracy"] == record["metrics"]["binding_accuracy"]  # scored with these


def test_score_skips_a_damaged_record_and_checks_judge_rows_first(bench_run, tmp_path, capsys, clip_dir):
    import shutil

    from contrastive_diffusers.eval.bench import score_run
    from contrastive_diffusers.eval.run_folder import BenchInputError

    config, *_ = bench_run
    run = tmp_path / "copy"
    shutil.copytree(config.output_dir, run)
    (run / "none" / "cat-dog" / "1.json").write_text("[]")  # valid JSON, no record
    assert main(["score", str(run), "--clip-model", str(clip_dir), "--quiet"]) == 1  # reported as failed, not a crash
    assert "unreadable record none/cat-dog/1.json" in (run / "summary.md").read_text()
    path = run / "none" / "car-bench" / "0.json"
    record = json.loads(path.read_text())
    record["judge_metadata"] = {"tag": "position", "include": [{"class": "car", "count": "one"}]}
    path.write_text(json.dumps(record))
    before = path.read_text()
    with pytest.raises(BenchInputError, match=r"prompt 'car-bench' \(.*\): GenEval include row .* needs a string "
                                              r"'class' and an integer 'count'.*run bench on this folder"):
        score_run(run, clip_model=str(clip_dir), judges=[_GenEvalRows()], progress=False)
    assert path.read_text() == before  # refused before scoring anything


class _GenEvalRows(Judge):
    """GenEval's row check without its models (a judge that scores nothing)."""

    name, metric_names = "geneval-rows", ("x",)
    input_problem = GenEvalJudge.input_problem

    def score(self, images, records):
        return [self.empty_result("rows only") for _ in images]

    def summarize(self, records):
        return judge_table("rows", ["method"], [])


def test_baseline_is_a_report_setting(bench_run, tmp_path, capsys, clip_dir):
    import shutil

    config, first, *_ = bench_run
    run = tmp_path / "copy"
    shutil.copytree(config.output_dir, run)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*.json") if p.parent != run}
    assert main(["score", str(run), "--clip-model", str(clip_dir), "--quiet", "--baseline", "conform"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["baseline"] == "conform" and list(summary["deltas"]) == ["none"]
    flipped = summary["deltas"]["none"]["clip_score"]
    original = first.summary["deltas"]["conform"]["clip_score"]
    assert flipped["mean"] == pytest.approx(-original["mean"], abs=1e-9)
    assert (flipped["wins"], flipped["losses"]) == (original["losses"], original["wins"])
    assert "Difference from conform" in (run / "summary.md").read_text()
    assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing re-scored
    assert main(["score", str(run), "--quiet"]) == 0  # the folder's own CLIP model: nothing re-scored either
    assert {p: p.stat().st_mtime_ns for p in before} == before
    # A method the folder does not have: refused before any model loads, naming the ones it has.
    assert main(["score", str(run), "--clip-model", "no/such-clip", "--baseline", "ebama"]) == 2
    assert "--baseline 'ebama' is not a method of this run" in capsys.readouterr().err
    assert main(["score", str(run), "--clip-model", "no/such-clip", "--baseline", "AE"]) == 2
    assert "--baseline 'AE' is not a method of this run" in capsys.readouterr().err
    assert main(["bench", "--output-dir", str(run), "--model", "tiny-sd1", "--method", "none",
                 "--baseline", "syngen"]) == 2
    assert "none, conform" in capsys.readouterr().err


@pytest.mark.parametrize(
    "prompts, message",
    [("no_such_set", "Unknown prompt set 'no_such_set'"), ("missing/prompts.txt", "missing/prompts.txt")],
)
def test_bad_prompt_set_exits_2(prompts, message, tmp_path, capsys):
    code = main(["bench", "--prompts", prompts, "--clip-model", "none", "--output-dir", str(tmp_path / "r"), "--quiet"])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_malformed_prompt_file_names_the_line(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a cat"}\n{"prompt": \n')
    assert main(["bench", "--prompts", str(path), "--clip-model", "none", "--quiet",
                 "--output-dir", str(tmp_path / "r")]) == 2
    assert "line 2" in capsys.readouterr().err


def test_score_needs_a_bench_folder(tmp_path, capsys):
    assert main(["score", str(tmp_path), "--clip-model", "tiny-clip"]) == 2
    assert "not a benchmark folder" in capsys.readouterr().err


def test_bench_help_names_the_default_clip_model(capsys):
    from contrastive_diffusers.eval import BenchConfig
    from contrastive_diffusers.models.names import DEFAULT_CLIP_MODEL

    assert main(["bench", "--help"]) == 0
    assert DEFAULT_CLIP_MODEL in capsys.readouterr().out
    assert BenchConfig(output_dir="x", model="some/model").clip_model == DEFAULT_CLIP_MODEL


def _bench_command(prompts: Path, out: Path, *extra) -> list[str]:
    return ["bench", "--prompts", str(prompts), "--model", "tiny-sd1", "--steps", "2", "--height", "64",
            "--width", "64", "--method", "none,conform", "--seeds", "0", "1", "--clip-model", "tiny-clip",
            "--quiet", "--output-dir", str(out), *extra]


@pytest.mark.slow
def test_killed_run_loses_nothing_and_resumes(tmp_path):
    prompts = _write_prompts(tmp_path / "p.jsonl", PROMPTS)
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = [sys.executable, "-m", "contrastive_diffusers", *_bench_command(prompts, out, "--steps", "8")]
    process = subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list(out.rglob("*.json"))) < 4:  # bench.json + 3 image records
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    records = [p for p in out.rglob("*.json") if p.name != "bench.json"]
    finished = 0
    for path in records:  # every file that exists is whole
        record = json.loads(path.read_text())
        Image.open(out / record["image"]).load()
        finished += 1
    assert 3 <= finished < 12
    assert not (out / "metrics.jsonl").exists()
    kept = {}  # every file of a finished record must survive the resume untouched
    for path in records:
        record = json.loads(path.read_text())
        for name in (record["image"], record["attention"]):
            if name:
                kept[out / name] = (out / name).stat().st_mtime_ns

    result = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = _rows(out)
    assert len(rows) == 12 and all(r["status"] == "ok" for r in rows)
    assert {path: path.stat().st_mtime_ns for path in kept} == kept
    assert not list(out.rglob("*.tmp"))  # the killed run's temporary file was cleaned up


@pytest.mark.slow
def test_two_processes_give_the_results_of_one(tmp_path, bench_run):
    config, *_ = bench_run
    prompts = _write_prompts(tmp_path / "p.jsonl", PROMPTS)
    one = tmp_path / "one"
    two = tmp_path / "two"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    single = [sys.executable, "-m", "contrastive_diffusers", *_bench_command(prompts, one)]
    assert subprocess.run(single, env=env, cwd=REPO, capture_output=True, timeout=300).returncode == 0
    # torchrun, as on a multi-GPU machine (accelerate launch --cpu would need mpirun for two processes)
    # --standalone: a free port, not the default 29500 another test run on the machine may hold
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
              "-m", "contrastive_diffusers", *_bench_command(prompts, two)]
    result = subprocess.run(launch, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows_one, rows_two = _rows(one), _rows(two)
    assert {r["process"] for r in rows_one} == {"0/1"}
    # each process made its share: every other (prompt, seed) pair, both methods of a pair together
    pairs = list(dict.fromkeys((r["prompt_id"], r["seed"]) for r in rows_two))
    assert [r["process"] for r in rows_two] == [f"{pairs.index((r['prompt_id'], r['seed'])) % 2}/2" for r in rows_two]
    assert [(r["method"], r["prompt_id"], r["seed"]) for r in rows_one] == [
        (r["method"], r["prompt_id"], r["seed"]) for r in rows_two
    ]
    for a, b in zip(rows_one, rows_two):
        pixels_a = np.asarray(Image.open(one / a["image"]), dtype=np.int16)
        pixels_b = np.asarray(Image.open(two / b["image"]), dtype=np.int16)
        assert np.array_equal(pixels_a, pixels_b)
        for name, value in a["metrics"].items():
            assert b["metrics"][name] == pytest.approx(value, abs=1e-6) if value is not None else b["metrics"][name] is None


def test_score_with_a_captioner_adds_text_text_similarity(bench_run, tmp_path, clip_dir, tiny_blip_dir):
    import shutil

    config, *_ = bench_run
    run = tmp_path / "copy"
    shutil.copytree(config.output_dir, run)
    # a new captioner re-scores without --force
    code = main(["score", str(run), "--clip-model", str(clip_dir), "--captioner", str(tiny_blip_dir), "--quiet"])
    assert code == 0
    scorer = ClipScorer.from_pretrained(clip_dir, device="cpu")
    rows = _rows(run)
    assert all(r["caption"] and r["metrics"]["text_text_similarity"] is not None for r in rows)
    row = rows[3]
    expected = scorer.text_similarity([row["prompt"]], [row["caption"]], ensemble_a=True)[0]
    assert row["metrics"]["text_text_similarity"] == pytest.approx(float(expected), abs=1e-6)
    assert "text_text_similarity" in (run / "summary.md").read_text()


def _fast_config(root: Path, clip_dir, **changes) -> BenchConfig:
    settings = dict(output_dir=root / "run", methods=["none"], prompt_set=PROMPT_ITEMS[:2], seeds=[0],
                    clip_model=str(clip_dir), **FAST)
    settings.update(changes)
    return BenchConfig(**settings)


PROMPT_ITEMS = [PromptItem(row["id"], row["prompt"], None, row.get("token_groups")) for row in PROMPTS]


def test_runs_add_methods_and_seeds_to_one_folder(tmp_path, clip_dir):
    first = run_benchmark(_fast_config(tmp_path, clip_dir))
    assert first.generated == 2
    second = run_benchmark(_fast_config(tmp_path, clip_dir, methods=["syngen"], seeds=[0, 1]))
    assert second.generated == 2  # syngen at seeds 0 and 1... of "car-bench"; "cat-dog" has no modifier
    methods = [(r["method"], r["prompt_id"], r["seed"], r["status"]) for r in second.records]
    # the report covers the folder: the first run's plain images, with the new method beside them
    assert ("none", "car-bench", 0, "ok") in methods and ("syngen", "car-bench", 1, "ok") in methods
    assert ("syngen", "cat-dog", 0, "not_applicable") in methods  # SynGen needs a modifier: recorded, not skipped
    assert second.failed == 0 and "SynGen binds modifiers" in second.summary["not_applicable"][0]["error"]
    assert ("none", "car-bench", 1) not in [m[:3] for m in methods]  # never asked for: not a failure
    assert second.summary["baseline"] == "none" and "syngen" in second.summary["deltas"]


def test_the_report_names_every_prompt_set_of_the_folder(tmp_path):
    from contrastive_diffusers.eval.bench import _prompt_sets
    from contrastive_diffusers.eval.run_folder import Ledger

    ledger = Ledger(tmp_path)
    ledger.data["runs"] = [{"run_info": {"prompt_set": "shapes:sample"}}, {"run_info": {"prompt_set": "mine.txt"}},
                           {"run_info": {"prompt_set": "shapes:sample"}}]
    assert _prompt_sets(ledger, {"prompt_set": "mine.txt"}) == "shapes:sample, mine.txt"


def test_a_changed_prompt_text_is_refused(tmp_path, clip_dir):
    run_benchmark(_fast_config(tmp_path, clip_dir, prompt_set=PROMPT_ITEMS[:1]))
    changed = [PromptItem("car-bench", "a red car and a green bench", None, [["red", "car"], ["green", "bench"]])]
    with pytest.raises(ValueError, match="prompt id 'car-bench'.*another output folder"):
        run_benchmark(_fast_config(tmp_path, clip_dir, prompt_set=changed))


def test_an_image_guided_at_other_token_positions_is_drawn_again(tmp_path, clip_dir):
    """Same group words, other positions (placement changed between versions): the guided image is stale."""
    config = _fast_config(tmp_path, clip_dir, methods=["none", "conform"], prompt_set=PROMPT_ITEMS[:1])
    first = run_benchmark(config)
    assert first.generated == 2
    guided, plain = (tmp_path / "run" / m / "car-bench" / "0.json" for m in ("conform", "none"))
    record = json.loads(guided.read_text())
    assert record["token_groups"] == [["red", "car"], ["blue", "bench"]]
    assert record["token_positions"] == [[[2], [3]], [[6], [7]]]  # "a red car and a blue bench"
    record["token_positions"] = [[[2], [3]], [[6], [3]]]
    guided.write_text(json.dumps(record))
    unrecorded = json.loads(plain.read_text())  # a plain image from before positions were recorded
    del unrecorded["token_positions"]
    plain.write_text(json.dumps(unrecorded))
    again = run_benchmark(config)
    assert again.generated == 1  # the guided image; the plain one never read the groups
    assert json.loads(guided.read_text())["token_positions"] == [[[2], [3]], [[6], [7]]]
    assert json.loads(plain.read_text())["token_positions"] == [[[2], [3]], [[6], [7]]]
    redrawn = json.loads(guided.read_text())
    del redrawn["token_positions"]  # a guided record from before positions were recorded is kept on its words
    guided.write_text(json.dumps(redrawn))
    assert run_benchmark(config).generated == 0


def test_another_scorer_rescores_and_no_scorer_hides_old_metrics(tmp_path, clip_dir):
    first = run_benchmark(_fast_config(tmp_path, clip_dir))
    assert first.scored == 2
    for path in (tmp_path / "run/none").rglob("*.json"):  # scored before the A&E text clean-up
        record = json.loads(path.read_text())
        record["scorer"].pop("text_protocol")
        path.write_text(json.dumps(record))
    assert run_benchmark(_fast_config(tmp_path, clip_dir)).scored == 2
    other = run_benchmark(_fast_config(tmp_path, clip_dir, clip_model="tiny-clip"))
    assert other.generated == 0 and other.scored == 2  # new scorer: scored again, without --force
    assert all(r["scorer"] == {"clip": "tiny-clip", "captioner": None, "text_protocol": 2} for r in other.records)
    unscored = run_benchmark(_fast_config(tmp_path, clip_dir, clip_model=None))
    assert unscored.scored == 0
    assert all(r["metrics"] is None and r["scored_by"]["clip"] == "tiny-clip" for r in unscored.records)
    assert unscored.summary["metrics"] == []


def test_bad_clip_folder_fails_before_anything_is_written(tmp_path, capsys):
    args = ["bench", "--prompts", "attend_and_excite:animals", "--num-prompts", "1", "--clip-model",
            str(tmp_path / "no-clip"), "--output-dir", str(tmp_path / "run"), "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "CLIP model folder" in err and "does not exist" in err
    assert "tiny-clip (random weights) runs the CLIP metrics for the machinery only, and bench --clip-model none " \
           "skips them" in err  # what works without the hub (score takes no `none`)
    assert not (tmp_path / "run").exists()


def test_several_processes_need_an_output_dir(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["bench", "--clip-model", "none", "--quiet"]) == 2
    assert "--output-dir is required" in capsys.readouterr().err


def test_shapes_world_prompts_are_checked_by_the_oracle(tmp_path, clip_dir):
    from contrastive_diffusers.eval import load_prompt_set
    from contrastive_diffusers.shapes import check

    items = [i for i in load_prompt_set("shapes") if i.category in ("single", "two_object")]
    items = items[:2] + [i for i in items if i.category == "two_object"][:2]
    result = run_benchmark(_fast_config(tmp_path, clip_dir, prompt_set=items, methods=["none", "conform"]))
    for record in result.records:
        if record["status"] != "ok":  # CONFORM on one object: not applicable, listed
            assert record["status"] == "not_applicable" and record["method"] == "conform"
            continue
        expected = check(Image.open(tmp_path / "run" / record["image"]), record["spec"]).success
        assert record["metrics"]["oracle_success"] == float(expected)
        assert record["oracle"]["success"] == expected
    assert sum(r["status"] == "not_applicable" for r in result.records) == 2 and result.failed == 0
    assert result.summary["metrics"][0] == "oracle_success"
    agreement = result.summary["agreement"]
    assert set(agreement) == {"none", "conform", "all methods"} and agreement["all methods"]["n"] == 4
    markdown = (tmp_path / "run" / "summary.md").read_text()
    assert "Agreement of CLIP with the oracle" in markdown and "## Not applicable" in markdown
    # without CLIP the oracle still scores
    oracle_only = run_benchmark(_fast_config(tmp_path, clip_dir, prompt_set=items, methods=["none"], clip_model=None))
    plain = [r for r in oracle_only.records if r["method"] == "none"]
    assert len(plain) == 4 and all(set(r["metrics"]) == {"oracle_success"} for r in plain)
    # the folder's CONFORM images were scored by CLIP earlier: hidden in this CLIP-less report
    assert all(r["metrics"] is None for r in oracle_only.records if r["method"] == "conform")


@pytest.mark.parametrize("spec", ["a red circle", {"objects": [{"color": "red"}]}, {"shapes": []}])
def test_a_prompt_file_spec_that_is_no_caption_spec_is_refused_before_drawing(tmp_path, clip_dir, spec):
    """A JSONL row's "spec" is what the ShapesWorld oracle checks; a malformed one would fail
    only when scoring, after every image is drawn, and again at every resume."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "p", "prompt": "a red circle", "spec": spec}) + "\n")
    with pytest.raises(ValueError, match='Prompt p: its "spec" field is not a ShapesWorld caption spec'):
        run_benchmark(_fast_config(tmp_path, clip_dir, prompt_set=str(prompts)))
    assert not (tmp_path / "run").exists()


def test_an_interrupted_run_says_so_in_its_folder(tmp_path, clip_dir, monkeypatch):
    import contrastive_diffusers.eval.bench as bench

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "generate_stage", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(_fast_config(tmp_path, clip_dir))
    assert json.loads((tmp_path / "run" / "bench.json").read_text())["status"] == "interrupted"


def test_map_settings_the_guided_images_would_refuse_are_refused_before_drawing(tmp_path, clip_dir):
    """A map size no layer has would fail every guided image, one by one, as failed records."""
    with pytest.raises(ValueError, match="No cross-attention layer has 3x3 maps"):
        run_benchmark(_fast_config(tmp_path, clip_dir, methods=["none", "ebama"], attn_res=(3, 3)))
    assert not (tmp_path / "run" / "none").exists()


def test_stale_temporaries_are_cleaned_only_in_bench_folders(tmp_path):
    from contrastive_diffusers.eval.run_folder import remove_stale_temporaries

    other = tmp_path / "someone-elses"
    (other / "deep").mkdir(parents=True)
    (other / "deep" / ".notes.txt.abc123.tmp").write_text("not ours")
    assert remove_stale_temporaries(other) == 0 and (other / "deep" / ".notes.txt.abc123.tmp").exists()
    (other / "bench.json").write_text("{}")
    assert remove_stale_temporaries(other) == 1


def test_contrast_captions_do_not_depend_on_the_prompt_id_length():
    from contrastive_diffusers.eval.bench_setup import contrast_captions_for

    words = [["red", "car"], ["blue", "bench"]]
    short = contrast_captions_for(PromptItem("p", "a red car and a blue bench", None, words), words)
    long = contrast_captions_for(PromptItem("p" * 190, "a red car and a blue bench", None, words), words)
    assert short and long == short and "a blue car and a red bench" in short.values()


def test_the_baseline_is_named_as_the_folder_names_it():
    """--baseline takes the folder's method names in any case, or --method's aliases; an exact
    name wins (a method file named ae.json is the method "ae", not Attend-and-Excite)."""
    from contrastive_diffusers.eval.bench_setup import check_baseline

    assert check_baseline(None, ["none"]) is None
    assert check_baseline("AE", ["none", "attend_and_excite"]) == "attend_and_excite"
    assert check_baseline("CONFORM", ["none", "conform"]) == "conform"
    assert check_baseline("ae", ["none", "ae", "attend_and_excite"]) == "ae"
    with pytest.raises(ValueError, match="--baseline 'ebama' is not a method of this run; .*: none, conform"):
        check_baseline("ebama", ["none", "conform"])
