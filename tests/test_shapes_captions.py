"""Captions: text, token groups, specs, scenes that satisfy them and negatives that do not."""

import re

import numpy as np
import pytest

from contrastive_diffusers.shapes.captions import (
    CAPTION_KINDS,
    caption_for,
    caption_text,
    negatives_for,
    perturbations,
    sample_spec,
    scenes_for,
)
from contrastive_diffusers.shapes.spec import CaptionSpec, ObjectSpec, evaluate
from contrastive_diffusers.shapes.world import (
    Scene,
    ShapeObject,
    layout_problems,
    sample_scene,
)


def test_benchmark_style_texts_and_groups():
    cases = [
        (CaptionSpec((ObjectSpec("circle", "red"),)), "a red circle", [["red", "circle"]]),
        (CaptionSpec((ObjectSpec("circle", "red"), ObjectSpec("square", "blue"))),
         "a red circle and a blue square", [["red", "circle"], ["blue", "square"]]),
        (CaptionSpec((ObjectSpec("triangle", "green"), ObjectSpec("circle", "yellow")), (0, "above", 1)),
         "a green triangle above a yellow circle", [["green", "triangle"], ["yellow", "circle"]]),
        (CaptionSpec((ObjectSpec("circle", "red", count=2, exact=True),)), "two red circles", [["two", "red", "circles"]]),
        (CaptionSpec((ObjectSpec("circle"),)), "a circle", [["circle"]]),
        (CaptionSpec((ObjectSpec("cross", "orange"), ObjectSpec("square", "blue")), (1, "left of", 0)),
         "a blue square to the left of an orange cross", [["blue", "square"], ["orange", "cross"]]),
    ]
    for spec, text, groups in cases:
        caption = caption_text(spec)
        assert caption.text == text
        assert caption.token_groups == groups


@pytest.mark.parametrize("kind", CAPTION_KINDS)
def test_token_groups_are_words_of_the_caption_and_scenes_satisfy_specs(kind):
    rng = np.random.default_rng(CAPTION_KINDS.index(kind))
    for _ in range(20):
        spec = sample_spec(kind, rng)
        caption = caption_text(spec, kind)
        words = re.findall(r"\w+", caption.text)
        for group in caption.token_groups:
            assert all(w in words for w in group)
        assert len(caption.token_groups) == len(spec.objects)
        scene = scenes_for(spec, rng, distractors=int(rng.integers(2)) if sum(o.count for o in spec.objects) < 3 else 0)
        assert layout_problems(scene) == []
        assert evaluate(scene.objects, spec).success
        for name, negative in negatives_for(scene, caption, rng):
            assert not evaluate(scene.objects, negative.spec).success, (name, negative.text)


def test_caption_for_describes_the_scene_truthfully():
    rng = np.random.default_rng(5)
    for _ in range(100):
        scene = sample_scene(rng)
        for kind in ("single", "no_color", "size", "scene") + (("two_object",) if len(scene.objects) > 1 else ()) + (
                ("relation",) if scene.relation else ()):
            caption = caption_for(scene, kind)
            assert evaluate(scene.objects, caption.spec).success
    with pytest.raises(ValueError, match="relation"):
        caption_for(Scene((ShapeObject("circle", "red"),)), "relation")


def test_colour_binding_and_count_semantics():
    red_circle_blue_square = CaptionSpec((ObjectSpec("circle", "red"), ObjectSpec("square", "blue")))
    swapped = [ShapeObject("circle", "blue", x=0.25, y=0.5), ShapeObject("square", "red", x=0.75, y=0.5)]
    judgement = evaluate(swapped, red_circle_blue_square)
    assert not judgement.success and "red circle" in judgement.reasons[0]
    three = [ShapeObject("circle", "red", "small", x=x, y=0.5) for x in (0.2, 0.5, 0.8)]
    assert evaluate(three, CaptionSpec((ObjectSpec("circle", "red", count=3, exact=True),))).success
    assert not evaluate(three, CaptionSpec((ObjectSpec("circle", "red", count=2, exact=True),))).success
    assert evaluate(three, CaptionSpec((ObjectSpec("circle", "red"),))).success  # at least one
    assert not evaluate(three, CaptionSpec((ObjectSpec("circle", "red"),)), allow_extra=False).success
    # one object cannot satisfy two requirements
    assert not evaluate(three[:1], CaptionSpec((ObjectSpec("circle"), ObjectSpec("circle", "red")))).success


def test_perturbation_names():
    spec = CaptionSpec((ObjectSpec("circle", "red"), ObjectSpec("square", "blue")), (0, "left of", 1))
    names = [n for n, _ in perturbations(spec, 0)]
    assert {"swap_colors", "swap_shapes", "replace_color", "replace_shape", "opposite_relation",
            "perpendicular_relation"} == set(names)


