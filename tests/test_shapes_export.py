"""Exports for ReVersion, MCPL and EvoGen: exact formats, loadable, deterministic."""

import json

import pytest
from PIL import Image

from contrastive_diffusers.shapes.export import (
    EVOGEN_STAGES,
    export_evogen,
    export_mcpl,
    export_reversion,
)
from contrastive_diffusers.shapes.oracle import check, detect
from contrastive_diffusers.shapes.prompts import HELD_OUT_PAIRS
from contrastive_diffusers.shapes.world import RELATIONS
from contrastive_diffusers.training.data import load_examples


def test_reversion_folders(tmp_path):
    folders = export_reversion(tmp_path / "rev", per_relation=3, seed=0, size=32)
    assert sorted(p.name for p in (tmp_path / "rev").iterdir()) == sorted(r.replace(" ", "_") for r in RELATIONS)
    for folder in folders.values():
        text = json.loads((folder / "text.json").read_text())
        assert sorted(text) == ["000.png", "001.png", "002.png"]
        for name, templates in text.items():
            assert templates and all("{}" in t for t in templates)
            with Image.open(folder / name) as image:
                assert image.size == (32, 32) and image.mode == "RGB"
        assert len(load_examples(folder)) == 3  # the ReVersion trainer's own loader accepts it


def test_reversion_images_satisfy_their_relation(tmp_path):
    from contrastive_diffusers.shapes.spec import CaptionSpec, ObjectSpec

    folders = export_reversion(tmp_path / "rev", per_relation=4, seed=1, size=32)
    for relation, folder in folders.items():
        for name, templates in json.loads((folder / "text.json").read_text()).items():
            a, b = templates[1].split(" {} ")
            spec = CaptionSpec((ObjectSpec(a.split()[1], a.split()[0]), ObjectSpec(b.split()[1], b.split()[0])),
                               (0, relation, 1))
            with Image.open(folder / name) as image:
                assert check(image, spec).success


def test_mcpl_metadata(tmp_path):
    folder = export_mcpl(tmp_path / "mcpl", n=6, seed=0, size=32, learned="nouns")
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(set(r) == {"file_name", "text"} for r in rows)
    assert all(r["text"].count("<") >= 2 for r in rows)  # several objects named per sentence
    tokens = json.loads((folder / "tokens.json").read_text())
    assert all(t == f"<{w}>" for t, w in zip(tokens["placeholder_tokens"], tokens["initializer_tokens"]))
    assert len(load_examples(folder)) == 6
    plain = export_mcpl(tmp_path / "plain", n=3, seed=0, size=32, learned="none")
    assert not (plain / "tokens.json").exists()
    assert all("<" not in json.loads(l)["text"] for l in (plain / "metadata.jsonl").read_text().splitlines())


def test_mcpl_export_command_writes_learned_tokens_and_says_how_to_train(tmp_path, capsys):
    from contrastive_diffusers.shapes.export import main

    main(["mcpl", str(tmp_path / "data"), "--n", "3", "--size", "32"])  # MCPL needs them: nouns by default
    tokens = json.loads((tmp_path / "data" / "tokens.json").read_text())
    out = capsys.readouterr().out
    assert f'--placeholder_tokens "{",".join(tokens["placeholder_tokens"])}"' in out
    assert f'--initializer_tokens "{",".join(tokens["initializer_tokens"])}"' in out


def test_evogen_pairs(tmp_path):
    folder = export_evogen(tmp_path / "evo", per_stage=6, seed=0, size=32)
    rows = [json.loads(line) for line in (folder / "pairs.jsonl").read_text().splitlines()]
    assert len(rows) == 18
    for row in rows:
        assert set(row) == {"caption", "positive", "negative", "category", "stage"}
        assert row["stage"] in EVOGEN_STAGES and row["category"] in EVOGEN_STAGES[row["stage"]]
        for key in ("positive", "negative"):
            with Image.open(folder / row[key]) as image:
                assert image.size == (32, 32)
        with Image.open(folder / row["positive"]) as pos, Image.open(folder / row["negative"]) as neg:
            assert pos.tobytes() != neg.tobytes()
        assert not any(f"{c} {s}" in row["caption"] for c, s in HELD_OUT_PAIRS)
        # neither image draws a held-out pair (negatives were drawn from every colour and shape)
        for key in ("positive", "negative"):
            with Image.open(folder / row[key]) as image:
                assert not {(o.color, o.shape) for o in detect(image)} & set(HELD_OUT_PAIRS), (row, key)
    assert {(r["stage"], r["category"]) for r in rows} == {(s, c) for s, cs in EVOGEN_STAGES.items() for c in cs}


def test_evogen_negatives_fail_the_oracle():
    import numpy as np

    from contrastive_diffusers.shapes.export import _evogen_pair
    from contrastive_diffusers.shapes.prompts import training_pairs
    from contrastive_diffusers.shapes.render import render

    rng = np.random.default_rng(0)
    for stage, categories in EVOGEN_STAGES.items():
        for category in categories:
            for _ in range(5):
                caption, positive, negative = _evogen_pair(stage, category, rng, training_pairs())
                assert check(render(positive, 32), caption.spec).success, (stage, category, caption.text)
                assert not check(render(negative, 32), caption.spec).success, (stage, category, caption.text)


def test_exports_are_deterministic_and_refuse_non_empty_folders(tmp_path):
    a = export_evogen(tmp_path / "a", per_stage=2, seed=4, size=32)
    b = export_evogen(tmp_path / "b", per_stage=2, seed=4, size=32)
    assert (a / "pairs.jsonl").read_text() == (b / "pairs.jsonl").read_text()
    for row in (a / "pairs.jsonl").read_text().splitlines():
        name = json.loads(row)["positive"]
        assert (a / name).read_bytes() == (b / name).read_bytes()
    with pytest.raises(FileExistsError, match="empty folder"):
        export_evogen(a, per_stage=1)
