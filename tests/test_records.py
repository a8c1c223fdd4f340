"""Run records: plain JSON data with an explicit policy for non-finite numbers, and versions."""

from pathlib import Path

import numpy as np
import pytest
import torch

from contrastive_diffusers import __version__
from contrastive_diffusers.records import jsonable, versions


def test_jsonable():
    data = {1: (1, 2), "x": {2.5: float("nan")}, "t": torch.tensor(3.0), "n": np.int64(4)}
    assert jsonable(data) == {"1": [1, 2], "x": {"2.5": "nan"}, "t": 3.0, "n": 4}


def test_jsonable_non_finite_policy():
    data = {"a": [float("inf"), float("-inf"), 1.5], "p": Path("x/y"), "s": {2}}
    assert jsonable(data, non_finite="null") == {"a": [None, None, 1.5], "p": "x/y", "s": [2]}
    assert jsonable(data)["a"] == ["inf", "-inf", 1.5]
    with pytest.raises(ValueError, match="non_finite must be one of string, null"):
        jsonable(data, non_finite="drop")


def test_versions():
    import accelerate
    import diffusers
    import transformers

    assert versions() == {
        "contrastive_diffusers": __version__,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
    }
    assert list(versions("accelerate"))[-1] == "accelerate"
    assert versions("accelerate")["accelerate"] == accelerate.__version__
