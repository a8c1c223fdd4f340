"""Fixtures shared by several test modules."""

from __future__ import annotations

import os

import pytest
import torch

from contrastive_diffusers.models.tiny import tiny_blip, tiny_clip


def pytest_configure(config):
    # Under pytest-xdist (the README's `-n 2`) each worker is one of several processes sharing
    # the cores: one thread each, also for the processes the tests start, so that they do not
    # spin against each other.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"


@pytest.fixture(scope="module")
def single_thread():
    """Tiny models gain nothing from threads, and on a busy machine several threads spin.
    Use with ``pytestmark = pytest.mark.usefixtures("single_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _saved(tmp_path_factory, name: str, parts):
    folder = tmp_path_factory.mktemp(name)
    for part in parts:  # model and processor
        part.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    """The tiny random CLIP (``models.tiny.tiny_clip``) saved as a model folder."""
    return _saved(tmp_path_factory, "tiny-clip", tiny_clip())


@pytest.fixture(scope="session")
def tiny_blip_dir(tmp_path_factory):
    """The tiny random BLIP captioner (``models.tiny.tiny_blip``) saved as a model folder."""
    return _saved(tmp_path_factory, "tiny-blip", tiny_blip())
