"""ShapesWorld scenes and renderer: determinism, layout, JSON round trip."""

import json

import numpy as np
import pytest

from contrastive_diffusers.shapes.render import render, render_array
from contrastive_diffusers.shapes.world import (
    BACKGROUND,
    COLORS,
    PALETTE,
    RELATION_MAX_OFFSET,
    RELATION_MIN_SEPARATION,
    SHAPES,
    Scene,
    ShapeObject,
    layout_problems,
    sample_scene,
)


def test_vocabulary_sizes():
    assert {"circle", "square", "triangle"} <= set(SHAPES) and len(SHAPES) >= 5
    assert len(COLORS) >= 6
    rgb = np.array([PALETTE[c] for c in COLORS], dtype=float)
    distances = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1)[np.triu_indices(len(COLORS), 1)]
    assert distances.min() > 80  # palette colours far apart
    assert min(np.linalg.norm(rgb - np.array(BACKGROUND), axis=1)) > 150


def test_same_seed_same_bytes_different_seed_differs():
    a = render(sample_scene(7), 32).tobytes()
    assert a == render(sample_scene(7), 32).tobytes()
    assert a != render(sample_scene(8), 32).tobytes()
    assert sample_scene(np.random.default_rng(3)) == sample_scene(3)


@pytest.mark.parametrize("size", [32, 64])
def test_render_size_mode_and_colours(size):
    scene = Scene((ShapeObject("square", "red", "large", x=0.5, y=0.5),))
    image = render(scene, size)
    assert image.size == (size, size) and image.mode == "RGB"
    array = np.asarray(image)
    assert tuple(array[size // 2, size // 2]) == PALETTE["red"]
    assert tuple(array[0, 0]) == BACKGROUND


def test_random_scenes_have_valid_layouts_and_clear_relations():
    rng = np.random.default_rng(0)
    for _ in range(200):
        scene = sample_scene(rng)
        assert layout_problems(scene) == []
        assert 1 <= len(scene.objects) <= 3
        pairs = [(o.color, o.shape) for o in scene.objects]
        assert len(set(pairs)) == len(pairs)
        if scene.relation:
            i, name, j = scene.relation
            a, b = scene.objects[i], scene.objects[j]
            along, across = (b.x - a.x, b.y - a.y) if name in ("left of", "right of") else (b.y - a.y, b.x - a.x)
            sign = 1 if name in ("left of", "above") else -1
            assert sign * along >= RELATION_MIN_SEPARATION - 1e-6
            assert abs(across) <= RELATION_MAX_OFFSET + 1e-6


def test_objects_do_not_overlap_in_pixels():
    rng = np.random.default_rng(1)
    for _ in range(30):
        scene = sample_scene(rng, n_objects=3)
        covered = np.zeros((64, 64), dtype=int)
        for obj in scene.objects:
            alone = render_array(Scene((obj,)), 64)
            covered += (np.abs(alone - np.array(BACKGROUND)).sum(-1) > 0)
        assert covered.max() == 1


def test_json_round_trip():
    rng = np.random.default_rng(2)
    for _ in range(50):
        scene = sample_scene(rng)
        assert Scene.from_dict(json.loads(json.dumps(scene.to_dict()))) == scene


def test_validation_names_the_bad_value():
    with pytest.raises(ValueError, match="hexagon"):
        ShapeObject("hexagon", "red")
    with pytest.raises(ValueError, match="pink"):
        ShapeObject("circle", "pink")
    with pytest.raises(ValueError, match="relation"):
        Scene((ShapeObject("circle", "red"),), (0, "left of", 0))
