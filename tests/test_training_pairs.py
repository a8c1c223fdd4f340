"""The pair folder format (validation errors name file, line and fix) and identical crops of a pair."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from contrastive_diffusers.shapes.export import export_evogen
from contrastive_diffusers.training.data import DataError, DataStream
from contrastive_diffusers.training.pairs import PairImages, load_pairs

pytestmark = pytest.mark.usefixtures("single_thread")


def _folder(tmp_path, rows):
    folder = tmp_path / "pairs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("p.png", "n.png"):
        Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(folder / name)
    (folder / "pairs.jsonl").write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return folder


ROW = {"caption": "a red circle", "positive": "p.png", "negative": "n.png", "category": "color", "stage": 1}


def test_load_pairs_reads_the_shapes_export(tmp_path):
    folder = export_evogen(tmp_path / "ev", per_stage=2, size=32)
    pairs = load_pairs(folder)
    assert [p.stage for p in pairs] == [1, 1, 2, 2, 3, 3]
    assert {p.category for p in pairs} <= {"color", "shape", "spatial", "complex", "counting"}
    assert pairs[0].positive.is_file() and pairs[0].line == 1


@pytest.mark.parametrize(
    "rows, match",
    [
        ([ROW, "{not json"], r"pairs.jsonl, line 2 is not valid JSON"),
        ([dict(ROW, category="colour")], r"line 1: unknown category 'colour'; use one of color, shape, texture"),
        ([dict(ROW, stage=0)], r"line 1: \"stage\" must be an integer >= 1"),
        ([dict(ROW, stage="2")], r"\"stage\" must be an integer >= 1"),
        ([dict(ROW, stage=True)], r"\"stage\" must be an integer >= 1"),
        ([dict(ROW, negative="missing.png")], r"line 1: the negative image .*missing.png does not exist"),
        ([{k: v for k, v in ROW.items() if k != "caption"}], r"line 1: missing caption"),
        ([], r"has no pairs"),
    ],
)
def test_load_pairs_errors(tmp_path, rows, match):
    folder = _folder(tmp_path, rows)
    with pytest.raises(DataError, match=match):
        load_pairs(folder)


def test_load_pairs_folder_and_image_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_pairs(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no pairs.jsonl"):
        load_pairs(tmp_path / "empty")
    folder = _folder(tmp_path, [ROW])
    (folder / "n.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"line 1: Cannot read the image .*n.png"):
        load_pairs(folder)


def test_pair_images_crop_positive_and_negative_alike(tmp_path):
    folder = _folder(tmp_path, [ROW])
    Image.open(folder / "p.png").save(folder / "n.png")  # the same picture: crops must match exactly
    data = PairImages(load_pairs(folder), resolution=32)
    batch = data.batch(DataStream(1, 0), [0, 1, 2], seed=0)
    assert batch["pixel_values"].shape == (3, 3, 32, 32)
    assert torch.equal(batch["pixel_values"], batch["negative_pixel_values"])
    assert batch["captions"] == ["a red circle"] * 3 and batch["stages"] == [1, 1, 1]
