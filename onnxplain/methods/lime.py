"""Black-box explanations over superpixels: LIME and KernelSHAP, driven from Python.

Both explain one image at a time through :class:`onnxplain.runtime.driver.Driver` (batched forward
passes of perturbed copies; fixed-batch-1 models handled there) and share:

**Superpixels.** The input item is turned into an HWC float image (channels on axis 1 of the
input, NCHW, by default; ``channel_axis=-1``/3 of the Explainer: NHWC), min-max scaled to [0, 1],
and segmented with scikit-image: ``"slic"`` (default; ``n_segments`` 50, ``compactness`` 10,
``sigma`` 1), ``"quickshift"`` (``kernel_size`` 4 scaled down below 64 px, ``max_dist`` 200,
``ratio`` 0.2, as in the LIME code) or ``"felzenszwalb"`` (``scale`` 100 scaled by image size,
``sigma`` 0.5, ``min_size`` 1/400 of the image). ``segments=`` ([H, W] or [N, H, W] integer
labels) skips the segmentation. Labels are renumbered 0..K-1.

**Perturbations.** A binary vector ``z`` over the K superpixels keeps the superpixels with
``z_k = 1`` and fills the others: ``fill="blur"`` (default) with the item blurred (Gaussian, sigma a
quarter of the short side), ``"image_mean"`` (``"mean"`` is the same) with the item's per-channel
mean, ``"segment_mean"`` with the superpixel's own mean colour (per channel; the LIME authors'
``hide_color=None``), or a number. The superpixel's own mean hides nothing on a flat-coloured
object (the superpixel *is* its mean). Share of the top-ranked pixels (as many as the object has)
inside the object, LIME on 16 demo shapes (seeds 2024 / 123): segment_mean 0.58 / 0.51, 0 0.42 / 0.47,
image_mean 0.81 / 0.69, blur 0.81 / 0.85.

**LIME** (Ribeiro, Singh & Guestrin, KDD 2016). ``samples`` vectors (default 1000; the first is
all ones, as in the authors' code; each other one hides a uniformly drawn number 1..K of
uniformly drawn superpixels), seeded by ``seed``. Each sample is weighted by the exponential
kernel ``sqrt(exp(-d^2 / kernel_width^2))`` of its cosine distance ``d`` to the all-ones vector;
``kernel_width`` defaults to 0.25, the value of the authors' image explainer
(``lime_image.LimeImageExplainer(kernel_width=.25)``). The explanation is the weighted ridge fit
(scikit-learn ``Ridge(alpha=alpha)``, ``alpha`` 1 as in the authors' code, with an intercept) of
the scores on ``z``.

**KernelSHAP** (Lundberg & Lee, NeurIPS 2017). Shapley kernel ``pi(z) = (K-1) / (C(K,|z|) |z|
(K-|z|))``. When ``2^K - 2 <= samples`` every coalition is enumerated with its exact weight;
otherwise ``samples`` coalitions are drawn (coalition size ``s`` with probability proportional to
``(K-1)/(s(K-s))``, then a uniform subset of that size), each with weight 1 (a Monte-Carlo
estimate of the same weighted regression). The empty and full coalitions are enforced exactly by
the constrained solve: ``phi_0 = f(all hidden)``, ``sum_k phi_k = f(x) - f(all hidden)``
(efficiency), the last weight eliminated and the rest a weighted least-squares fit.

Output: ``attribution`` [N, 1, H, W] (each pixel carries its superpixel's weight); in
``outputs``: ``segments`` [N, H, W] (int64), ``superpixel_weights`` [N, Kmax] (float64; zero past
an item's own K), ``intercept`` [N] (LIME: the ridge intercept; KernelSHAP: f(all hidden)),
``score`` [N] (f(x), the explained score of the unperturbed input) and the model's own outputs.
"""

from __future__ import annotations

import math

import numpy as np

from onnxplain.errors import OnnxplainError

METHODS = ("lime", "kernelshap")
SEGMENTATIONS = ("slic", "quickshift", "felzenszwalb")
#: what hidden superpixels show: the item's per-channel mean ("mean" is the same), the item blurred
#: (Gaussian, sigma a quarter of its short side), or each superpixel's own mean colour (LIME's code)
FILLS = ("blur", "image_mean", "mean", "segment_mean")