def test_perturbations_within_a_pool_of_pairs_never_name_another_pair():
    from contrastive_diffusers.shapes.prompts import held_out_pairs, training_pairs

    pool, held_out = set(training_pairs()), set(held_out_pairs())
    rng = np.random.default_rng(3)
    named_held_out = 0
    for k in range(400):
        spec = sample_spec(("two_object", "relation", "single", "count")[k % 4], rng, list(pool))
        free = perturbations(spec, [7, k])
        named_held_out += any((o.color, o.shape) in held_out for _, s in free for o in s.objects if o.color)
        assert free == perturbations(spec, [7, k], None)  # no pool: the edits as before, draw for draw
        for name, edited in perturbations(spec, [7, k], pool):
            assert all((o.color, o.shape) in pool for o in edited.objects if o.color), (spec, name, edited)
    assert named_held_out > 40  # without a pool, training negatives name held-out pairs
    # "a red circle and a blue triangle": swapping colours would make "red triangle" (held out)
    spec = CaptionSpec((ObjectSpec("circle", "red"), ObjectSpec("triangle", "blue")))
    assert ("red", "triangle") in held_out
    assert "swap_colors" in [n for n, _ in perturbations(spec, 0)]
    assert "swap_colors" not in [n for n, _ in perturbations(spec, 0, pool)]


def test_world_clip_masks_candidates_true_of_the_image():
    from types import SimpleNamespace

    from contrastive_diffusers.shapes.train.world_clip import true_for

    scene = Scene((ShapeObject("circle", "red", x=0.25, y=0.5), ShapeObject("square", "blue", x=0.75, y=0.5)))
    data = SimpleNamespace(scenes=[scene])
    specs = [CaptionSpec((ObjectSpec("circle", "red"), ObjectSpec("square", "blue"))),  # its own caption
             CaptionSpec((ObjectSpec("circle", "red"),)),  # another image's caption, true here too
             CaptionSpec((ObjectSpec("circle", "blue"), ObjectSpec("square", "red")))]  # a real negative
    assert true_for(data, [0], specs).tolist() == [[True, True, False]]


def test_spec_json_round_trip():
    rng = np.random.default_rng(9)
    for kind in CAPTION_KINDS:
        spec = sample_spec(kind, rng)
        assert CaptionSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("data, message", [
    # a dropped key would weaken what the oracle checks: any colour for "colour", no relation for "relations"
    ({"objects": [{"shape": "circle", "colour": "red"}]}, r"unknown key\(s\) 'colour'.*valid keys: shape, color"),
    ({"objects": [{"shape": "circle"}, {"shape": "square"}], "relations": [0, "above", 1]}, r"unknown key\(s\) 'relations'"),
    ({"objects": [{"shape": "circle", "sizes": "small"}]}, r"'sizes'"),
    ({"objects": [{"shape": "circle", "exact": "false"}]}, r"exact 'false'; give true or false"),
    ({"objects": [{"shape": "circle", "count": 2.7}]}, r"count 2\.7; give a whole number"),
    ({"objects": [{"color": "red"}]}, r"has no 'shape'"),
    ({"objects": "a red circle"}, r"needs 'objects': a list"),
    ({"objects": ["circle"]}, r"must be a dict"),
    ({"objects": [{"shape": "circle"}, {"shape": "square"}], "relation": ["above", 0, 1]}, r"\[object index, relation"),
    ([], r"Expected a caption spec as a dict"),
])
def test_spec_dicts_with_unknown_keys_or_wrong_types_are_refused(data, message):
    with pytest.raises(ValueError, match=message):
        CaptionSpec.from_dict(data)


def test_train_clip_leaves_captions_true_of_an_image_out_of_its_softmax(monkeypatch):
    # a batch of scenes that all carry one caption: every other image's caption is true of each
    # image, so only its own column (the target) and its hard negatives may stay finite
    from types import SimpleNamespace

    import torch
    import torch.nn.functional as F

    from contrastive_diffusers.models.tiny_tokenizers import tiny_tokenizer
    from contrastive_diffusers.shapes.model import ShapesModelConfig, build_clip
    from contrastive_diffusers.shapes.train.data import DEFAULT_KIND_WEIGHTS, ShapesData, make_data
    from contrastive_diffusers.shapes.train.world_clip import train_clip

    one = make_data(1, 0, 32, DEFAULT_KIND_WEIGHTS)
    data = ShapesData(one.images.repeat(4, 1, 1, 1), one.captions * 4, one.kinds * 4, one.scenes * 4, one.specs * 4)
    clip, processor = build_clip(ShapesModelConfig(), tiny_tokenizer(), 0)
    seen = []
    real = F.cross_entropy
    monkeypatch.setattr(F, "cross_entropy", lambda logits, target: seen.append(logits.detach()) or real(logits, target))
    args = SimpleNamespace(seed=0, device="cpu", batch_size=4, clip_negatives=2, clip_steps=1, clip_lr=1e-4,
                           log_every=1)
    log = {"phases": {}}
    train_clip(clip, processor, data, args, log, None)
    image_rows = seen[0]  # (4 images, 4 captions + 4 x 2 negatives)
    assert image_rows.shape == (4, 12)
    diagonal = torch.eye(4, dtype=torch.bool)
    assert torch.isfinite(image_rows[:, :4][diagonal]).all()
    assert torch.isneginf(image_rows[:, :4][~diagonal]).all()
    assert torch.isfinite(image_rows[:, 4:]).any()  # the hard negatives are false of the scene
    assert log["phases"]["clip"]["negatives"]["true_candidates"] == "left out of the softmax"
