"""Similarity of two maps: Spearman against scipy's implementation, SSIM on known cases."""

import numpy as np
import pytest
from scipy.stats import spearmanr

from onnxplain.evaluation.metrics.similarity import compare, ranks, spearman, ssim


def test_ranks_average_ties():
    assert ranks([3.0, 1.0, 3.0, 2.0]).tolist() == [3.5, 1.0, 3.5, 2.0]


@pytest.mark.parametrize("ties", [False, True])
def test_spearman_matches_scipy(ties):
    rng = np.random.default_rng(1)
    a = rng.normal(size=(16, 16))
    b = a + rng.normal(size=(16, 16))
    if ties:
        a, b = np.round(a), np.round(b * 2)
    assert spearman(a, b) == pytest.approx(spearmanr(a.ravel(), b.ravel())[0], abs=1e-12)


def test_spearman_monotone_transform_and_reversal():
    a = np.random.default_rng(2).normal(size=(8, 8))
    assert spearman(a, np.exp(a)) == pytest.approx(1.0)
    assert spearman(a, -(a**3)) == pytest.approx(-1.0)
    assert np.isnan(spearman(a, np.ones_like(a)))


def test_ssim_known_cases():
    rng = np.random.default_rng(3)
    a = rng.random((32, 32))
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, 5 * a - 2) == pytest.approx(1.0)  # maps are min-max scaled first
    assert ssim(a, rng.random((32, 32))) < 0.2  # independent noise: no structure in common
    assert ssim(a, 1 - a) < 0  # inverted contrast: negative structure term


def test_compare_signed_and_absolute():
    a = np.random.default_rng(4).normal(size=(12, 12))
    c = compare(a, -a)
    assert c["spearman"] == pytest.approx(-1.0)
    assert c["spearman_abs"] == pytest.approx(1.0)
    assert c["ssim"] == pytest.approx(1.0)
