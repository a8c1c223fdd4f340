"""The ``generate`` command end to end on the tiny offline SD 1.x pipeline.

``main([...])`` runs in-process (no interpreter start-up per test); only ``--version`` goes
through ``python -m contrastive_diffusers``. Runs are 2 steps at 128 px, so the whole file
takes seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contrastive_diffusers import __version__
from contrastive_diffusers.cli import generate, main
from contrastive_diffusers.cli.common import default_output_dir
from contrastive_diffusers.cli.generate import parse_token_groups
from contrastive_diffusers.guidance.tokens import resolve_groups
from contrastive_diffusers.models.tiny import tiny_tokenizer

PROMPT = "a red car and a blue bench"
FAST = ["--model", "tiny-sd1", "--steps", "2", "--height", "128", "--width", "128"]


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """``none,conform`` x seeds 0 1 with automatic token groups."""
    out = tmp_path_factory.mktemp("first")
    args = ["generate", PROMPT, *FAST, "--method", "none,conform", "--seeds", "0", "1", "--output-dir", str(out)]
    code = main([*args, "--quiet"])
    return code, out


def _settings(out):
    return json.loads((out / "settings.json").read_text())


def _pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


def _words(groups_record):
    return [group["words"] for group in groups_record]


# ---------------------------------------------------------------------------- a full run


def test_run_writes_images_heatmaps_and_settings(first_run):
    code, out = first_run
    assert code == 0
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == [
        "conform/0-0-attention.png",
        "conform/0-0.png",
        "conform/0-1-attention.png",
        "conform/0-1.png",
        "none/0-0.png",
        "none/0-1.png",
        "settings.json",
    ]  # no temporary settings file left behind either
    assert Image.open(out / "none/0-0.png").size == (128, 128)
    # The heatmap strip: one tile per group word (red, car, blue, bench); the image is not repeated in it.
    assert Image.open(out / "conform/0-0-attention.png").width == 4 * 128


def test_settings_describe_the_run(first_run):
    _, out = first_run
    s = _settings(out)
    for key in ("argv", "args", "model", "device", "dtype", "versions", "methods", "prompts", "token_groups", "images"):
        assert key in s, key
    assert s["status"] == "finished"
    assert s["model"] == "tiny-sd1" and s["device"] == "cpu" and s["dtype"] == "float32"
    assert set(s["versions"]) == {"contrastive_diffusers", "torch", "diffusers", "transformers"}
    assert s["versions"]["contrastive_diffusers"] == __version__
    assert s["prompts"] == [PROMPT]
    assert s["args"]["method"] == ["none", "conform"] and s["args"]["seeds"] == [0, 1]
    assert s["generation"]["guidance_scale"] == 7.5  # the SD default
    assert s["methods"]["none"] is None
    assert s["methods"]["conform"]["method"] == "conform"
    assert s["methods"]["conform"]["schedule"]["refinement"] == {"0": None, "10": None, "20": None}

    (groups,) = s["token_groups"]
    assert _words(groups) == [["red", "car"], ["blue", "bench"]]
    assert [g["positions"] for g in groups] == [[2, 3], [6, 7]]

    images = s["images"]
    assert [(r["method"], r["seed"]) for r in images] == [("none", 0), ("none", 1), ("conform", 0), ("conform", 1)]
    for record in images:
        assert (out / record["image"]).is_file()
        assert record["seconds"] >= 0
    plain, guided = images[0], images[2]
    assert plain["guidance"] is None and plain["attention"] is None
    assert guided["attention"] == "conform/0-0-attention.png"
    summary = guided["guidance"]
    assert set(summary) == {"guided_steps", "updates", "refinement_iterations", "skipped_nonfinite", "first_step_loss"}
    assert summary["guided_steps"] >= 2 and summary["updates"] >= 1
    assert summary["refinement_iterations"] == 20  # CONFORM refines at step 0
    assert summary["skipped_nonfinite"] == 0
    assert isinstance(summary["first_step_loss"], float)


def test_guidance_changes_the_image(first_run):
    _, out = first_run
    assert not np.array_equal(_pixels(out / "none/0-0.png"), _pixels(out / "conform/0-0.png"))
    assert not np.array_equal(_pixels(out / "none/0-0.png"), _pixels(out / "none/0-1.png"))


def test_same_seed_and_method_give_the_same_image(first_run, tmp_path, capsys):
    """A second run (only seed 1, groups spelled out) reproduces the first run's seed-1 images."""
    _, first = first_run
    args = ["generate", PROMPT, *FAST, "--method", "conform", "--method", "none", "--seeds", "1"]
    assert main([*args, "--token-groups", "red car|blue bench", "--output-dir", str(tmp_path)]) == 0
    for name in ("none/0-1.png", "conform/0-1.png"):
        assert np.array_equal(_pixels(first / name), _pixels(tmp_path / name)), name
    # The explicit groups resolve to what "auto" found.
    assert _settings(tmp_path)["token_groups"] == _settings(first)["token_groups"]
    table = capsys.readouterr().out  # not --quiet: the summary table
    assert "method" in table and "conform/0-1.png" in table and "none/0-1.png" in table


