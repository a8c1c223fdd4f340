import numpy as np
import pytest
import torch
from PIL import Image

from contrastive_diffusers.guidance.visualize import (
    attention_grid,
    colorize,
    overlay_heatmap,
    save_attention_heatmaps,
)


def _luma(rgb):
    rgb = np.asarray(rgb, dtype=np.float64)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def _image(size=64, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def _hot_corner_map():
    m = np.zeros((4, 4), dtype=np.float32)
    m[0, 0] = 1.0  # top-left quadrant
    return m


HOTTEST = colorize(np.array([[0.0, 1.0]]))[0, 1].astype(np.int64)
COLDEST = colorize(np.array([[0.0, 1.0]]))[0, 0].astype(np.int64)


# --- colorize -------------------------------------------------------------------------------


def test_colorize_ramp_dark_to_bright():
    ramp = np.tile(np.linspace(-3.0, 5.0, 50), (2, 1))
    rgb = colorize(ramp)
    assert rgb.shape == (2, 50, 3) and rgb.dtype == np.uint8
    luma = _luma(rgb[0])
    assert luma[0] < luma[-1]
    assert np.all(np.diff(luma) >= -1.0)  # monotone up to rounding
    assert _luma(COLDEST) < 10 and _luma(HOTTEST) > 200


def test_colorize_constant_map_is_uniform_lowest_colour():
    rgb = colorize(np.full((5, 7), 0.3))
    assert rgb.shape == (5, 7, 3)
    assert not np.isnan(rgb.astype(np.float64)).any()
    assert np.all(rgb == rgb[0, 0])
    np.testing.assert_array_equal(rgb[0, 0], COLDEST)


def test_colorize_normalises_per_map():
    a = colorize(np.array([[0.0, 0.5, 1.0]]))
    b = colorize(np.array([[10.0, 60.0, 110.0]]))
    np.testing.assert_array_equal(a, b)


def test_colorize_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        colorize(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        colorize(np.array([[0.0, np.nan]]))


# --- overlay_heatmap ------------------------------------------------------------------------


def test_overlay_size_matches_image():
    out = overlay_heatmap(_image(64), np.random.rand(4, 4))
    assert isinstance(out, Image.Image)
    assert out.size == (64, 64) and out.mode == "RGB"


def test_overlay_non_square_image():
    img = Image.new("RGB", (48, 32), (10, 20, 30))
    assert overlay_heatmap(img, np.random.rand(3, 5)).size == (48, 32)


def test_alpha_zero_returns_original_pixels():
    img = _image(64)
    out = overlay_heatmap(img, _hot_corner_map(), alpha=0.0)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(img))


def test_alpha_zero_with_numpy_images():
    uint8 = np.asarray(_image(16, seed=1))
    out = overlay_heatmap(uint8, np.random.rand(4, 4), alpha=0.0)
    np.testing.assert_array_equal(np.asarray(out), uint8)
    as_float = uint8.astype(np.float32) / 255.0
    out = overlay_heatmap(as_float, np.random.rand(4, 4), alpha=0.0)
    np.testing.assert_array_equal(np.asarray(out), uint8)


def test_alpha_one_returns_pure_heatmap():
    m = _hot_corner_map()
    a = np.asarray(overlay_heatmap(_image(64, seed=0), m, alpha=1.0))
    b = np.asarray(overlay_heatmap(Image.new("RGB", (64, 64), (255, 0, 0)), m, alpha=1.0))
    np.testing.assert_array_equal(a, b)  # the image does not show through
    flat = a.reshape(-1, 3).astype(np.int64)
    assert (flat == HOTTEST).all(axis=1).any()  # the map's maximum is the hottest colour
    assert (flat == COLDEST).all(axis=1).any()


def test_alpha_half_blends():
    img = Image.new("RGB", (8, 8), (200, 200, 200))
    out = np.asarray(overlay_heatmap(img, np.zeros((2, 2)), alpha=0.5)).astype(np.int64)
    expected = np.rint(0.5 * 200 + 0.5 * COLDEST)
    assert np.all(np.abs(out - expected) <= 1)


def test_hot_spot_location_preserved():
    out = np.asarray(overlay_heatmap(_image(64), _hot_corner_map(), alpha=0.6)).astype(np.float64)
    dist = np.linalg.norm(out - HOTTEST, axis=-1)
    quadrants = {
        "tl": dist[:32, :32].min(),
        "tr": dist[:32, 32:].min(),
        "bl": dist[32:, :32].min(),
        "br": dist[32:, 32:].min(),
    }
    assert min(quadrants, key=quadrants.get) == "tl"
    # and on average too, with the heatmap alone
    pure = np.asarray(overlay_heatmap(_image(64), _hot_corner_map(), alpha=1.0)).astype(np.float64)
    mean_dist = np.linalg.norm(pure - HOTTEST, axis=-1)
    tl = mean_dist[:32, :32].mean()
    assert tl < min(mean_dist[:32, 32:].mean(), mean_dist[32:, :32].mean(), mean_dist[32:, 32:].mean())


def test_float16_torch_map():
    m = torch.from_numpy(_hot_corner_map()).to(torch.float16)
    out = overlay_heatmap(_image(64), m, alpha=1.0)
    ref = overlay_heatmap(_image(64), _hot_corner_map(), alpha=1.0)
    assert out.size == (64, 64)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(ref))
    # a noisy float16 map too (no NaNs, right size)
    out = overlay_heatmap(_image(64), torch.rand(8, 8, dtype=torch.float16), alpha=0.5)
    assert out.size == (64, 64)


