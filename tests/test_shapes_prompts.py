"""The ShapesWorld prompt set and its held-out colour-shape pairs."""

import re

from contrastive_diffusers.prompts import PromptItem
from contrastive_diffusers.shapes.prompts import (
    HELD_OUT_PAIRS,
    held_out_pairs,
    shapes_prompts,
    training_pairs,
)
from contrastive_diffusers.shapes.spec import CaptionSpec
from contrastive_diffusers.shapes.world import COLORS, SHAPES, all_pairs


def _pairs(item: PromptItem):
    spec = CaptionSpec.from_dict(item.metadata["spec"])
    return {(o.color, o.shape) for o in spec.objects if o.color}


def test_held_out_pairs_are_fixed_and_every_word_still_trains():
    assert held_out_pairs() == list(HELD_OUT_PAIRS) and len(HELD_OUT_PAIRS) == 6
    assert set(training_pairs()) | set(HELD_OUT_PAIRS) == set(all_pairs())
    assert not set(training_pairs()) & set(HELD_OUT_PAIRS)
    assert {c for c, _ in training_pairs()} == set(COLORS)
    assert {s for _, s in training_pairs()} == set(SHAPES)


def test_training_split_never_uses_held_out_pairs():
    train = shapes_prompts("train", seed=0)
    assert len(train) > 300
    for item in train:
        assert not _pairs(item) & set(HELD_OUT_PAIRS), item.prompt
    assert "held_out" not in {i.category for i in train}


def test_test_split_categories_and_held_out_prompts():
    test = shapes_prompts("test", seed=0)
    categories = {i.category for i in test}
    assert categories == {"single", "two_object", "relation", "count", "no_color", "size", "held_out"}
    held = [i for i in test if i.category == "held_out"]
    assert len(held) == 50
    assert all(_pairs(i) & set(HELD_OUT_PAIRS) for i in held)
    assert {p for i in held for p in _pairs(i) & set(HELD_OUT_PAIRS)} == set(HELD_OUT_PAIRS)
    for item in test:
        if item.category != "held_out":
            assert not _pairs(item) & set(HELD_OUT_PAIRS)
        words = re.findall(r"\w+", item.prompt)
        assert all(w in words for g in item.token_groups for w in g)
        assert item.metadata["world"] == "shapes" and "spec" in item.metadata
    assert len({i.id for i in test}) == len(test)
    assert len({(i.category, i.prompt) for i in test}) == len(test)


def test_fewer_prompts_per_category_are_the_first_of_the_split():
    # the same id names the same prompt: a smaller set is the default split's first prompts
    for split, per in (("test", 3), ("test", 20), ("train", 20)):
        full = {i.id: i for i in shapes_prompts(split)}
        small = shapes_prompts(split, per_category=per)
        assert small and all(full[i.id] == i for i in small)
        assert {int(i.id.rsplit("-", 1)[1]) for i in small} == set(range(per))


def test_deterministic_for_a_seed():
    assert shapes_prompts("test", seed=1) == shapes_prompts("test", seed=1)
    assert shapes_prompts("test", seed=1) != shapes_prompts("test", seed=2)
