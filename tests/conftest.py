"""Fixtures shared by several test modules."""

from __future__ import annotations

import pytest
import torch

from contrastive_diffusers.testing import tiny_clip


@pytest.fixture(scope="module")
def single_thread():
    """Tiny models gain nothing from threads, and on a busy machine several threads spin.
    Use with ``pytestmark = pytest.mark.usefixtures("single_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    """The tiny random CLIP (``testing.tiny_clip``) saved as a model folder."""
    folder = tmp_path_factory.mktemp("tiny-clip")
    model, processor = tiny_clip()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
