"""Tests for the synthetic shapes task in onnxplain.io.shapes_data."""

import numpy as np
import pytest

from onnxplain.io.shapes_data import CLASS_NAMES, make_shapes


def test_deterministic_per_seed():
    a = make_shapes(20, seed=3)
    b = make_shapes(20, seed=3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    c = make_shapes(20, seed=4)
    assert not np.array_equal(a[0], c[0])


def test_prefix_property():
    small = make_shapes(5, seed=7)
    big = make_shapes(12, seed=7)
    for x, y in zip(small, big):
        np.testing.assert_array_equal(x, y[:5])


@pytest.mark.parametrize("size", [64, 32])
def test_shapes_dtypes_ranges(size):
    images, labels, masks = make_shapes(10, seed=1, size=size)
    assert images.shape == (10, 3, size, size) and images.dtype == np.float32
    assert labels.shape == (10,) and labels.dtype == np.int64
    assert masks.shape == (10, size, size) and masks.dtype == bool
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert np.all(np.isfinite(images))
    assert labels.min() >= 0 and labels.max() < len(CLASS_NAMES)


def test_masks_nonempty_and_all_classes_present():
    _, labels, masks = make_shapes(200, seed=0)
    assert len(CLASS_NAMES) == 5
    area = masks.sum(axis=(1, 2))
    assert area.min() > 0
    # Target covers a modest part of the image, never most of it.
    assert area.max() < 0.25 * masks[0].size
    assert set(labels.tolist()) == set(range(len(CLASS_NAMES)))
    # Roughly balanced classes.
    assert np.bincount(labels, minlength=5).min() >= 20


def test_target_changes_image_only_inside_mask():
    with_t, labels, masks = make_shapes(100, seed=5)
    without_t, labels2, masks2 = make_shapes(100, seed=5, draw_target=False)
    np.testing.assert_array_equal(labels, labels2)
    np.testing.assert_array_equal(masks, masks2)
    diff = np.abs(with_t - without_t).max(axis=1)  # [n, H, W]
    # Outside the mask the two images are bit-identical.
    assert np.all(diff[~masks] == 0)
    # Inside the mask the target visibly changes the image, in every image.
    for d, m in zip(diff, masks):
        assert np.mean(d[m] > 0) > 0.9
        assert d[m].mean() > 0.1


def test_target_colour_independent_of_class():
    # Colour must not give away the label: per-class mean target colour is
    # close to the overall mean.
    images, labels, masks = make_shapes(500, seed=11)
    colours = np.stack([img[:, m].mean(axis=1) for img, m in zip(images, masks)])
    overall = colours.mean(axis=0)
    for k in range(len(CLASS_NAMES)):
        assert np.abs(colours[labels == k].mean(axis=0) - overall).max() < 0.1


def test_empty_and_invalid():
    images, labels, masks = make_shapes(0)
    assert images.shape == (0, 3, 64, 64) and labels.shape == (0,) and masks.shape == (0, 64, 64)
    with pytest.raises(ValueError):
        make_shapes(-1)
