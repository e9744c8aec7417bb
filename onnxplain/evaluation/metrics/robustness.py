"""Robustness and class sensitivity of an explanation method, model-agnostic.

``explain(x, target) -> heatmaps [N, H, W]`` is a callable the caller gives (inputs ``x`` float32
``[N, C, H, W]``, ``target`` int64 ``[N]``); these metrics only call it on perturbed inputs or
other targets and compare the maps.
"""

import numpy as np

from onnxplain.errors import OnnxplainError
from onnxplain.evaluation.metrics.similarity import compare


def check_batch(x, target, name: str = "target") -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(x [N,C,H,W], target int64 [N])`` (``name`` for the message); OnnxplainError on bad input."""
    x = np.asarray(x)
    if x.ndim != 4 or len(x) == 0:
        raise OnnxplainError(f"x must be a non-empty [N, C, H, W] batch, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise OnnxplainError(f"x must be floating point, got dtype {x.dtype}")
    t = np.asarray(target)
    if t.shape != (len(x),) or not np.issubdtype(t.dtype, np.integer) or (t < 0).any():
        raise OnnxplainError(f"{name} must be {len(x)} class indices >= 0, got {t.dtype} of shape {t.shape}")
    return x, t.astype(np.int64)


def call(explain, x: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``explain(x, target)`` as float64 [N, H, W], checked against the batch."""
    maps = np.asarray(explain(x, target), dtype=np.float64)
    n, _, h, w = x.shape
    if maps.shape != (n, h, w):
        raise OnnxplainError(f"explain returned shape {maps.shape}, expected {(n, h, w)}")
    return maps


def max_sensitivity(
    explain, x, target, *, radius: float = 0.02, samples: int = 10, seed: int = 0, progress=None
) -> np.ndarray:
    """Max-sensitivity (Yeh et al. 2019, "On the (in)fidelity and sensitivity of explanations",
    NeurIPS), relative and Monte-Carlo estimated:

        max_{s < samples} ||Phi(x + d_s) - Phi(x)||_2 / ||Phi(x)||_2,   d_s ~ U[-r, r]^(C,H,W),

    with r = radius * (max(x_i) - min(x_i)) per image. Draws: ``rng = np.random.default_rng(seed)``,
    then for each sample s in turn ``d_s = rng.uniform(-1, 1, size=x.shape) * r`` (all N images at
    once); ``explain`` is called once on x and once per sample, each time with N rows. The
    perturbed input is not clipped. Lower is better; nan where Phi(x) is all zeros. float64 [N].
    ``progress(done, samples)`` is called after each sample.
    """
    x, t = check_batch(x, target)
    if (
        isinstance(radius, bool)
        or not isinstance(radius, (int, float, np.integer, np.floating))
        or not np.isfinite(radius)
        or radius < 0
    ):
        raise OnnxplainError(f"radius must be a finite number >= 0, got {radius!r}")
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise OnnxplainError(f"samples must be an integer >= 1, got {samples!r}")
    base = call(explain, x, t)
    norm = np.sqrt((base**2).sum(axis=(1, 2)))
    r = radius * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3))).astype(np.float64)
    rng = np.random.default_rng(seed)
    worst = np.zeros(len(x))
    for s in range(samples):
        d = rng.uniform(-1.0, 1.0, size=x.shape) * r[:, None, None, None]
        diff = call(explain, (x + d).astype(x.dtype), t) - base
        worst = np.maximum(worst, np.sqrt((diff**2).sum(axis=(1, 2))))
        if progress is not None:
            progress(s + 1, samples)
    return np.where(norm > 0, worst / np.where(norm > 0, norm, 1.0), np.nan)


def class_sensitivity(explain, x, target, other) -> dict:
    """Class sensitivity, the "mode collapse" check (Adebayo et al. 2018, "Sanity checks for
    saliency maps", NeurIPS; Wang et al. 2018 on explanations that ignore the class): how alike
    the map for the explained class ``target`` is to the map for another class ``other`` [N]
    (by default the least likely class, see :func:`least_likely`).

    Returns ``{"spearman", "spearman_abs", "ssim"}``, each float64 [N], from
    :func:`onnxplain.evaluation.metrics.similarity.compare` per image. A class-sensitive method scores low;
    a method whose map ignores the class scores 1.
    """
    x, t = check_batch(x, target)
    _, o = check_batch(x, other, "other")
    a, b = call(explain, x, t), call(explain, x, o)
    rows = [compare(ai, bi) for ai, bi in zip(a, b)]
    return {k: np.array([row[k] for row in rows], dtype=np.float64) for k in ("spearman", "spearman_abs", "ssim")}


def least_likely(logits) -> np.ndarray:
    """The least likely class per row of ``logits`` [N, K] (argmin, first on ties), int64 [N]:
    the "absent" class used by default for :func:`class_sensitivity`."""
    z = np.asarray(logits)
    if z.ndim != 2 or z.shape[1] < 2 or len(z) == 0:
        raise OnnxplainError(f"logits must be [N, K] with K >= 2 classes, got shape {z.shape}")
    if not np.issubdtype(z.dtype, np.number) or not np.isfinite(z).all():
        raise OnnxplainError("logits must be finite numbers")
    return z.argmin(axis=1).astype(np.int64)
