"""benchmarks/gpu_suite.py: the configurations the GPU run must cover, its budget, time
limits, resuming, the tables, and (slow) a smoke run through the same code paths on the CPU."""

import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_suite.py"


@pytest.fixture(scope="module")
def suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_suite"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_suite", None)


def test_the_configurations_cover_the_issue(suite):
    keys = {c.key for c in suite.CONFIGS}
    sd15 = {"none", "diffusers_attend_and_excite", "attend_and_excite", "conform", "ebama", "syngen"}
    assert {f"sd15/{m}" for m in sd15} <= keys
    assert {f"sdxl/{m}" for m in sd15 - {"diffusers_attend_and_excite"}} <= keys
    training = {"textual_inversion", "reversion", "mcpl", "denoise", "contrastive"}
    assert {f"training/{m}{c}" for m in training for c in ("", "+checkpointing")} <= keys
    ours = {"none", "attend_and_excite", "conform", "ebama", "syngen"}
    assert {f"{g}/{m}" for g in ("sd3", "flux") for m in ours} <= keys
    assert suite.FULL.sd15 == ("sd15", 512, 50) and suite.FULL.sdxl == ("sdxl", 1024, 50)
    assert suite.FULL.sd3[:2] == ("sd3", 1024) and suite.FULL.flux[:2] == ("flux", 1024)
    assert suite.FULL.mmdit_dtype == "bfloat16" and suite.FULL.mmdit_full_size
    assert suite.FULL.training[:2] == ("sd15", 512) and suite.FULL.mixed_precision == "fp16"
    assert suite.FULL.dtype == "float16"


def test_the_estimate_fits_eight_minutes_with_a_margin(suite):
    total = suite.estimated_total_s()
    assert total == pytest.approx(sum(suite.BUILD_ESTIMATE_S.values()) + sum(c.estimate_s for c in suite.CONFIGS))
    unet = [c for c in suite.CONFIGS if c.group not in suite.MMDIT_GROUPS]
    assert suite.estimated_total_s(unet) <= 0.8 * 480  # a fifth of the budget left for estimates that are off
    # The SD3 and Flux rows (ten processes, mostly start-up) come last and use most of the rest:
    # if the estimates are short, they are what the budget defers to a second call.
    assert [c.group for c in suite.CONFIGS[-10:]] == ["sd3"] * 5 + ["flux"] * 5
    assert total <= 480
    assert suite.DEFAULT_BUDGET_S == 480


def test_a_process_over_its_limit_is_killed_and_reported(suite):
    start = time.perf_counter()
    status, _, _, seconds = suite.run_process([sys.executable, "-c", "import time; time.sleep(30)"], 0.5)
    assert status == "timeout" and seconds < 10 and time.perf_counter() - start < 10
    status, out, _, _ = suite.run_process([sys.executable, "-c", "print('{\"x\": 1}')"], 30)
    assert status == "ok" and json.loads(out) == {"x": 1}
    assert suite.run_process([sys.executable, "-c", "raise SystemExit(3)"], 30)[0] == "failed"


def _fake_rows(suite, calls, fail=()):
    """Replace the processes by rows made up here: seconds and memory per configuration."""

    def prepare(self, config):
        calls.append(config.key)
        if config.group == "training":
            row = {"step_time_s": 2.0 if config.name == "mcpl" else 1.0, "step_times_s": [1.0],
                   "peak_memory_mb": 2048.0 if config.checkpointing else 4096.0}
        else:
            row = {"seconds": {"none": 2.0, "diffusers_attend_and_excite": 8.0}.get(config.name, 4.0),
                   "memory_before": 2**30, "memory_peak": (3 if config.name == "diffusers_attend_and_excite" else 2)
                   * 2**30, "nan": False, "vae_decode_dtype": "float32", "cfg_forwards": 51}
            if config.name == "conform":
                row.update(updates=6, refinement_iterations=4, skipped_nonfinite=0)
        code = "raise SystemExit(1)" if config.key in fail else "pass"
        return [sys.executable, "-c", code], None, lambda out: row

    return prepare


