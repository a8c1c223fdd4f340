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


def test_noun_positions_follow_the_prompt():
    from transformers import CLIPTokenizer

    from contrastive_diffusers.guidance.tokens import resolve_groups
    from contrastive_diffusers.models.embedded import embedded_model_dir

    tok = CLIPTokenizer.from_pretrained(embedded_model_dir(), subfolder="tokenizer")
    groups = resolve_groups(tok, "a red square and a blue square", [["red", "square"], ["blue", "square"]])
    assert [g.noun[0] for g in groups] == [3, 7]  # <start> a red square and a blue square
