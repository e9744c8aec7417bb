"""Pillow line charts: ticks, size, every series drawn in its colour, gaps at non-finite points."""

import numpy as np
import pytest

from onnxplain.io.plots import PALETTE, _ticks, line_chart


def test_ticks_are_round_and_cover_the_range():
    assert _ticks(0.0, 1.0).tolist() == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    t = _ticks(-0.13, 0.91)
    assert t[0] >= -0.13 and t[-1] <= 0.91 and 0.0 in t.tolist()
    assert not np.signbit(t[t == 0]).any()  # no "-0" label


def count(img, color):
    return int(np.all(img == np.array(color, np.uint8), axis=-1).sum())


def test_every_series_is_drawn_in_its_colour():
    x = np.linspace(0, 1, 10)
    img = line_chart({"a": (x, x), "b": (x, 1 - x)}, "title", "x", "y", size=(400, 300))
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert count(img, PALETTE[0]) > 100 and count(img, PALETTE[1]) > 100
    assert count(img, PALETTE[2]) == 0


def test_non_finite_points_leave_a_gap():
    x = np.arange(6.0)
    whole = line_chart({"a": (x, x)}, size=(400, 300))
    gap = line_chart({"a": (x, np.where(x == 3, np.nan, x))}, size=(400, 300))
    assert count(gap, PALETTE[0]) < count(whole, PALETTE[0])


def test_categorical_axis_and_empty_input():
    img = line_chart({"a": (np.arange(3), [1.0, 0.5, 0.2])}, xticklabels=["original", "fc", "conv"], ylim=(0, 1))
    assert img.shape[0] > 300
    with pytest.raises(ValueError):
        line_chart({})


def test_thirty_series_get_thirty_distinct_colours():
    """Any two of the first 30 colours differ by at least 18 CIELAB Delta-E (a clearly visible difference),
    and 30 series in one chart each show their own colour."""
    from skimage.color import rgb2lab

    assert len(PALETTE) >= 30
    lab = rgb2lab(np.asarray(PALETTE[:30], dtype=np.float64)[None] / 255)[0]
    d = np.linalg.norm(lab[:, None] - lab[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert d.min() >= 18
    x = np.arange(10.0)
    img = line_chart({f"s{i}": (x, x * 0 + i) for i in range(30)}, size=(900, 700))
    seen = [bool(np.all(img == np.asarray(c, np.uint8), axis=-1).any()) for c in PALETTE[:30]]
    assert all(seen), [i for i, s in enumerate(seen) if not s]