# ---- images and superpixels -----------------------------------------------------------------------
def to_image(item: np.ndarray, channel_axis: int = 1) -> np.ndarray:
    """One input item (no batch axis) as an HWC float64 image scaled to [0, 1].

    ``channel_axis`` refers to the batched input ([N, C, H, W]: 1; [N, H, W, C]: -1 or 3); an item
    of rank 2 is a one-channel image."""
    a = np.asarray(item, dtype=np.float64)
    if a.ndim == 2:
        a = a[..., None]
    elif a.ndim == 3:
        a = np.moveaxis(a, channel_axis % 4 - 1, -1)
    else:
        raise OnnxplainError(f"superpixel methods explain images; an item has shape {list(item.shape)}")
    lo, hi = a.min(), a.max()
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def segment(image: np.ndarray, method: str = "slic", **params) -> np.ndarray:
    """Superpixels of an HWC image in [0, 1]: an [H, W] int64 label map numbered 0..K-1."""
    from skimage import segmentation as seg

    h, w, c = image.shape
    size = min(h, w)
    if method == "slic":
        kw = dict(n_segments=50, compactness=10.0, sigma=1.0, start_label=0)
        kw.update(params)
        labels = seg.slic(image, channel_axis=-1, **kw)
    elif method == "quickshift":
        rgb = image if c == 3 else np.repeat(image[..., :1], 3, axis=-1)  # quickshift works in Lab/RGB
        kw = dict(kernel_size=max(1.0, min(4.0, size / 16)), max_dist=200.0, ratio=0.2)
        kw.update(params)
        labels = seg.quickshift(rgb, channel_axis=-1, **kw)
    elif method == "felzenszwalb":
        kw = dict(scale=100.0 * size / 224, sigma=0.5, min_size=max(1, h * w // 400))
        kw.update(params)
        labels = seg.felzenszwalb(image, channel_axis=-1, **kw)
    else:
        raise OnnxplainError(f"unknown segmentation '{method}' (choose from: {', '.join(SEGMENTATIONS)})")
    return relabel(labels)


def relabel(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0..K-1 (in order of first value)."""
    _, inv = np.unique(np.asarray(labels), return_inverse=True)
    return inv.reshape(np.shape(labels)).astype(np.int64)


def _spatial(x_item: np.ndarray, channel_axis: int):
    """(H, W, axis of channels in the item or None) of one input item."""
    if x_item.ndim == 2:
        return x_item.shape[0], x_item.shape[1], None
    if x_item.ndim != 3:
        raise OnnxplainError(f"superpixel methods explain images; an item has shape {list(x_item.shape)}")
    ax = channel_axis % 4 - 1
    hw = [d for i, d in enumerate(x_item.shape) if i != ax]
    return hw[0], hw[1], ax


class Perturber:
    """Makes perturbed copies of one item from binary vectors over its superpixels."""

    def __init__(self, item: np.ndarray, segments: np.ndarray, fill, channel_axis: int):
        self.item = item
        self.segments = segments
        self.k = int(segments.max()) + 1
        h, w, ax = _spatial(item, channel_axis)
        self.ax = ax
        # the item as [C, H, W]
        chw = item[None] if ax is None else np.moveaxis(item, ax, 0)
        fill = "blur" if fill is None else fill
        if isinstance(fill, str) and fill == "segment_mean":
            flat = chw.reshape(chw.shape[0], -1).astype(np.float64)
            lab = segments.reshape(-1)
            counts = np.bincount(lab, minlength=self.k)
            means = np.stack([np.bincount(lab, weights=ch, minlength=self.k) for ch in flat]) / np.maximum(counts, 1)
            filled = means[:, segments]  # [C, H, W]
        elif isinstance(fill, str) and fill in ("mean", "image_mean"):
            filled = np.broadcast_to(chw.mean(axis=(1, 2), keepdims=True, dtype=np.float64), chw.shape)
        elif isinstance(fill, str) and fill == "blur":
            from scipy.ndimage import gaussian_filter

            sigma = max(1.0, min(chw.shape[1:]) / 4)
            filled = gaussian_filter(chw.astype(np.float64), (0, sigma, sigma), mode="reflect")
        elif isinstance(fill, str):
            raise OnnxplainError(f"fill must be one of {', '.join(FILLS)} or a number, not '{fill}'")
        else:
            filled = np.broadcast_to(np.asarray(fill, dtype=np.float64), chw.shape)
        self.filled = (filled if ax is None else np.moveaxis(filled, 0, ax)).astype(item.dtype)
        if ax is None:
            self.filled = self.filled[0] if self.filled.ndim == 3 else self.filled

    def __call__(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """[S, K] binary -> [S, *item.shape] perturbed items, written into ``out`` ([>= S, *item.shape],
        reused from call to call by the driver) when given."""
        keep = np.asarray(z).astype(bool, copy=False).take(self.segments.ravel(), axis=1)  # [S, H * W]
        keep = keep.reshape(len(z), *self.segments.shape)
        if self.ax is not None:
            keep = np.expand_dims(keep, self.ax + 1)
        out = np.empty((len(z), *self.item.shape), self.item.dtype) if out is None else out[: len(z)]
        np.copyto(out, self.filled)
        np.copyto(out, self.item, where=keep)
        return out

    def rows(self, z: np.ndarray):
        """``rows(a, b)`` for :meth:`onnxplain.runtime.driver.Driver.outputs_rows`: the items perturbed by
        ``z[a:b]``, made in one buffer that every batch reuses."""
        buf = []

        def make(a: int, b: int) -> np.ndarray:
            if not buf or len(buf[0]) < b - a:
                buf[:] = [np.empty((b - a, *self.item.shape), self.item.dtype)]
            return self(z[a:b], buf[0])

        return make


# ---- sampling and fitting -------------------------------------------------------------------------
def subsets(sizes: np.ndarray, k: int, rng) -> np.ndarray:
    """[len(sizes), k] int8: row i has ones at ``sizes[i]`` distinct positions drawn uniformly (the first
    ``sizes[i]`` entries of a uniformly random permutation of 0..k-1)."""
    n = len(sizes)
    perm = rng.permuted(np.broadcast_to(np.arange(k), (n, k)), axis=1)
    z = np.zeros((n, k), dtype=np.int8)
    np.put_along_axis(z, perm, (np.arange(k) < np.asarray(sizes)[:, None]).astype(np.int8), axis=1)
    return z


def lime_samples(k: int, n: int, rng) -> np.ndarray:
    """[n, k] binary: the first all ones; each other hides 1..k uniformly drawn superpixels."""
    z = np.ones((n, k), dtype=np.int8)
    if n > 1:
        z[1:] = 1 - subsets(rng.integers(1, k + 1, size=n - 1), k, rng)
    return z


def lime_kernel(z: np.ndarray, width: float) -> np.ndarray:
    """sqrt(exp(-d^2 / width^2)), d the cosine distance of each row of z to the all-ones vector."""
    z = z.astype(np.float64)
    norm = np.linalg.norm(z, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(norm > 0, z.sum(axis=1) / (norm * math.sqrt(z.shape[1])), 0.0)
    d = 1.0 - cos
    return np.sqrt(np.exp(-(d**2) / width**2))


def lime_fit(z: np.ndarray, y: np.ndarray, weights: np.ndarray, alpha: float = 1.0):
    """Weighted ridge regression (scikit-learn); returns (coefficients [K], intercept)."""
    from sklearn.linear_model import Ridge

    from onnxplain.runtime.driver import one_blas_thread

    model = Ridge(alpha=alpha, fit_intercept=True)
    with one_blas_thread():
        model.fit(z.astype(np.float64), y, sample_weight=weights)
    return model.coef_.astype(np.float64), float(model.intercept_)


def shapley_kernel(k: int, s) -> np.ndarray:
    """pi for coalitions of size s (0 < s < k): (k-1) / (C(k,s) s (k-s))."""
    s = np.asarray(s)
    sizes, at = np.unique(s, return_inverse=True)  # C(k, s) once per distinct size
    comb = np.array([math.comb(k, int(v)) for v in sizes], dtype=np.float64)[at].reshape(s.shape)
    return (k - 1) / (comb * s * (k - s))


def shap_samples(k: int, n: int, rng):
    """(z [S, k] binary, weights [S]) without the empty and full coalitions: all of them with
    their exact kernel weights when 2^k - 2 <= n, else n drawn by the kernel (weights 1)."""
    if k < 2:
        return np.zeros((0, k), dtype=np.int8), np.zeros(0)
    if k < 31 and 2**k - 2 <= n:
        codes = np.arange(1, 2**k - 1, dtype=np.int64)
        z = ((codes[:, None] >> np.arange(k)) & 1).astype(np.int8)
        return z, shapley_kernel(k, z.sum(axis=1))
    sizes = np.arange(1, k)
    p = (k - 1) / (sizes * (k - sizes))
    p = p / p.sum()
    return subsets(rng.choice(sizes, size=n, p=p), k, rng), np.ones(n)


def shap_fit(z: np.ndarray, y: np.ndarray, weights: np.ndarray, f_full: float, f_empty: float) -> np.ndarray:
    """Shapley values phi [K] with phi_0 = f_empty and sum(phi) = f_full - f_empty enforced:
    the last weight is eliminated and the rest fitted by weighted least squares."""
    k = z.shape[1]
    total = f_full - f_empty
    if k == 1 or len(z) == 0:
        return np.full(k, total / max(k, 1))
    z = z.astype(np.float64)
    a = z[:, :-1] - z[:, -1:]
    b = y - f_empty - z[:, -1] * total
    sw = np.sqrt(weights)
    from onnxplain.runtime.driver import one_blas_thread

    with one_blas_thread():
        phi, *_ = np.linalg.lstsq(a * sw[:, None], b * sw, rcond=None)
    return np.append(phi, total - phi.sum())


# ---- the driver -----------------------------------------------------------------------------------
def _segments_for(x, segments, segmentation, seg_params, channel_axis):
    n = len(x)
    if segments is not None:
        s = np.asarray(segments)
        if not np.issubdtype(s.dtype, np.integer):
            raise OnnxplainError(f"segments must be integer labels, got {s.dtype}")
        if s.ndim == 2:
            s = np.broadcast_to(s, (n, *s.shape))
        h, w, _ = _spatial(x[0], channel_axis)
        if s.shape != (n, h, w):
            raise OnnxplainError(f"segments must have shape [{h}, {w}] or [{n}, {h}, {w}], got {list(s.shape)}")
        return [relabel(si) for si in s]
    return [segment(to_image(xi, channel_axis), segmentation, **seg_params) for xi in x]


def explain(
    explainer,
    x: np.ndarray,
    method: str,
    target: np.ndarray | None,
    target_weights=None,
    *,
    segmentation: str = "slic",
    segments=None,
    samples: int | None = None,
    fill="blur",
    seed: int = 0,
    kernel_width: float = 0.25,
    alpha: float = 1.0,
    batch_size: int | None = None,
    progress=None,
    **seg_params,
):
    """LIME / KernelSHAP for ``x`` [N, ...]; returns (attribution [N,1,H,W], targets, outputs)."""
    from onnxplain.runtime.driver import SCORE, for_explainer, scorer

    if method not in METHODS:
        raise OnnxplainError(f"unknown superpixel method '{method}' (choose from: {', '.join(METHODS)})")
    if segmentation not in SEGMENTATIONS:
        raise OnnxplainError(f"unknown segmentation '{segmentation}' (choose from: {', '.join(SEGMENTATIONS)})")
    samples = (1000 if method == "lime" else 2048) if samples is None else int(samples)
    if samples < 1:
        raise OnnxplainError(f"samples must be at least 1, got {samples}")
    if kernel_width <= 0:
        raise OnnxplainError(f"kernel_width must be positive, got {kernel_width}")
    drv = for_explainer(explainer)
    channel_axis = explainer.options.channel_axis
    n = len(x)
    segs = _segments_for(x, segments, segmentation, seg_params, channel_axis)
    base = drv.outputs(x, batch_size)
    chosen, f = scorer(drv, base[SCORE], target, target_weights, "logit")
    f_x = f(base[SCORE], np.arange(n))
    kmax = max(int(s.max()) + 1 for s in segs)
    weights = np.zeros((n, kmax), dtype=np.float64)
    intercept = np.zeros(n, dtype=np.float64)
    attribution = np.zeros((n, 1, *segs[0].shape), dtype=x.dtype)
    rng = np.random.default_rng(seed)
    zs = []
    for i in range(n):
        k = int(segs[i].max()) + 1
        if method == "lime":
            zs.append((lime_samples(k, samples, rng), None))
        else:
            z, w = shap_samples(k, samples, rng)
            zs.append((np.concatenate([z, np.zeros((1, k), np.int8)]), w))  # + the empty coalition
    total = sum(len(z) for z, _ in zs)
    done = [0]
    for i in range(n):
        pert = Perturber(x[i], segs[i], fill, channel_axis)
        z, w = zs[i]
        offset = done[0]

        def report(d, _t, offset=offset):
            if progress is not None:
                progress(offset + d, total)

        y = drv.outputs_rows(pert.rows(z), len(z), batch_size, report)[SCORE]
        s = f(y, np.full(len(z), i))
        done[0] += len(z)
        k = z.shape[1]
        if method == "lime":
            coef, icpt = lime_fit(z, s, lime_kernel(z, kernel_width), alpha)
        else:
            icpt = float(s[-1])  # f(all hidden)
            coef = shap_fit(z[:-1], s[:-1], w, float(f_x[i]), icpt)
        weights[i, :k] = coef
        intercept[i] = icpt
        attribution[i, 0] = coef[segs[i]].astype(x.dtype)
    outputs = {k: v for k, v in base.items() if k != SCORE}
    outputs.update(segments=np.stack(segs), superpixel_weights=weights, intercept=intercept, score=f_x)
    return attribution, chosen, outputs