def test_no_heatmaps(tmp_path):
    args = ["generate", PROMPT, *FAST, "--method", "ebama", "--no-heatmaps", "--output-dir", str(tmp_path), "--quiet"]
    assert main(args) == 0
    assert sorted(p.name for p in (tmp_path / "ebama").iterdir()) == ["0-0.png"]
    (record,) = _settings(tmp_path)["images"]
    assert record["attention"] is None and record["guidance"]["guided_steps"] >= 1


def test_interrupted_run_keeps_finished_images(tmp_path, monkeypatch, capsys):
    real_run_job = generate.run_job

    def interrupt_second(run, job):
        if job.seed == 1:
            raise KeyboardInterrupt
        return real_run_job(run, job)

    monkeypatch.setattr(generate, "run_job", interrupt_second)
    args = ["generate", PROMPT, *FAST, "--method", "none", "--seeds", "0", "1", "--output-dir", str(tmp_path)]
    assert main(args) == 130
    s = _settings(tmp_path)
    assert s["status"] == "interrupted"
    assert [r["image"] for r in s["images"]] == ["none/0-0.png"]
    assert "interrupted after 1 of 2 images" in capsys.readouterr().err


def test_sigterm_stops_a_run_as_ctrl_c_does(tmp_path, monkeypatch, capsys):
    import os
    import signal

    real_run_job = generate.run_job

    def terminate_second(run, job):
        if job.seed == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill` or `timeout` sends it
        return real_run_job(run, job)

    monkeypatch.setattr(generate, "run_job", terminate_second)
    before = signal.getsignal(signal.SIGTERM)
    args = ["generate", PROMPT, *FAST, "--method", "none", "--seeds", "0", "1", "--output-dir", str(tmp_path)]
    assert main(args) == 130
    assert _settings(tmp_path)["status"] == "interrupted"  # not "running" forever
    assert [r["image"] for r in _settings(tmp_path)["images"]] == ["none/0-0.png"]
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is the command's only


@pytest.mark.parametrize("extra, message", [
    # no cross-attention layer of the tiny UNet has 3x3 maps at 128 px
    (["--attn-res", "3", "3"], "No cross-attention layer has 3x3 maps"),
    # at 32 px the 1x1 maps are too small for EBAMA's smoothing kernel
    (["--height", "32", "--width", "32"], "1x1 attention maps are too small for the smoothing kernel"),
    (["--height", "100"], "multiples of 8; got 100x128"),
    (["--guidance-scale", "1", "--negative-prompt", "blurry"], "turns classifier-free guidance off"),
])
def test_settings_the_guided_images_would_refuse_fail_before_the_plain_ones(tmp_path, capsys, extra, message):
    args = ["generate", PROMPT, *FAST, "--method", "none,ebama", *extra, "--output-dir", str(tmp_path / "run")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # nothing drawn, no folder left


def test_sd_sizes_are_multiples_of_8_whatever_the_vae(tmp_path, capsys):
    """The embedded model's VAE downsamples by 2, but diffusers' SD pipeline refuses any size
    that is not a multiple of 8: refused up front, naming the size, with no folder left."""
    args = ["generate", "a red circle", "--steps", "1", "--method", "none", "--height", "36",
            "--output-dir", str(tmp_path / "run")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "multiples of 8; got 36x32" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("extra, message", [
    (["--method", "none", "--attn-res", "8", "8"], "no method here guides; drop it"),
    (["--method", "none", "--token-groups", "red car"], "--token-groups are read only by guided methods"),
])
def test_settings_nothing_reads_are_refused(tmp_path, capsys, extra, message):
    assert main(["generate", PROMPT, *FAST, *extra, "--output-dir", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err


def test_a_pipeline_error_mid_run_exits_2_and_is_recorded(tmp_path, capsys, monkeypatch):
    """What the checks up front cannot see (the pipeline refusing an input, a full disk) ends
    the run with its message in settings.json; a run with no image leaves the folder reusable."""
    real_run_job = generate.run_job
    failure = [ValueError("the pipeline refused this")]

    def failing_run_job(run, job):
        if failure:
            raise failure[0]
        return real_run_job(run, job)

    monkeypatch.setattr(generate, "run_job", failing_run_job)
    args = ["generate", PROMPT, *FAST, "--method", "ebama", "--output-dir", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "error: the pipeline refused this" in err and "Traceback" not in err
    s = _settings(tmp_path)
    assert s["status"] == "failed" and s["images"] == [] and s["error"] == "the pipeline refused this"
    failure[0] = FileExistsError(17, "File exists", str(tmp_path / "ebama"))
    assert main(args) == 2  # the folder held no image: the command may run there again
    assert f"error: {tmp_path / 'ebama'}: File exists" in capsys.readouterr().err
    failure.clear()
    assert main(args) == 0
    assert _settings(tmp_path)["status"] == "finished"


def test_a_settings_file_that_cannot_be_written_at_the_end_exits_2(tmp_path, capsys, monkeypatch):
    """A full disk fails the image and then settings.json too: a message, not a traceback."""
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "none" / "0-0.png"))

    real_write = generate.write_json_atomic
    monkeypatch.setattr(generate, "run_job", full_disk)
    monkeypatch.setattr(generate, "write_json_atomic",
                        lambda path, data: full_disk() if data["status"] != "running" else real_write(path, data))
    assert main(["generate", PROMPT, *FAST, "--method", "none", "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "cannot update" in err and "Traceback" not in err


def test_an_output_dir_that_cannot_be_written_fails_before_the_model_loads(tmp_path, capsys, monkeypatch):
    if not Path("/proc/self").is_dir():
        pytest.skip("needs Linux's /proc, where no folder can be made (root can write to any other folder)")
    monkeypatch.setattr(generate, "load_pipeline", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(["generate", PROMPT, *FAST, "--output-dir", "/proc/contrastive-diffusers-test"]) == 2
    assert "cannot write to --output-dir /proc/contrastive-diffusers-test: No such file" in capsys.readouterr().err


@pytest.mark.parametrize("command", [
    ["bench", "--model", "tiny-sd1", "--method", "none"],
    ["tune", "--method", "syngen", "--model", "tiny-sd1"],
    ["score"],
])
def test_bench_tune_and_score_refuse_an_unwritable_folder_before_any_work(tmp_path, capsys, monkeypatch, command):
    if not Path("/proc/self").is_dir():
        pytest.skip("needs Linux's /proc, where no folder can be made (root can write to any other folder)")
    import contrastive_diffusers.eval.bench as bench
    import contrastive_diffusers.eval.tune as tune

    for module, name in ((bench, "run_benchmark"), (bench, "score_run"), (tune, "run_tuning")):
        monkeypatch.setattr(module, name, lambda *a, **k: pytest.fail("work started"))
    folder = "/proc/contrastive-diffusers-test"
    args = [command[0], folder, *command[1:]] if command[0] == "score" else [*command, "--output-dir", folder]
    assert main(args) == 2
    flag = "the run folder" if command[0] == "score" else "--output-dir"
    assert f"error: cannot write to {flag} {folder}: No such file" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["bench", "tune"])
def test_a_stopped_run_names_the_folder_it_chose(tmp_path, capsys, monkeypatch, command):
    """Without --output-dir a command picks outputs/<command>-<time>; the same command again
    would pick a new one, so a stopped run says which folder to pass to go on."""
    import contrastive_diffusers.eval.bench as bench
    import contrastive_diffusers.eval.tune as tune

    def stop(config):
        Path(config.output_dir).mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "run_benchmark", stop)
    monkeypatch.setattr(tune, "run_tuning", stop)
    monkeypatch.chdir(tmp_path)
    args = ["bench", "--model", "tiny-sd1"] if command == "bench" else ["tune", "--method", "syngen"]
    assert main(args) == 130
    (folder,) = (tmp_path / "outputs").iterdir()
    err = capsys.readouterr().err
    assert f"kept in outputs/{folder.name}; run the same command with --output-dir outputs/{folder.name} to go on" in err
    assert main([*args, "--output-dir", "given"]) == 130
    assert "kept in given; run the same command again to go on" in capsys.readouterr().err


def test_a_run_stopped_before_its_first_image_leaves_the_folder_reusable(tmp_path):
    (tmp_path / "settings.json").write_text(json.dumps({"argv": [], "status": "interrupted", "images": []}))
    assert main(["generate", PROMPT, *FAST, "--method", "none", "--output-dir", str(tmp_path)]) == 0


def test_default_output_dir_is_fresh(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = default_output_dir()
    assert first.parent == Path("outputs") and first.name.startswith("generate-")
    first.mkdir(parents=True)
    second = default_output_dir()
    assert second != first and not second.exists()


# ---------------------------------------------------------------------------- token groups


def test_token_group_string_and_json_forms_agree():
    string = parse_token_groups("red car|blue bench", 1)
    as_json = parse_token_groups('[["red", "car"], ["blue", "bench"]]', 1)
    assert string == as_json == [[["red", "car"], ["blue", "bench"]]]
    tokenizer = tiny_tokenizer()
    assert resolve_groups(tokenizer, PROMPT, string[0]) == resolve_groups(tokenizer, PROMPT, as_json[0])


def test_token_group_forms():
    assert parse_token_groups("auto", 2) == ["auto", "auto"]
    # Integer words are token positions; one spec applies to every prompt.
    assert parse_token_groups(" 2 3 | blue bench ", 2) == [[[2, 3], ["blue", "bench"]]] * 2
    # JSON with one list per prompt.
    per_prompt = parse_token_groups('[[["red", "car"], ["bench"]], "auto"]', 2)
    assert per_prompt == [[["red", "car"], ["bench"]], "auto"]
    tokenizer = tiny_tokenizer()
    words = [g.words for g in resolve_groups(tokenizer, PROMPT, parse_token_groups("2 3|blue bench", 1)[0])]
    assert words == [("2", "3"), ("blue", "bench")]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("red car||blue bench", "empty group"),
        ("[[", "not valid JSON"),
        ('[[["red"]], [["car"]], [["x"]]]', "3 group lists for 2 prompt"),
    ],
)
def test_bad_token_group_specs(spec, message, capsys):
    code = main(["generate", PROMPT, "a cat", "--token-groups", spec, "--model", "tiny-sd1"])
    assert code == 2
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------------------- errors


def test_word_not_in_prompt_exits_2_naming_the_word(tmp_path, capsys):
    out = tmp_path / "out"
    groups = '[["green", "car"], ["blue", "bench"]]'
    code = main(["generate", PROMPT, *FAST, "--token-groups", groups, "--output-dir", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error: ") and "'green'" in err
    assert "Traceback" not in err
    assert not out.exists()  # checked before anything is written


def test_missing_model_folder_exits_2(tmp_path, capsys):
    missing = tmp_path / "no-such-model"
    code = main(["generate", PROMPT, "--model", str(missing), "--output-dir", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0  # one line, no traceback
    assert err.splitlines()[-1].startswith("error: ") and str(missing) in err and "does not exist" in err


def test_unknown_method_exits_2(capsys):
    assert main(["generate", PROMPT, "--method", "none,bogus"]) == 2
    assert "bogus" in capsys.readouterr().err


def test_two_method_files_with_one_name_exit_2(tmp_path, capsys):
    for folder in ("a", "b"):  # hand-written method configs, as load_method reads them
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "tuned.json").write_text(json.dumps({"method": "syngen"}))
    code = main(["generate", PROMPT, "--method", f"{tmp_path / 'a' / 'tuned.json'},{tmp_path / 'b' / 'tuned.json'}",
                 "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: Two methods are named 'tuned'") and "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["generate", PROMPT, "--guidance-scale", "nan"], "--guidance-scale nan: give finite numbers"),
    (["score", "run-folder", "--device", "gpu"], "device must be auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
])
def test_nonfinite_numbers_and_unknown_devices_exit_2(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_help_and_version_in_process(capsys):
    assert main(["generate", "--help"]) == 0
    help_text = capsys.readouterr().out
    for word in ("--token-groups", "--attn-res", "tiny-sdxl", "noise"):
        assert word in help_text
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out
    assert main([]) == 2  # no command: usage on stderr


def test_python_m_version():
    result = subprocess.run(
        [sys.executable, "-m", "contrastive_diffusers", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert __version__ in result.stdout


def test_seed_ranges_are_inclusive_and_checked():
    import argparse

    from contrastive_diffusers.cli.common import int_list

    assert int_list("42-51") == list(range(42, 52)) and int_list("0,3-5") == [0, 3, 4, 5]
    assert int_list("-1") == [-1]  # a leading minus is a negative seed, not a range
    assert int_list(str(2**64 - 1)) == [2**64 - 1] and int_list(str(-(2**63))) == [-(2**63)]
    assert len(int_list("0-99999")) == 100_000
    for bad, message in (("5-3", "runs backwards"), ("a-b", "integers or ranges"), ("", "no seed in ''"),
                         (" , ", "no seed in"),
                         ("0-100000000", "names 100,000,001 seeds; at most 100,000 per range"),
                         (str(2**64), r"seed 18446744073709551616 is out of range; seeds lie in \[-2\*\*63, 2\*\*64\)")):
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            int_list(bad)


def test_options_after_a_double_dash_are_refused_not_drawn(tmp_path, capsys, monkeypatch):
    # after "--" argparse hands every word over as a prompt: "--output-dir" would be drawn as one
    monkeypatch.chdir(tmp_path)
    for extra in (["--output-dir", "mine"], ["--steps=2"], ["--output", "mine"]):
        assert main(["generate", "--method", "none", "--seeds", "0", "--", "a red car", *extra]) == 2
        assert f"the prompt '{extra[0]}' is an option of this command" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
    assert main(["generate", *FAST, "--method", "none", "--quiet", "--seeds", "0", "--", "a red car", "--x"]) == 0


def test_an_image_that_decoded_to_nan_is_named(tmp_path, capsys, monkeypatch):
    import diffusers
    from diffusers.models.autoencoders.vae import DecoderOutput

    monkeypatch.setattr(diffusers.AutoencoderKL, "decode",
                        lambda self, z, *a, **k: DecoderOutput(sample=torch.full((z.shape[0], 3, 128, 128), float("nan"))))
    assert main(["generate", "a red car", *FAST, "--method", "none", "--quiet", "--output-dir", str(tmp_path)]) == 0
    assert "none/0-0.png decoded to NaN or infinite pixels and was written black" in capsys.readouterr().err
    assert _settings(tmp_path)["images"][0]["nonfinite"] is True and not _pixels(tmp_path / "none/0-0.png").any()


def test_auto_token_groups_in_any_case_and_as_json():
    assert parse_token_groups("AUTO", 2) == parse_token_groups('"auto"', 2) == ["auto", "auto"]


def test_a_foreign_settings_json_is_named_as_such(tmp_path, capsys):
    (tmp_path / "settings.json").write_text(json.dumps({"editor": "something else"}))
    assert main(["generate", "a green cat", *FAST, "--output-dir", str(tmp_path)]) == 2
    assert "holds a settings.json that is not a generate run's" in capsys.readouterr().err


def test_an_output_dir_holding_a_run_or_a_file_is_refused(first_run, tmp_path, capsys):
    """A second run into a folder would overwrite its images (named by prompt index and seed)."""
    _, first = first_run
    before = _pixels(first / "none/0-0.png")
    assert main(["generate", "a green cat", *FAST, "--output-dir", str(first)]) == 2
    assert "already holds a generate run" in capsys.readouterr().err
    assert np.array_equal(_pixels(first / "none/0-0.png"), before)
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert main(["generate", "a green cat", *FAST, "--output-dir", str(a_file)]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err


@pytest.mark.parametrize("command", [
    ["generate", "a green cat", *FAST],
    ["bench", "--prompts", "shapes:sample", *FAST],
    ["tune", "--method", "conform", "--model", "tiny-sd1"],
    ["train", "textual_inversion", "--pretrained_model_name_or_path", "unused", "--train_data_dir", "unused",
     "--placeholder_token", "<x>", "--initializer_token", "cat"],
])
def test_an_output_folder_under_a_file_is_a_usage_error(command, tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("")
    option = "--output_dir" if command[0] == "train" else "--output-dir"
    assert main([*command, option, str(a_file / "run")]) == 2
    err = capsys.readouterr().err
    assert f"{a_file}, above {a_file / 'run'}, is a file; give a folder" in err and "Traceback" not in err


def test_a_method_file_with_a_wrongly_typed_value_says_so(tmp_path, capsys):
    bad = tmp_path / "hot.json"
    bad.write_text(json.dumps({"method": "conform", "temperature": "hot"}))
    assert main(["generate", "a red car and a blue bench", *FAST, "--method", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: a value of the wrong type for Conform" in err and "JSON numbers" in err


def test_maps_too_small_to_smooth_are_a_clear_error(tmp_path, capsys):
    args = ["generate", PROMPT, "--model", "tiny-sd1", "--steps", "2", "--height", "16", "--width", "16",
            "--method", "ae", "--output-dir", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "1x1 attention maps are too small for the smoothing kernel of size 3" in err and "Traceback" not in err


def test_default_methods_skip_a_prompt_they_cannot_guide_named_ones_refuse_it(tmp_path, capsys):
    assert main(["generate", "a red car", PROMPT, *FAST, "--output-dir", str(tmp_path / "default")]) == 0
    s = _settings(tmp_path / "default")
    assert [(r["method"], r["prompt_index"]) for r in s["images"]] == [("none", 0), ("none", 1), ("conform", 1)]
    assert [(k["method"], k["prompt_index"]) for k in s["skipped"]] == [("conform", 0)]
    assert "conform skipped for prompt 0 ('a red car'): CONFORM needs at least two" in capsys.readouterr().err
    named = ["generate", "a red car", *FAST, "--method", "none,conform", "--output-dir", str(tmp_path / "named")]
    assert main(named) == 2
    assert "CONFORM needs at least two" in capsys.readouterr().err and not (tmp_path / "named").exists()
    # a prompt the parser finds no object in: drawn plainly by the default methods, refused by named ones
    assert main(["generate", "beautiful", *FAST, "--output-dir", str(tmp_path / "no-noun")]) == 0
    s = _settings(tmp_path / "no-noun")
    assert [r["method"] for r in s["images"]] == ["none"] and s["token_groups"] == [None]
    assert "conform skipped for prompt 0 ('beautiful'): The automatic prompt parser" in capsys.readouterr().err
    assert main(["generate", "beautiful", *FAST, "--method", "none,conform", "--output-dir", str(tmp_path / "x")]) == 2


def test_flux_reads_a_negative_prompt_only_with_true_cfg(tmp_path, capsys):
    args = ["generate", "a red car", "--model", "tiny-flux", "--steps", "1", "--method", "none",
            "--negative-prompt", "blurry", "--output-dir", str(tmp_path / "run")]
    assert main(args) == 2
    assert "FLUX.1 is guidance-distilled" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before the folder is made
    assert main([*args, "--true-cfg-scale", "4"]) == 0  # true CFG reads it
    settings = json.loads((tmp_path / "run/settings.json").read_text())
    assert settings["generation"]["true_cfg_scale"] == 4.0 and settings["generation"]["negative_prompt"] == "blurry"


@pytest.mark.parametrize("model, extra, message", [
    # FluxPipeline would resize such an image with a warning, and settings.json record the size asked for
    ("tiny-flux", ["--height", "100"], "multiples of 16; got 100x128"),
    ("tiny-flux-schnell", ["--guidance-scale", "1"], "takes no guidance scale"),  # 0, the model card's, is taken
    # which part of the joint text guidance reads is SD3's choice
    ("tiny-flux", ["--method", "syngen", "--text-sequence", "t5"], "GuidedFluxPipeline has no such choice"),
])
def test_flux_settings_the_pipeline_would_change_or_ignore_are_refused(tmp_path, capsys, model, extra, message):
    args = ["generate", "a red car", "--model", model, "--steps", "1", "--method", "none", *extra,
            "--output-dir", str(tmp_path / "run")]
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_sd3_guides_a_prompt_longer_than_clip_reads_on_t5(tmp_path, capsys):
    long = "a red car and a blue bench, " + "a small green tree next to a yellow house, " * 8
    args = ["generate", long, "--model", "tiny-sd3", "--steps", "2", "--height", "64", "--width", "64", "--quiet",
            "--method", "syngen", "--token-groups", "red car|blue bench"]
    assert main([*args, "--output-dir", str(tmp_path / "clip")]) == 2
    assert "--text-sequence t5 reads the T5 tokens" in capsys.readouterr().err
    assert main([*args, "--text-sequence", "t5", "--output-dir", str(tmp_path / "t5")]) == 0
    settings = _settings(tmp_path / "t5")
    assert settings["generation"]["text_sequence"] == "t5" and settings["images"][0]["guidance"]["updates"] == 1
    assert main([*args[:-4], "--method", "none", "--text-sequence", "t5", "--output-dir", str(tmp_path / "n")]) == 2
    assert "no method here guides" in capsys.readouterr().err


def test_a_method_that_guides_no_step_is_named(tmp_path, capsys):
    # on MMDiT models the papers' step indices are fractions of 50: EBAMA's 26 updates, 52% of
    # a 1-step run, end before its first step; A&E refines at step 0
    args = ["generate", "a red car and a blue bench", "--model", "tiny-sd3", "--steps", "1", "--method", "ebama,ae",
            "--quiet", "--output-dir", str(tmp_path)]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "warning: ebama guided no step at 1 steps" in err and "attend_and_excite guided" not in err
    assert [r["guidance"]["guided_steps"] for r in _settings(tmp_path)["images"]] == [0, 1]


@pytest.mark.parametrize("command, other_file", [
    (["bench", "--prompts", "shapes:sample", "--num-prompts", "1", "--method", "none", "--clip-model", "none"], "tune.json"),
    (["tune", "--method", "ae"], "bench.json"),
    (["generate", "a red circle", "--method", "none"], "bench.json"),
])
def test_a_folder_holding_another_commands_run_is_refused(command, other_file, tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / other_file).write_text("{}")
    assert main([*command, "--steps", "1", "--output-dir", str(folder)]) == 2
    assert f"holds a {other_file.split('.')[0]} run ({other_file})" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == [other_file]  # nothing written beside it


def test_a_generate_run_without_images_holds_no_run(tmp_path):
    from contrastive_diffusers.eval.run_folder import other_command_in

    (tmp_path / "settings.json").write_text(json.dumps({"argv": [], "status": "failed", "images": []}))
    assert other_command_in(tmp_path, "bench") is None and other_command_in(tmp_path, "tune") is None
    done = {"argv": [], "status": "failed", "images": [{"image": "none/0-0.png"}]}
    (tmp_path / "settings.json").write_text(json.dumps(done))
    assert "holds a generate run (settings.json), not a bench run" in other_command_in(tmp_path, "bench")
    # another tool's settings.json is not a generate run to reuse
    (tmp_path / "settings.json").write_text(json.dumps({"images": []}))
    assert "holds a generate run (settings.json)" in other_command_in(tmp_path, "bench")
