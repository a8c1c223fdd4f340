"""The PNG grid of the same prompts and seeds across methods (the README's picture)."""

import numpy as np
import pytest
from PIL import Image

from contrastive_diffusers.eval.report_grid import (
    comparison_cells,
    comparison_png,
    grid_sample,
    verdict,
)


@pytest.fixture
def run(tmp_path):
    colours = {"none": (255, 0, 0), "conform": (0, 0, 255)}
    records = []
    for method, colour in colours.items():
        for prompt_id, category in (("p1", "two_object"), ("p2", "single")):
            name = f"{method}-{prompt_id}.png"
            Image.new("RGB", (4, 4), colour).save(tmp_path / name)
            records.append({"method": method, "prompt_id": prompt_id, "prompt": f"prompt {prompt_id}",
                            "category": category, "seed": 0, "status": "ok", "image": name,
                            "oracle": {"success": method == "conform"}})
    records.append({"method": "none", "prompt_id": "p1", "seed": 1, "status": "error", "category": "two_object"})
    return records, tmp_path


def test_cells_follow_methods_and_pairs(run):
    records, _ = run
    rows = comparison_cells(records, ["conform", "none", "ebama"], [("p1", 0), ("p1", 1)])
    assert [first["seed"] for first, _ in rows] == [0, 1]
    assert [c and c["method"] for c in rows[0][1]] == ["conform", "none", None]
    assert rows[1][1][1]["status"] == "error"
    assert verdict(rows[0][1][0]) is True and verdict(rows[0][1][1]) is False
    assert verdict(rows[1][1][1]) is None and verdict(None) is None


def test_grid_sample_takes_categories_in_turn(run):
    records, _ = run
    assert grid_sample(records, prompts=2) == [("p1", 0), ("p2", 0)]
    assert grid_sample([]) == []


def test_png_cells_hold_the_images_framed_by_verdict(run, tmp_path):
    records, run_dir = run
    path = comparison_png(records, ["none", "conform"], [("p1", 0), ("p1", 1)], run_dir, tmp_path / "out" / "grid.png",
                          cell=20)
    pixels = np.asarray(Image.open(path).convert("RGB"))
    rows = []
    for colour in ((255, 0, 0), (0, 0, 255)):  # where each method's image landed, scaled 4 -> 20 px
        ys, xs = np.nonzero((pixels == colour).all(-1))
        rows.append((ys.min(), xs.min(), ys.max() - ys.min() + 1, xs.max() - xs.min() + 1))
    assert [r[2:] for r in rows] == [(20, 20), (20, 20)]
    (y_none, x_none, *_), (y_conform, x_conform, *_) = rows
    assert y_none == y_conform and x_none < x_conform  # same row, columns in the order given
    # frames: red-orange for the wrong plain image, green for CONFORM's correct one
    assert tuple(pixels[y_none - 1, x_none]) == (213, 94, 0)
    assert tuple(pixels[y_conform - 1, x_conform]) == (0, 158, 115)
    # the failed seed-1 image is a blank cell in a grey frame, below the first row
    grey = np.nonzero((pixels == (170, 170, 170)).all(-1))[0]
    assert grey.min() > y_none + 20


def test_png_needs_cells(run, tmp_path):
    records, run_dir = run
    with pytest.raises(ValueError, match="at least one"):
        comparison_png(records, [], [("p1", 0)], run_dir, tmp_path / "g.png")


def test_grid_sample_takes_a_prompts_own_seed_where_it_lacks_the_runs_first(run):
    records, _ = run
    later = [{"method": "none", "prompt_id": "p3", "category": "single", "seed": 5, "status": "ok"}]
    assert grid_sample(records + later, prompts=3) == [("p1", 0), ("p2", 0), ("p3", 5)]


def test_png_keeps_the_aspect_and_survives_awkward_prompts(run, tmp_path):
    records, run_dir = run
    Image.new("RGB", (8, 4), (0, 255, 0)).save(run_dir / "wide.png")
    odd = [{"method": "none", "prompt_id": "w", "seed": 0, "status": "ok", "image": "wide.png",
            "prompt": "a red cube\nand a blue ball, 猫 " + "very long " * 40}]
    path = comparison_png(odd, ["none"], [("w", 0)], run_dir, tmp_path / "odd.png", labels={"none": "plain ü 猫"},
                          cell=20)
    pixels = np.asarray(Image.open(path).convert("RGB"))
    ys, xs = np.nonzero((pixels == (0, 255, 0)).all(-1))
    assert (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) == (10, 20)  # 8x4 fitted: 20x10, not stretched
    assert pixels.shape[1] < 500  # the long prompt was cut, not drawn 3,000 px wide


def test_png_row_titles_with_a_bitmap_font(run, tmp_path, monkeypatch):
    from PIL import ImageFont

    records, run_dir = run  # a font without FreeType has Latin-1 only: titles are made of it before measuring
    monkeypatch.setattr(ImageFont, "load_default", lambda *a, **k: ImageFont.load_default_imagefont())
    records = [{**records[0], "prompt": "a cat 猫"}]
    assert comparison_png(records, ["none"], [("p1", 0)], run_dir, tmp_path / "b.png", labels={"none": "猫"}).is_file()
