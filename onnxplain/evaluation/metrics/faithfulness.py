"""Faithfulness of a heatmap: how fast the model's score falls (rises) when the pixels it calls
relevant are removed (inserted).

* Region perturbation / pixel flipping -- W. Samek, A. Binder, G. Montavon, S. Lapuschkin,
  K.-R. Müller (2017), "Evaluating the visualization of what a deep neural network has learned",
  IEEE TNNLS; ``region=1`` is the pixel flipping of S. Bach et al. (2015), "On pixel-wise
  explanations for non-linear classifier decisions by layer-wise relevance propagation", PLOS ONE.
  Summarised by AOPC (:func:`aopc`).
* Deletion / insertion -- V. Petsiuk, A. Das, K. Saenko (2018), "RISE: Randomized input sampling
  for explanation of black-box models", BMVC. Summarised by the area under the curve
  (:meth:`Curve.auc`).

All four perturb *units* (regions, or pixels = all channels at one (h, w)) in a ranked order, a
fixed number of units per step. Every perturbed image is built chunk by chunk inside the driver's
``rows(start, stop)`` callback: row ``r`` is image ``r // (S+1)`` at step ``r % (S+1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxplain.errors import OnnxplainError

MAX_STEPS = 64  # default cap on the number of steps of region perturbation
BLUR_SIGMA = 0.05  # the blur baseline's sigma, as a fraction of the image's larger side


@dataclass
class Curve:
    """A perturbation curve: ``scores[:, k]`` is the explained score after step ``k``.

    ``fraction[k]`` is the fraction of units (regions; pixels for deletion/insertion) perturbed
    (deletion, MoRF, LeRF) or inserted (insertion) after step ``k``: ``fraction[0] = 0``,
    ``fraction[-1] = 1``.
    """

    fraction: np.ndarray  # [S+1]
    scores: np.ndarray  # [N, S+1]

    def auc(self) -> np.ndarray:
        """[N] trapezoid area under ``scores`` over ``fraction`` (which spans [0, 1])."""
        s, dx = self.scores, np.diff(self.fraction)
        return ((s[:, 1:] + s[:, :-1]) / 2 * dx).sum(axis=1)


def aopc(curve: Curve) -> np.ndarray:
    """[N] Samek et al. (2017)'s area over the MoRF perturbation curve:
    ``AOPC = 1/(L+1) * sum_{k=0..L} (f(x^(0)) - f(x^(k)))``; higher is better for MoRF (for LeRF,
    lower is better)."""
    s = curve.scores
    return (s[:, :1] - s).mean(axis=1)


# ---- checks ---------------------------------------------------------------------------------------
def _check(x, heatmap, target):
    x = np.asarray(x)
    if x.ndim != 4:
        raise OnnxplainError(f"x must be [N, C, H, W], got shape {list(x.shape)}")
    x = x.astype(np.float32, copy=False)
    h = np.asarray(heatmap, dtype=np.float64)
    if h.shape != (x.shape[0],) + x.shape[2:]:
        raise OnnxplainError(
            f"heatmap must be [N, H, W] = {[x.shape[0], *x.shape[2:]]} to match x, got {list(h.shape)}"
        )
    if not np.all(np.isfinite(h)):
        raise OnnxplainError("heatmap has non-finite values (nan or inf)")
    t = np.asarray(target)
    if t.ndim == 0:
        t = np.full(len(x), t)
    if t.size == 0:
        t = t.astype(np.int64)
    if t.shape != (len(x),) or not np.issubdtype(t.dtype, np.integer):
        raise OnnxplainError(
            f"target must be {len(x)} integer class indices (one per image), got {t.dtype} of shape {list(t.shape)}"
        )
    if np.any(t < 0):
        raise OnnxplainError(f"target must be resolved class indices >= 0, got {int(t.min())}")
    return x, h, t.astype(np.int64)


def _int_at_least_1(v, name):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise OnnxplainError(f"{name} must be an integer >= 1, got {v!r}")
    return int(v)


# ---- fills / baselines ----------------------------------------------------------------------------
def blur(x: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """Each image and channel of ``x`` [N, C, H, W] blurred by a Gaussian (skimage.filters.gaussian)
    of ``sigma`` pixels (default 5% of the larger side), Petsiuk et al. (2018)'s insertion start."""
    from skimage.filters import gaussian

    s = BLUR_SIGMA * max(x.shape[2:]) if sigma is None else float(sigma)
    out = np.empty_like(x)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            out[n, c] = gaussian(x[n, c].astype(np.float64), sigma=s, preserve_range=True)
    return out