def test_overlay_validation():
    img = _image(16)
    with pytest.raises(ValueError, match="alpha"):
        overlay_heatmap(img, np.zeros((4, 4)), alpha=1.5)
    with pytest.raises(ValueError, match="alpha"):
        overlay_heatmap(img, np.zeros((4, 4)), alpha=-0.1)
    with pytest.raises(ValueError, match="alpha"):
        overlay_heatmap(img, np.zeros((4, 4)), alpha=float("nan"))
    with pytest.raises(ValueError, match="attention_map"):
        overlay_heatmap(img, np.zeros((4, 4, 2)))
    with pytest.raises(ValueError, match="attention_map"):
        overlay_heatmap(img, np.zeros((0, 4)))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        overlay_heatmap(np.zeros((16, 16), dtype=np.uint8), np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        overlay_heatmap(np.full((16, 16, 3), 2.0), np.zeros((4, 4)))


# --- attention_grid / save_attention_heatmaps -----------------------------------------------


def test_grid_width_default_tile():
    maps = np.random.rand(4, 4, 3).astype(np.float32)
    grid = attention_grid(_image(64), maps, ["a", "cat", "dog"])
    tile = 128  # 64 px image, raised to the 128 px minimum
    assert grid.width == 4 * tile
    assert grid.height > tile  # label strip underneath


def test_grid_tile_size_and_first_tile_is_image():
    img = _image(64)
    maps = [np.random.rand(4, 4), torch.rand(4, 4, dtype=torch.float16)]
    grid = attention_grid(img, maps, ["cat", "dog"], alpha=0.0, tile_size=64)
    assert grid.width == 3 * 64
    arr = np.asarray(grid)
    # alpha 0: every tile is the original image
    for i in range(3):
        np.testing.assert_array_equal(arr[:64, i * 64 : (i + 1) * 64], np.asarray(img))


def test_grid_draws_labels():
    img = Image.new("RGB", (128, 128), (0, 0, 0))
    grid = np.asarray(attention_grid(img, [np.zeros((4, 4))], ["token"]))
    strip = grid[128:, 128:]
    assert (strip < 128).any() and (strip > 200).any()  # dark text on white


def test_grid_long_and_unicode_labels_do_not_fail():
    grid = attention_grid(_image(32), np.random.rand(4, 4, 2), ["x" * 200, "caf\u00e9 \u732b"], tile_size=40)
    assert grid.width == 3 * 40


def test_grid_torch_hwk_and_non_square():
    img = Image.new("RGB", (200, 100), (50, 50, 50))
    grid = attention_grid(img, torch.rand(8, 8, 2), ["a", "b"])
    assert grid.width == 3 * 200
    assert grid.height > 100


def test_grid_mismatched_labels_raise():
    with pytest.raises(ValueError, match="labels"):
        attention_grid(_image(32), np.random.rand(4, 4, 3), ["a", "b"])
    with pytest.raises(ValueError, match="labels"):
        attention_grid(_image(32), [np.random.rand(4, 4)], ["a", "b"])
    with pytest.raises(ValueError, match="labels"):
        attention_grid(_image(32), np.random.rand(4, 4, 2), "ab")
    with pytest.raises(ValueError, match="maps"):
        attention_grid(_image(32), np.random.rand(4, 4), ["a"])
    with pytest.raises(ValueError, match="tile_size"):
        attention_grid(_image(32), np.random.rand(4, 4, 1), ["a"], tile_size=0)


def test_save_attention_heatmaps(tmp_path):
    path = tmp_path / "nested" / "dir" / "attn.png"
    out = save_attention_heatmaps(_image(64), np.random.rand(4, 4, 2), ["cat", "dog"], str(path))
    assert out == path and path.is_file()
    with Image.open(path) as reopened:
        assert reopened.format == "PNG"
        assert reopened.width == 3 * 128
        expected = attention_grid(_image(64), np.random.rand(4, 4, 2), ["cat", "dog"])
        assert reopened.size == expected.size