def test_rows_are_appended_and_a_second_run_resumes(suite, tmp_path, monkeypatch):
    calls = []
    only = ["sd15/none", "sd15/diffusers_attend_and_excite", "sd15/attend_and_excite", "training/textual_inversion",
            "training/mcpl", "training/textual_inversion+checkpointing", "training/mcpl+checkpointing", "flux/none",
            "flux/conform"]
    monkeypatch.setattr(suite.Suite, "prepare", _fake_rows(suite, calls, fail={"sd15/attend_and_excite"}))
    run = suite.Suite(suite.SMOKE, tmp_path / "out", tmp_path / "work", 100, 3, 30, only)
    report = run.run()
    assert calls == only
    lines = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    assert len(lines) == len(only)
    rows = {r["key"]: r for r in report["sd15"] + report["flux"] + report["training"]}
    assert rows["sd15/diffusers_attend_and_excite"]["x_plain"] == pytest.approx(4.0)
    assert rows["sd15/diffusers_attend_and_excite"]["extra_gib"] == pytest.approx(2.0)
    assert rows["sd15/attend_and_excite"]["status"] == "failed"
    assert rows["flux/conform"]["s_per_pass"] == pytest.approx((4.0 - 2.0) / 10)  # 6 updates + 4 refinement
    assert rows["training/mcpl+checkpointing"]["x_baseline"] == pytest.approx(2.0)
    assert rows["training/mcpl+checkpointing"]["x_peak_no_checkpointing"] == pytest.approx(0.5)
    assert report["mcpl_goal"]["x_ti_with_checkpointing"] == pytest.approx(2.0)
    assert report["memory_headline"]["diffusers_ae_sd15_peak_gib"] == pytest.approx(3.0)
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| diffusers_attend_and_excite | sdpa | 8.00 | 4.00 | 1.00 |" in table
    assert "| conform | sdpa | 4.00 | 2.00 | - | 10 | 0.200 | 2.00 | 1.00 | no | ok |" in table
    assert "## flux (full depth, reduced width, tiny encoders), 64 px, 2 steps, float32, A&E's and CONFORM's " \
           "refinement capped at 4" in table and "## tiny-sdxl" not in table  # no rows, no table
    assert "| MCPL | yes | sdpa | 2.000 | 2.00 (textual_inversion) |" in table

    # the README's summary of the same rows: ok rows in one table, what did not run named
    block = suite.readme_block(report)
    assert "| flux (full depth, reduced width, tiny encoders), 64 px, 2 steps, float32, A&E's and CONFORM's " \
           "refinement capped at 4 iterations (papers: 20) | conform | 4.00 | 2.00 | 2.00 | no |" in block
    assert "Not measured in this run: sd15/attend_and_excite (failed)." in block
    assert "MCPL with gradient checkpointing: 2.00x textual inversion's step time" in block

    calls.clear()  # the same command again: only the failed configuration runs
    monkeypatch.setattr(suite.Suite, "prepare", _fake_rows(suite, calls))
    suite.Suite(suite.SMOKE, tmp_path / "out", tmp_path / "work", 100, 3, 30, only).run()
    assert calls == ["sd15/attend_and_excite"]
    final = json.loads((tmp_path / "out" / "results.json").read_text())
    assert all(r["status"] == "ok" for r in final["rows"])


