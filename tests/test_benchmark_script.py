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
            "--methods", "none,diffusers_attend_and_excite,attend_and_excite"]
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| attend_and_excite |" in printed and "x floor" in printed
    rows = {row["method"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"none", "diffusers_attend_and_excite", "attend_and_excite"}
    assert rows["none"]["x_plain"] == pytest.approx(1.0)
    assert rows["attend_and_excite"]["max_abs_diff_vs_diffusers"] < 1e-4  # same images as diffusers
    assert rows["attend_and_excite"]["passes"] >= 3 and rows["attend_and_excite"]["floor_s"] > 0
    # PNDM: 2 steps are 3 loop iterations, all before A&E's last guided step (25, as diffusers counts)
    assert rows["attend_and_excite"]["guided_steps"] == 3


#: Parameter counts of the released models the full-size MMDiT builds follow (their configs):
#: SD3 medium's MMDiT (2.0 B), FLUX.1-dev's transformer (11.9 B), CLIP-L's text model (with
#: and without projection), OpenCLIP bigG's, T5-v1.1-XXL's encoder and the 16-channel VAE.
RELEASED = {
    "sd3": {"transformer": 2_028_328_000, "text_encoder": 123_650_304, "text_encoder_2": 694_659_840,
            "text_encoder_3": 4_762_310_656, "vae": 83_819_683},
    "flux": {"transformer": 11_901_408_320, "text_encoder": 123_060_480, "text_encoder_2": 4_762_310_656,
             "vae": 83_819_683},
}


@pytest.mark.parametrize("shape", ["sd3", "flux"])
def test_full_size_mmdit_builds_have_the_released_sizes(shape):
    """The GPU suite's SD3 and Flux rows build the real models on the device; built on the meta
    device here (no memory), every component has the released model's parameter count and
    the requested precision."""
    import torch

    spec = importlib.util.spec_from_file_location("mmdit_benchmark", SCRIPT.parent / "mmdit_benchmark.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    pipe = bench.build(shape, None, "meta", torch.bfloat16)
    modules = {k: v for k, v in pipe.components.items() if isinstance(v, torch.nn.Module)}
    assert {k: sum(p.numel() for p in m.parameters()) for k, m in modules.items()} == RELEASED[shape]
    assert {p.dtype for m in modules.values() for p in m.parameters()} == {torch.bfloat16}
    assert pipe.default_max_sequence_length() == (256 if shape == "sd3" else 512)  # the stock T5 lengths
