"""Localisation metrics on synthetic maps with known answers (derived by hand or by brute force)."""

import numpy as np
import pytest

from onnxplain.errors import OnnxplainError
from onnxplain.evaluation.metrics.localisation import pointing_game, relevance_mass, relevance_rank

H = W = 32


def square_mask(top=10, left=10, size=10, h=H, w=W) -> np.ndarray:
    """One [1, h, w] mask with a size x size square at (top, left)."""
    m = np.zeros((1, h, w), dtype=bool)
    m[0, top : top + size, left : left + size] = True
    return m


def peak_at(y, x, h=H, w=W) -> np.ndarray:
    """A [1, h, w] map of zeros with a single 1 at (y, x)."""
    a = np.zeros((1, h, w))
    a[0, y, x] = 1.0
    return a


def brute_pointing(hmap, mask, tol) -> float:
    """Slow oracle: any maximal pixel within Euclidean distance tol of any mask pixel."""
    peaks = np.argwhere(hmap == hmap.max())
    inside = np.argwhere(mask)
    d2 = ((peaks[:, None, :] - inside[None, :, :]) ** 2).sum(-1)
    return float((np.sqrt(d2.min(axis=1)) <= tol).any())


# --- pointing game ---------------------------------------------------------------------------


def test_pointing_peak_inside_and_outside():
    mask = square_mask()  # rows/cols 10..19
    assert pointing_game(peak_at(15, 15), mask).tolist() == [1.0]
    assert pointing_game(peak_at(10, 19), mask).tolist() == [1.0]  # corner pixel is inside
    assert pointing_game(peak_at(2, 2), mask).tolist() == [0.0]
    assert pointing_game(peak_at(15, 20), mask).tolist() == [0.0]  # first pixel right of the square


def test_pointing_tolerance_is_euclidean():
    mask = square_mask()
    side = peak_at(15, 22)  # 3 px right of column 19
    assert pointing_game(side, mask, tolerance=3).tolist() == [1.0]
    assert pointing_game(side, mask, tolerance=2).tolist() == [0.0]
    corner = peak_at(22, 22)  # nearest mask pixel (19, 19): distance sqrt(18) = 4.24
    assert pointing_game(corner, mask, tolerance=4).tolist() == [0.0]  # a square (Chebyshev) dilation would hit at 3
    assert pointing_game(corner, mask, tolerance=4.25).tolist() == [1.0]
    assert pointing_game(corner, mask, tolerance=5).tolist() == [1.0]


def test_pointing_matches_brute_force_on_random_cases():
    rng = np.random.default_rng(0)
    n, h, w = 40, 16, 16
    maps = rng.normal(size=(n, h, w))
    masks = np.zeros((n, h, w), dtype=bool)
    for i in range(n):
        y, x, s = rng.integers(0, 12), rng.integers(0, 12), rng.integers(1, 5)
        masks[i, y : y + s, x : x + s] = True
    for tol in (0, 1, 2.5, 4):
        want = [brute_pointing(maps[i], masks[i], tol) for i in range(n)]
        assert pointing_game(maps, masks, tolerance=tol).tolist() == want
    assert 0 < np.mean(want) < 1  # the cases are not all hits or all misses


def test_pointing_ties_hit_if_any_maximum_inside():
    mask = square_mask()
    a = peak_at(2, 2) + peak_at(15, 15)  # two maxima, one outside, one inside
    assert pointing_game(a, mask).tolist() == [1.0]
    b = peak_at(2, 2) + peak_at(30, 30)  # both outside
    assert pointing_game(b, mask).tolist() == [0.0]


def test_pointing_undefined_cases_are_nan():
    mask = square_mask()
    out = pointing_game(np.full((1, H, W), 0.7), mask)
    assert np.isnan(out).all()  # constant map
    out = pointing_game(peak_at(15, 15), np.zeros((1, H, W), dtype=bool))
    assert np.isnan(out).all()  # empty mask


def test_pointing_batch_is_per_image_and_accepts_01_masks():
    maps = np.concatenate([peak_at(15, 15), peak_at(2, 2), np.zeros((1, H, W))])
    masks = np.concatenate([square_mask()] * 3).astype(np.uint8)
    out = pointing_game(maps, masks)
    assert out.shape == (3,)
    assert out[:2].tolist() == [1.0, 0.0] and np.isnan(out[2])


# --- relevance mass --------------------------------------------------------------------------


def test_mass_of_mask_and_complement():
    mask = square_mask()
    assert relevance_mass(mask.astype(float), mask).tolist() == [1.0]
    assert relevance_mass((~mask).astype(float), mask).tolist() == [0.0]


def test_mass_of_uniform_map_is_area_fraction():
    mask = square_mask(size=10)
    out = relevance_mass(np.full((1, H, W), 0.3), mask)
    assert out[0] == pytest.approx(100 / (H * W), rel=1e-12)


