"""How alike two attribution maps are: Spearman rank correlation and SSIM.

Adebayo et al. 2018, "Sanity checks for saliency maps" (NeurIPS), compare a map with the map of a
randomised model by the Spearman rank correlation of the maps (signed, and of their absolute
values) and by the structural similarity index (Wang et al. 2004, "Image quality assessment: from
error visibility to structural similarity", IEEE TIP) of the maps scaled to [0, 1].
"""

from __future__ import annotations

import numpy as np


def ranks(a) -> np.ndarray:
    """Ranks 1..n of the flattened ``a``, tied values sharing their mean rank (float64)."""
    v = np.asarray(a, dtype=np.float64).ravel()
    order = np.argsort(v, kind="stable")
    sorted_v = v[order]
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    ends = np.r_[starts[1:], len(v)]
    mean_rank = (starts + ends + 1) / 2.0  # ranks starts+1 .. ends, averaged
    r = np.empty(len(v))
    r[order] = np.repeat(mean_rank, ends - starts)
    return r


def spearman(a, b) -> float:
    """Spearman's rank correlation of two maps (Pearson correlation of their ranks); NaN when
    either map is constant."""
    ra, rb = ranks(a), ranks(b)
    if ra.size != rb.size:
        raise ValueError(f"maps differ in size: {np.shape(a)} vs {np.shape(b)}")
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def unit_range(a) -> np.ndarray:
    """``a`` min-max scaled to [0, 1] (a constant map becomes zeros)."""
    a = np.asarray(a, dtype=np.float64)
    lo, hi = a.min(), a.max()
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def ssim(a, b) -> float:
    """SSIM of two [H, W] maps, each min-max scaled to [0, 1] first (data range 1)."""
    from skimage.metrics import structural_similarity

    a, b = unit_range(a), unit_range(b)
    if a.shape != b.shape:
        raise ValueError(f"maps differ in shape: {a.shape} vs {b.shape}")
    win = min(7, *(s if s % 2 else s - 1 for s in a.shape))
    if win < 3:
        return float("nan")
    return float(structural_similarity(a, b, data_range=1.0, win_size=win))


def compare(a, b) -> dict:
    """``{"spearman", "spearman_abs", "ssim"}`` for one pair of maps; SSIM of the absolute maps,
    as Adebayo et al. do for visual comparison."""
    return {
        "spearman": spearman(a, b),
        "spearman_abs": spearman(np.abs(a), np.abs(b)),
        "ssim": ssim(np.abs(a), np.abs(b)),
    }