def test_configurations_over_the_budget_are_deferred(suite, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(suite.Suite, "prepare", _fake_rows(suite, calls))
    report = suite.Suite(suite.FULL, tmp_path / "out", tmp_path / "work", 0, 3, 30, ["sd15/none", "sdxl/none"]).run()
    assert calls == []  # deferred before anything is built
    assert [r["status"] for r in report["rows"]] == ["deferred", "deferred"]
    assert "run the command again" in report["rows"][0]["reason"]


@pytest.mark.slow
def test_a_failed_model_build_fails_its_rows_once(suite, tmp_path, monkeypatch):
    """The model is built in its own process; when that fails, every configuration on it is a
    failed row with the build's error, the build is not tried again, and the run goes on."""
    import dataclasses

    commands = []
    real_run_process = suite.run_process

    def counting_run_process(cmd, *args, **kwargs):
        commands.append(cmd)
        return real_run_process(cmd, *args, **kwargs)

    monkeypatch.setattr(suite, "run_process", counting_run_process)
    broken = dataclasses.replace(suite.SMOKE, device="no-such-device")
    report = suite.Suite(broken, tmp_path / "out", tmp_path / "work", 100, 3, 30,
                         ["sd15/none", "sd15/ebama"]).run()
    assert [r["status"] for r in report["rows"]] == ["failed", "failed"]
    assert all("building the tiny model: failed" in r["error"] for r in report["rows"])
    assert not (tmp_path / "work" / "models" / "tiny-float32").exists()
    assert len(commands) == 1 and "--save-model" in commands[0]  # one build, no configuration started


def test_unknown_configurations_are_refused(suite, tmp_path):
    with pytest.raises(SystemExit):
        suite.main(["--output-dir", str(tmp_path), "--smoke", "--only", "sd15/nonsense"])


def test_ae_comparison_against_hand_made_images(suite, tmp_path):
    theirs = np.zeros((1, 4, 4, 3), dtype=np.float32)
    ours = theirs.copy()
    ours[0, 0, 0, 0] = 0.05  # max 0.05, mean 0.05 / 48
    plain = np.full_like(theirs, 0.5)
    explicit = plain.copy()
    explicit[0, 1, 1, 1] = 0.501
    for name, images in [("attend_and_excite.npy", ours), ("diffusers_attend_and_excite.npy", theirs),
                         ("none.npy", plain), ("none-explicit.npy", explicit)]:
        np.save(tmp_path / name, images)
    result = suite.compare_ae(tmp_path)
    assert result["max_abs"] == pytest.approx(0.05) and result["mean_abs"] == pytest.approx(0.05 / 48)
    assert result["equal_within_tolerance"] is True
    assert result["guidance_effect_mean_abs"] == pytest.approx(0.5)
    assert result["plain_sdpa_vs_explicit_max_abs"] == pytest.approx(0.001, abs=1e-6)
    ours[0, 1] = 0.5  # mean 0.5 * 12 / 48 > 0.01
    np.save(tmp_path / "attend_and_excite.npy", ours)
    assert suite.compare_ae(tmp_path)["equal_within_tolerance"] is False


@pytest.mark.slow
def test_smoke_run_on_the_cpu(suite, tmp_path):
    """Tiny models, each configuration in its own process, through the GPU run's code paths:
    diffusers' A&E and ours (same images), SDXL guidance, an MCPL step with gradient
    checkpointing, and guided Flux (full depth, reduced width: the MMDiT worker); then the same
    command again resumes without running anything. (Plain rows run through the same workers;
    each process costs ~15 s of imports on 2 cores, so they are left to the GPU run.)"""
    only = ("sd15/diffusers_attend_and_excite,sd15/attend_and_excite,sdxl/syngen,"
            "training/mcpl+checkpointing,flux/conform")
    argv = ["--smoke", "--output-dir", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work"), "--only", only]
    assert suite.main(argv) == 0
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["status"] for r in report["rows"]] == ["ok"] * 5, report["rows"]
    assert report["ae_vs_diffusers"]["equal_within_tolerance"] and report["ae_vs_diffusers"]["max_abs"] < 1e-4
    sdxl = report["sdxl"][0]
    assert sdxl["nan"] is False and sdxl["passes"] >= 1 and sdxl["vae_decode_dtype"] == "float32"
    assert report["training"][0]["step_time_s"] > 0 and report["training"][0]["attention"] == "sdpa"
    assert report["environment"]["attention_non_recording"] == "sdpa"
    flux = {r["method"]: r for r in report["flux"]}
    assert 1 <= flux["conform"]["passes"] <= 1 + 4  # step 0 of 2: one update, refinement capped at 4
    assert flux["conform"]["nan"] is False
    assert report["rows"][-1]["settings"]["refinement_iterations"] == 4
    lines = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    assert suite.main(argv) == 0
    # nothing ran again: a rerun row would carry its own timings and memory
    assert (tmp_path / "out" / "results.jsonl").read_text().splitlines() == lines


def test_the_readme_block_is_rewritten_between_its_markers(suite, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nabove\n{suite.README_START}\nold text\n{suite.README_END}\nbelow\n")
    out = tmp_path / "out"
    assert suite.main(["--output-dir", str(out), "--update-readme", str(readme)]) == 0  # no results: pending
    assert readme.read_text() == (f"# x\n\nabove\n{suite.README_START}\n{suite.PENDING}\n{suite.README_END}\n"
                                  "below\n")
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"profile": "smoke"}))
    with pytest.raises(SystemExit):  # a smoke run never stands for the GPU figures
        suite.main(["--output-dir", str(out), "--update-readme", str(readme)])
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="marker lines"):
        suite.update_readme(readme, "text")


def test_the_repository_readme_shows_the_committed_gpu_results(suite):
    """README.md's GPU block is what ``--update-readme`` writes from benchmarks/results/gpu."""
    root = SCRIPT.parents[1]
    results = root / "benchmarks" / "results" / "gpu" / "results.json"
    block = suite.readme_block(json.loads(results.read_text()) if results.exists() else None)
    assert f"{suite.README_START}\n{block}\n{suite.README_END}" in (root / "README.md").read_text()