def fill_image(x: np.ndarray, fill, seed: int = 0) -> np.ndarray:
    """What perturbed pixels take, [N, C, H, W] like ``x``:
    ``"uniform"``: U[min(x_n), max(x_n)] per pixel and channel of image n (Samek et al. 2017),
    drawn from ``default_rng([seed, n])``; ``"mean"``: the image's per-channel mean; ``"blur"``:
    :func:`blur`; a number: that constant; an array: x's shape (or broadcastable to it). The mean
    and constant fills are occlusion's (:func:`onnxplain.methods.occlusion.fill_source`)."""
    from onnxplain.methods.occlusion import fill_source

    if isinstance(fill, str):
        if fill == "uniform":
            out = np.empty_like(x)
            for n in range(len(x)):
                rng = np.random.default_rng([int(seed), n])
                out[n] = rng.uniform(float(x[n].min()), float(x[n].max()), size=x.shape[1:])
            return out
        if fill == "blur":
            return blur(x)
        if fill != "mean":
            raise OnnxplainError(f"fill must be 'uniform', 'mean', 'blur', a number or an array, not '{fill}'")
    try:
        return fill_source(x, (2, 3), fill, None)
    except (ValueError, TypeError):
        raise OnnxplainError(f"fill/baseline must broadcast to x's shape {list(x.shape)}") from None


