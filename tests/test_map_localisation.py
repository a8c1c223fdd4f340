"""benchmarks/shapes_map_localisation.py runs and writes what it says (two prompts)."""

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_map_localisation_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location("loc", REPO / "benchmarks" / "shapes_map_localisation.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "loc.json"
    assert script.main(["--prompts", "2", "--output", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["prompts"] == 2 and set(data["maps"]) == {"16x16", "8x8"}  # the embedded model's map sizes
    entry = data["maps"]["8x8"]["900"]
    assert entry["lift"]["n"] == 4 and 0 <= entry["own_over_other"]["mean"] <= 1  # 2 prompts x 2 objects
    assert entry["lift"]["mean"] > 0


def test_word_positions_follow_the_prompt():
    spec = importlib.util.spec_from_file_location("loc", REPO / "benchmarks" / "shapes_map_localisation.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    from contrastive_diffusers.models.embedded import embedded_model_dir
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(embedded_model_dir(), subfolder="tokenizer")
    prompt = "a red square and a blue square"
    first = script.word_position(tok, prompt, "square", 0)
    assert (first, script.word_position(tok, prompt, "square", first)) == (3, 7)  # <start> a red square and a blue square
