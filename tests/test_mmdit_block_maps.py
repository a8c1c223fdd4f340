"""The block-localisation measurement script: every block's map at once, and its score."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from contrastive_diffusers.models.loading import load_pipeline

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "mmdit_block_maps.py"


def _script():
    spec = importlib.util.spec_from_file_location("mmdit_block_maps", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_box_share_against_hand_counts():
    script = _script()
    noun = torch.zeros(4, 4)
    noun[0, 0], noun[3, 3] = 3.0, 1.0
    # 32 px image, 4x4 grid: cell centres at 4, 12, 20, 28 px; the box holds the top-left 2x2 cells.
    assert script.box_share(noun, (0, 0, 16, 16), (32, 32)) == (0.75, 0.25)


def test_every_block_is_recorded_at_once():
    script = _script()
    pipe = load_pipeline("tiny-sd3", "cpu", None, quiet=True)
    latents = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    maps = script.block_maps(pipe, "a red circle and a blue square", latents, torch.tensor(500.0), 77, 7.0)
    assert list(maps) == [f"transformer_blocks.{i}" for i in range(len(pipe.transformer.transformer_blocks))]
    for block_map in maps.values():
        assert block_map.shape == (8, 8, 77)
        torch.testing.assert_close(block_map.sum(-1), torch.ones(8, 8))


def test_t5_part_of_sd3s_text_is_recorded_when_asked():
    script = _script()
    pipe = load_pipeline("tiny-sd3", "cpu", None, quiet=True)
    latents = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    maps = script.block_maps(pipe, "a red circle and a blue square", latents, torch.tensor(500.0), 32, 7.0, "t5")
    for block_map in maps.values():
        # T5's 32 tokens after an empty slot 0 (T5 has no start token; positions count from 1 as on CLIP)
        assert block_map.shape == (8, 8, 33) and not block_map[..., 0].any()
        torch.testing.assert_close(block_map.sum(-1), torch.ones(8, 8))