# ---- ranking --------------------------------------------------------------------------------------
def region_ranks(heatmap: np.ndarray, region: int, order: str = "morf") -> np.ndarray:
    """[N, H, W] int: the rank of the region containing each pixel. Regions are the non-overlapping
    ``region x region`` tiles in raster order (border tiles smaller when ``region`` does not divide
    H or W), scored by their summed relevance; rank 0 = most relevant (``"morf"``) or least
    relevant (``"lerf"``), ties broken by raster order (stable sort)."""
    n, hh, ww = heatmap.shape
    rh, rw = -(-hh // region), -(-ww // region)
    padded = np.zeros((n, rh * region, rw * region))
    padded[:, :hh, :ww] = heatmap
    rel = padded.reshape(n, rh, region, rw, region).sum(axis=(2, 4)).reshape(n, rh * rw)
    key = -rel if order == "morf" else rel
    perm = np.argsort(key, axis=1, kind="stable")  # perm[n, j]: the region perturbed j-th
    rank = np.empty_like(perm)
    np.put_along_axis(rank, perm, np.arange(rh * rw)[None], axis=1)
    rid = (np.arange(hh)[:, None] // region) * rw + np.arange(ww)[None, :] // region
    return rank[:, rid]


def step_counts(units: int, steps: int) -> np.ndarray:
    """[S+1] how many units are perturbed after each step, ``S = min(steps, units)``: 0, ..., units,
    as evenly spaced as integers allow."""
    s = min(steps, units)
    return np.arange(s + 1) * units // s


# ---- the curve ------------------------------------------------------------------------------------
def _curve(drv, x, ranks, counts, other, target, insert, score, batch_size, progress, units=None) -> Curve:
    """Score every image at every step: pixels whose rank < counts[k] take ``other`` (deletion) or
    keep x with the rest ``other`` (insertion). ``fraction = counts / units`` (default: the last count)."""
    from onnxplain.runtime.driver import SCORE, class_scores

    if score not in ("logit", "softmax"):
        raise OnnxplainError(f"score must be 'logit' or 'softmax', not '{score}'")
    n, k1 = len(x), len(counts)
    keep, swap = (other, x) if insert else (x, other)

    def rows(i, j):
        r = np.arange(i, j)
        img, k = r // k1, r % k1
        hit = ranks[img] < counts[k][:, None, None]
        return np.where(hit[:, None], swap[img], keep[img]).astype(np.float32, copy=False)

    fraction = counts / (counts[-1] if units is None else units)
    if n == 0:
        return Curve(fraction=fraction, scores=np.zeros((0, k1)))
    total = n * k1
    tt = np.repeat(target, k1)
    if score == "logit":
        s = drv.score_rows(rows, total, tt, batch_size=batch_size, progress=progress)
    else:
        y = drv.outputs_rows(rows, total, batch_size=batch_size, progress=progress)[SCORE]
        classes = drv.per_class(y).shape[1]
        if np.any(tt >= classes):
            raise OnnxplainError(f"target out of range: the model has {classes} classes")
        s = class_scores(drv, y, tt, "softmax")
    return Curve(fraction=fraction, scores=np.asarray(s, dtype=np.float64).reshape(n, k1))


def region_perturbation(
    drv,
    x,
    heatmap,
    target,
    *,
    region: int = 8,
    order: str = "morf",
    steps=None,
    fill="uniform",
    seed: int = 0,
    score: str = "logit",
    fraction: float = 1.0,
    batch_size=None,
    progress=None,
) -> Curve:
    """Samek et al. (2017), "Evaluating the visualization of what a deep neural network has
    learned": rank the non-overlapping ``region x region`` patches by summed relevance; at step k
    the k most (``order="morf"``) or least (``"lerf"``) relevant patches are replaced by ``fill``
    (see :func:`fill_image`). ``region=1`` is pixel flipping (Bach et al. 2015). ``steps``: curve
    steps (default one per region, capped at 64: several regions per step when there are more).
    ``scores[:, 0]`` is the unperturbed score; ``fraction`` is the fraction of regions replaced.
    ``fraction`` (0-1] stops the curve once that share of the regions is replaced (Samek et al.
    perturb the first L = 100 regions of a 224 x 224 image, about 16%): the steps then resolve the
    start of the curve, where explanations differ, rather than its common tail."""
    x, h, t = _check(x, heatmap, target)
    region = _int_at_least_1(region, "region")
    if order not in ("morf", "lerf"):
        raise OnnxplainError(f"order must be 'morf' or 'lerf', not '{order}'")
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, (int, float, np.integer, np.floating))
        or not 0 < fraction <= 1
    ):
        raise OnnxplainError(f"fraction must be in (0, 1], got {fraction!r}")
    units = -(-x.shape[2] // region) * -(-x.shape[3] // region)
    used = max(1, int(np.ceil(fraction * units - 1e-9)))
    steps = min(used, MAX_STEPS) if steps is None else _int_at_least_1(steps, "steps")
    other = fill_image(x, fill, seed)
    return _curve(
        drv,
        x,
        region_ranks(h, region, order),
        step_counts(used, steps),
        other,
        t,
        False,
        score,
        batch_size,
        progress,
        units=units,
    )


def _petsiuk(drv, x, heatmap, target, steps, baseline, score, batch_size, progress, insert) -> Curve:
    x, h, t = _check(x, heatmap, target)
    steps = _int_at_least_1(steps, "steps")
    if isinstance(baseline, str) and baseline not in ("blur", "mean", "uniform"):
        raise OnnxplainError(f"baseline must be 'blur', 'mean', 'uniform', a number or an array, not '{baseline}'")
    other = fill_image(x, baseline)
    counts = step_counts(x.shape[2] * x.shape[3], steps)
    return _curve(drv, x, region_ranks(h, 1, "morf"), counts, other, t, insert, score, batch_size, progress)


def deletion(
    drv, x, heatmap, target, *, steps: int = 64, baseline=0.0, score: str = "softmax", batch_size=None, progress=None
) -> Curve:
    """Petsiuk et al. (2018), "RISE", deletion: remove pixels (all channels at one (h, w)) most
    relevant first, replacing them by ``baseline`` (a number, ``"blur"``, ``"mean"`` or an array
    like x), over ``steps`` equal steps; ``scores[:, 0] = f(x)``, ``scores[:, -1] = f(baseline)``.
    The AUC (:meth:`Curve.auc`) of the class probability: lower is better."""
    return _petsiuk(drv, x, heatmap, target, steps, baseline, score, batch_size, progress, insert=False)


def insertion(
    drv, x, heatmap, target, *, steps: int = 64, baseline="blur", score: str = "softmax", batch_size=None, progress=None
) -> Curve:
    """Petsiuk et al. (2018), "RISE", insertion: start from ``baseline`` (default x blurred with a
    Gaussian of sigma 5% of the image side) and insert x's pixels most relevant first;
    ``scores[:, 0] = f(baseline)``, ``scores[:, -1] = f(x)``. AUC: higher is better."""
    return _petsiuk(drv, x, heatmap, target, steps, baseline, score, batch_size, progress, insert=True)
