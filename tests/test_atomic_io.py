"""Atomic writes: the whole new file or the old one, with ordinary permissions."""

from __future__ import annotations

import json
import os
import stat

import pytest
from PIL import Image

from contrastive_diffusers import atomic_io


def test_json_and_jsonl_round_trip_with_plain_permissions(tmp_path):
    atomic_io.write_json_atomic(tmp_path / "a.json", {"x": (1, 2), "nan": float("nan")})
    atomic_io.write_jsonl_atomic(tmp_path / "b.jsonl", [{"i": 1}, {"i": 2}])
    assert atomic_io.read_json(tmp_path / "a.json") == {"x": [1, 2], "nan": "nan"}
    assert [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()] == [{"i": 1}, {"i": 2}]
    umask = os.umask(0)
    os.umask(umask)
    mode = stat.S_IMODE((tmp_path / "a.json").stat().st_mode)
    assert mode == 0o666 & ~umask  # what open() would give, not mkstemp's 0600


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "image.png"
    Image.new("RGB", (4, 4), "red").save(target)

    class Broken:
        def save(self, path, format):
            open(path, "wb").write(b"half")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_io.save_image_atomic(Broken(), target)
    assert Image.open(target).getpixel((0, 0)) == (255, 0, 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.png"]
