"""Localisation metrics: does a heatmap put its relevance on the ground-truth object?

Every function takes heatmaps ``[N, H, W]`` (higher = more relevant) and boolean ground-truth
masks ``[N, H, W]`` (0/1 numeric masks are accepted too) and returns one float per image,
``nan`` where the score is undefined for that image (empty mask, constant map, no positive
relevance).
"""

import numpy as np
from scipy.ndimage import distance_transform_edt

from onnxplain.errors import OnnxplainError


def check_maps(heatmap, mask) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(heatmap float64 [N,H,W], mask bool [N,H,W])``; OnnxplainError on bad input."""
    h = np.asarray(heatmap)
    m = np.asarray(mask)
    if h.ndim != 3:
        raise OnnxplainError(f"heatmap must be [N, H, W], got shape {h.shape}")
    if m.shape != h.shape:
        raise OnnxplainError(f"mask shape {m.shape} does not match heatmap shape {h.shape}")
    if not np.issubdtype(h.dtype, np.number) or np.iscomplexobj(h):
        raise OnnxplainError(f"heatmap must be real numbers, got dtype {h.dtype}")
    h = h.astype(np.float64)
    if not np.isfinite(h).all():
        raise OnnxplainError("heatmap contains non-finite values (nan or inf)")
    return h, as_mask(m)


def as_mask(m, what: str = "mask") -> np.ndarray:
    """``m`` as a bool array: bool, or numbers that are all 0 or 1; OnnxplainError otherwise."""
    m = np.asarray(m)
    if m.dtype != bool:
        if not np.issubdtype(m.dtype, np.number) or not np.isin(m, (0, 1)).all():
            raise OnnxplainError(f"{what} must be boolean or 0/1, got dtype {m.dtype} with other values")
        m = m.astype(bool)
    return m


def pointing_game(heatmap, mask, tolerance: float = 0) -> np.ndarray:
    """Pointing game (Zhang et al. 2016/2018, "Top-down neural attention by excitation backprop",
    ECCV / IJCV): 1.0 (a hit) when the heatmap's maximum lies inside the mask dilated by a
    Euclidean disk of radius ``tolerance`` pixels (a pixel at distance <= tolerance from the mask
    counts; the paper uses 15 px at 224x224), else 0.0.

    Ties for the maximum: a hit if ANY maximal pixel is inside the dilated mask. A constant map
    (every pixel maximal, no point) and an empty mask give nan. float64 [N].
    """
    h, m = check_maps(heatmap, mask)
    if (
        isinstance(tolerance, bool)
        or not isinstance(tolerance, (int, float, np.integer, np.floating))
        or not tolerance >= 0
    ):
        raise OnnxplainError(f"tolerance must be a number >= 0, got {tolerance!r}")
    out = np.full(len(h), np.nan)
    for i, (hi, mi) in enumerate(zip(h, m)):
        if mi.any() and hi.max() > hi.min():
            dist = distance_transform_edt(~mi)  # Euclidean distance of each pixel to the mask
            peak = hi == hi.max()
            out[i] = float((dist[peak] <= tolerance).any())
    return out


def relevance_mass(heatmap, mask) -> np.ndarray:
    """Relevance mass accuracy (Arras et al. 2022, "CLEVR-XAI: a benchmark dataset for the ground
    truth evaluation of neural network explanations", Information Fusion): the positive relevance
    inside the mask divided by the total positive relevance; negative values are ignored.

    1 = all positive relevance on the object. nan for an empty mask or a map with no positive
    value. float64 [N].
    """
    h, m = check_maps(heatmap, mask)
    pos = np.maximum(h, 0.0)
    inside = (pos * m).sum(axis=(1, 2))
    total = pos.sum(axis=(1, 2))
    defined = m.any(axis=(1, 2)) & (total > 0)
    return np.where(defined, inside / np.where(total > 0, total, 1.0), np.nan)


def relevance_rank(heatmap, mask) -> np.ndarray:
    """Relevance rank accuracy (Arras et al. 2022, CLEVR-XAI): with K = the number of mask pixels,
    the fraction of the K highest-relevance pixels (raw values) that lie inside the mask.

    Ties at the K-th highest value are shared: pixels strictly above it count fully, and the
    remaining slots are split evenly over the pixels equal to it (the expected score under a
    uniformly random tie break; deterministic and independent of pixel order). nan for an empty
    mask or a constant map. float64 [N].
    """
    h, m = check_maps(heatmap, mask)
    out = np.full(len(h), np.nan)
    for i, (hi, mi) in enumerate(zip(h, m)):
        v, inside = hi.ravel(), mi.ravel()
        k = int(inside.sum())
        if k == 0 or v.max() == v.min():
            continue
        kth = np.sort(v)[::-1][k - 1]
        above, tied = v > kth, v == kth
        share = (k - above.sum()) / tied.sum()  # each tied pixel's fraction of a top-K slot
        out[i] = ((above & inside).sum() + share * (tied & inside).sum()) / k
    return out
