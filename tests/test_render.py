"""Colour maps, overlays and grids."""

import numpy as np
import pytest
from PIL import Image

from onnxplain.io import render


def lightness(rgb):
    return np.asarray(rgb, dtype=np.float64) @ np.array([0.299, 0.587, 0.114])


def test_diverging_white_at_zero_and_extremes():
    c = render.diverging(np.array([-2.0, 0.0, 2.0]), scale=2.0)
    neg, zero, pos = c.astype(int)
    assert zero.min() >= 240 and np.ptp(zero) <= 8  # near-white, neutral
    assert neg[2] > neg[0] + 50 and neg[2] > neg[1]  # blue
    assert pos[0] > pos[2] + 50 and pos[0] > pos[1]  # red
    assert lightness(neg) < 80 and lightness(pos) < 80
    # beyond the scale saturates
    np.testing.assert_array_equal(render.diverging(np.array([-9.0, 9.0]), scale=2.0), c[[0, 2]])


def test_diverging_is_symmetric_and_monotonic():
    t = np.linspace(0, 1, 21)
    pos = lightness(render.diverging(t, scale=1.0))
    neg = lightness(render.diverging(-t, scale=1.0))
    assert np.all(np.diff(pos) < 0.5) and np.all(np.diff(neg) < 0.5)  # darker with |a| on both sides
    assert np.abs(pos - neg).max() < 25  # about as dark at the same |a|


def test_sequential_map():
    c = render.sequential(np.array([0.0, 0.5, 1.0]), scale=1.0).astype(int)
    assert lightness(c[0]) > 240 and lightness(c[2]) < 60 and c[2][0] > c[2][2]
    assert np.all(np.diff(lightness(render.sequential(np.linspace(0, 1, 30), scale=1.0))) < 0.5)


def test_robust_scale_ignores_outliers():
    a = np.ones(10_000)
    a[0] = 1e6
    assert render.robust_scale(a) == pytest.approx(1.0)
    assert render.robust_scale(np.zeros(5)) == 1.0
    assert render.robust_scale(np.array([np.nan, 2.0])) == pytest.approx(2.0)
    assert render.shared_scale([np.ones((2, 2)), 3 * np.ones((2, 2))]) == pytest.approx(3.0)


def test_to_2d_sums_channels():
    a = np.random.default_rng(0).normal(size=(3, 4, 5))
    np.testing.assert_allclose(render.to_2d(a), a.sum(0))
    np.testing.assert_allclose(render.to_2d(a.transpose(1, 2, 0), channel_axis=-1), a.sum(0))
    np.testing.assert_allclose(render.to_2d(a[None]), a.sum(0))
    assert render.is_signed("integrated_gradients") and not render.is_signed("saliency")


def test_overlay_shape_dtype_and_neutral_zero():
    img = np.random.default_rng(1).integers(0, 256, (16, 20, 3), dtype=np.uint8)
    out = render.overlay(img, np.random.default_rng(2).normal(size=(16, 20)))
    assert out.shape == (16, 20, 3) and out.dtype == np.uint8
    # a zero map leaves a grey version of the image: no colour anywhere
    grey = render.overlay(img, np.zeros((16, 20)))
    assert np.abs(grey.astype(int) - grey[..., :1].astype(int)).max() <= 1
    # a map of another size is resized; an unsigned map works too
    out = render.overlay(img, np.abs(np.random.default_rng(3).normal(size=(4, 5))), signed=False)
    assert out.shape == (16, 20, 3)
    # a strong positive pixel turns red
    a = np.zeros((16, 20))
    a[3, 4] = 1.0
    hot = render.overlay(np.full((16, 20, 3), 128, np.uint8), a, alpha=1.0).astype(int)
    assert hot[3, 4, 0] > hot[3, 4, 2] + 50
    with pytest.raises(ValueError):
        render.overlay(img, np.zeros((3, 16, 20)))


def test_outline_marks_only_the_boundary():
    img = np.zeros((10, 10, 3), np.uint8)
    mask = np.zeros((10, 10), bool)
    mask[2:8, 2:8] = True
    out = render.outline(img, mask, color=(0, 255, 0))
    green = out[..., 1] == 255
    assert green[2, 2] and green[7, 5] and not green[4, 4] and not green[0, 0]


def test_grid_and_files(tmp_path):
    img = np.random.default_rng(4).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    heat = render.overlay(img, np.random.default_rng(5).normal(size=(32, 32)))
    g = render.grid(
        [[img, heat, heat], [img, heat, None]],
        titles=["image", "gradient", "integrated_gradients"],
        row_titles=["a", "b"],
        colorbars=["signed", ("positive", 0.5)],
        note="scale note",
    )
    assert g.dtype == np.uint8 and g.ndim == 3 and g.shape[2] == 3
    assert g.shape[1] >= 3 * 128 and g.shape[0] >= 2 * 128  # 32 px cells are upscaled to 128
    path = render.save_png(g, tmp_path / "sub" / "grid.png")
    with Image.open(path) as im:
        assert im.size == (g.shape[1], g.shape[0]) and im.mode == "RGB"
    render.save_npy(np.ones((2, 3)), tmp_path / "a.npy")
    assert np.load(tmp_path / "a.npy").shape == (2, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "sub"]
    bar = render.colorbar(200, signed=True, scale=1.5)
    assert bar.shape[1] == 200 and bar[0, 0, 2] > bar[0, 0, 0] and bar[0, -1, 0] > bar[0, -1, 2]