def test_mass_hand_computed_and_ignores_negative_values():
    mask = square_mask()
    a = np.zeros((1, H, W))
    a[0, 12, 12], a[0, 15, 15] = 1.0, 2.0  # 3 inside
    a[0, 0, 0] = 1.0  # 1 outside
    assert relevance_mass(a, mask)[0] == pytest.approx(0.75)
    b = a.copy()
    b[0, 0, 5:30] = -4.0  # negative values outside
    b[0, 11, 11] = -9.0  # and inside
    assert relevance_mass(b, mask)[0] == pytest.approx(0.75)


def test_mass_undefined_cases_are_nan():
    mask = square_mask()
    assert np.isnan(relevance_mass(-np.ones((1, H, W)), mask)).all()  # no positive relevance
    assert np.isnan(relevance_mass(np.zeros((1, H, W)), mask)).all()
    assert np.isnan(relevance_mass(np.ones((1, H, W)), np.zeros((1, H, W), dtype=bool))).all()


# --- relevance rank --------------------------------------------------------------------------


def test_rank_of_mask_is_one():
    mask = square_mask()
    assert relevance_rank(mask.astype(float), mask).tolist() == [1.0]
    assert relevance_rank((~mask).astype(float), mask).tolist() == [0.0]


def test_rank_half_of_the_mask_in_top_k():
    rng = np.random.default_rng(1)
    mask = square_mask(size=10)  # K = 100
    a = np.zeros((1, H, W))
    inside = np.argwhere(mask[0])
    outside = np.argwhere(~mask[0])
    top_in = inside[rng.choice(len(inside), 50, replace=False)]
    top_out = outside[rng.choice(len(outside), 50, replace=False)]
    a[0, top_in[:, 0], top_in[:, 1]] = rng.uniform(2, 3, size=50)
    a[0, top_out[:, 0], top_out[:, 1]] = rng.uniform(2, 3, size=50)
    a[0] += rng.uniform(-1, 1, size=(H, W)) * (a[0] == 0)  # the rest below 1, in any order
    assert relevance_rank(a, mask)[0] == pytest.approx(0.5, abs=1e-12)


def test_rank_matches_top_k_by_argsort_without_ties():
    rng = np.random.default_rng(2)
    n = 20
    maps = rng.normal(size=(n, 16, 16))
    masks = rng.random((n, 16, 16)) < rng.uniform(0.05, 0.5, size=(n, 1, 1))
    want = []
    for hmap, m in zip(maps, masks):
        k = int(m.sum())
        top = np.argsort(-hmap.ravel())[:k]
        want.append(m.ravel()[top].sum() / k)
    assert np.allclose(relevance_rank(maps, masks), want, rtol=0, atol=1e-12)


def test_rank_of_random_map_is_near_area_fraction():
    rng = np.random.default_rng(3)
    mask = square_mask(top=100, left=50, size=64, h=256, w=256)  # K = 4096, area fraction 1/16
    out = relevance_rank(rng.normal(size=(1, 256, 256)), mask)[0]
    # hypergeometric: sd = sqrt(f (1 - f) / K * (M - K) / (M - 1)) ~ 0.0037; 0.02 is > 5 sd
    assert abs(out - 1 / 16) < 0.02


def test_rank_ties_share_the_remaining_slots():
    # 4x4 map, mask of 4 pixels; 2 mask pixels at 5, the other 14 pixels (2 of them in the mask) at 1.
    # Top 4 = the two 5s plus 2 of 14 tied pixels, of which 2/14 are expected inside each:
    # (2 + 2 * 2/14) / 4 = 4/7.
    mask = np.zeros((1, 4, 4), dtype=bool)
    mask[0, 0, :] = True
    a = np.ones((1, 4, 4))
    a[0, 0, 1] = a[0, 0, 3] = 5.0
    assert relevance_rank(a, mask)[0] == pytest.approx(4 / 7, abs=1e-12)
    # tie order does not matter: the same map transposed with the mask transposed gives the same
    assert relevance_rank(a.transpose(0, 2, 1), mask.transpose(0, 2, 1))[0] == pytest.approx(4 / 7, abs=1e-12)


def test_rank_undefined_cases_are_nan():
    mask = square_mask()
    assert np.isnan(relevance_rank(np.full((1, H, W), 2.0), mask)).all()
    assert np.isnan(relevance_rank(peak_at(3, 3), np.zeros((1, H, W), dtype=bool))).all()


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", [pointing_game, relevance_mass, relevance_rank])
def test_bad_input(metric):
    mask = square_mask()
    with pytest.raises(OnnxplainError, match="does not match"):
        metric(np.zeros((1, H, W + 1)), mask)
    with pytest.raises(OnnxplainError, match=r"\[N, H, W\]"):
        metric(np.zeros((H, W)), mask[0])
    with pytest.raises(OnnxplainError, match="boolean or 0/1"):
        metric(peak_at(3, 3), mask * 2)
    with pytest.raises(OnnxplainError, match="boolean or 0/1"):
        metric(peak_at(3, 3), mask * 0.5)
    with pytest.raises(OnnxplainError, match="non-finite"):
        metric(peak_at(3, 3) * np.nan, mask)


def test_pointing_bad_tolerance():
    for tol in (-1, float("nan"), "3", None):
        with pytest.raises(OnnxplainError, match="tolerance"):
            pointing_game(peak_at(3, 3), square_mask(), tolerance=tol)
