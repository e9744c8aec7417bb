"""Occlusion (Zeiler & Fergus, ECCV 2014): slide a grey (or blurred) patch over the image and
record how much the explained score drops.

For each item: a ``window`` (h, w) patch slides over the two spatial axes with ``stride`` (h, w).
Inside the patch every channel is replaced by ``fill`` (a number, default 0, or ``"mean"``: the
item's per-channel mean) or, with ``blur=sigma``, by the item blurred with a Gaussian of that
sigma (spatial axes only, edges reflected). Each occluded copy is one forward pass through
:class:`onnxplain.runtime.driver.Driver` (batched). The drop of a window is ``f(x) - f(x_occluded)``; the
result at a pixel is the mean drop over all windows that cover it (positive: the pixel supports
the target).

Borders: window starts are ``0, s, 2s, ...`` while the window fits; when the last one stops short
of the far edge, one more window flush with that edge is added, so every pixel is covered by at
least one window (and no window hangs outside the image). A window larger than the image is cut
to the image. The number of windows per item is ``len(starts_h) * len(starts_w)``.

Score: the target's softmax probability (``score="softmax"``, default, as in the paper) or its
logit (``"logit"``); with ``probabilities=True`` the explained output itself; one class only: its
value (a softmax over one class is constant). The target is resolved (argmax for -1) on the
unoccluded input. With target weights (boxes, regions, timesteps: :mod:`onnxplain.targets`) the
score is ``sum(w * y)`` over the explained tensor ``y``
(:func:`onnxplain.runtime.driver.scorer`).

Output: one map per item with the channel axis kept at size 1 (all channels are occluded
together): ``[N, 1, H, W]`` for NCHW, ``[N, H, W, 1]`` for NHWC (``channel_axis=3``).
"""

from __future__ import annotations

import numpy as np

from onnxplain.errors import OnnxplainError


def _pair(v, name) -> tuple[int, int]:
    t = (v, v) if np.isscalar(v) else tuple(v)
    if len(t) != 2 or any(int(a) != a or a < 1 for a in t):
        raise OnnxplainError(f"{name} must be a positive int or a pair of them, got {v!r}")
    return int(t[0]), int(t[1])


def starts(size: int, window: int, stride: int) -> list[int]:
    """Window starts along one axis: every ``stride`` while the window fits, plus one flush with the end."""
    window = min(window, size)
    s = list(range(0, size - window + 1, stride))
    if s[-1] + window < size:
        s.append(size - window)
    return s


def spatial_axes(x: np.ndarray, channel_axis: int) -> tuple[int, int]:
    """The two spatial axes of an [N, ...] image batch (4-D: the axes other than batch and channel)."""
    if x.ndim != 4:
        raise OnnxplainError(f"occlusion and RISE need image batches [N, C, H, W] or [N, H, W, C], got {list(x.shape)}")
    c = channel_axis % 4
    if c == 0:
        raise OnnxplainError("the channel axis cannot be the batch axis")
    a = [i for i in (1, 2, 3) if i != c]
    return a[0], a[1]


def start(explainer, x: np.ndarray, method: str, target_weights, unknown: dict):  # noqa: ARG001
    """The checks every perturbation method begins with; returns (the shared driver, the spatial axes)."""
    from onnxplain.runtime.driver import for_explainer

    if unknown:
        raise OnnxplainError(f"unexpected options for {method}: {', '.join(sorted(unknown))}")
    return for_explainer(explainer), spatial_axes(x, explainer.options.channel_axis)


def windows(h: int, w: int, window, stride):
    """The list of (y0, y1, x0, x1) windows, row-major."""
    wh, ww = _pair(window, "window")
    sh, sw = _pair(stride, "stride")
    wh, ww = min(wh, h), min(ww, w)
    return [(y, y + wh, x, x + ww) for y in starts(h, wh, sh) for x in starts(w, ww, sw)]


def fill_source(x: np.ndarray, axes, fill, blur) -> np.ndarray:
    """What occluded pixels take: [N, ...] of x's shape (the fill value, the item mean or x blurred)."""
    if blur is not None:
        from scipy.ndimage import gaussian_filter

        if blur <= 0:
            raise OnnxplainError(f"blur sigma must be positive, got {blur}")
        sigma = [0.0] * x.ndim
        sigma[axes[0]] = sigma[axes[1]] = float(blur)
        return gaussian_filter(x.astype(np.float64), sigma, mode="reflect").astype(x.dtype)
    if isinstance(fill, str):
        if fill != "mean":
            raise OnnxplainError(f"fill must be a number or 'mean', not '{fill}'")
        return np.broadcast_to(x.mean(axis=axes, keepdims=True, dtype=np.float64).astype(x.dtype), x.shape)
    return np.broadcast_to(np.asarray(fill, dtype=x.dtype), x.shape)


def explain(
    explainer,
    x: np.ndarray,
    target: np.ndarray | None,
    target_weights=None,
    *,
    window=8,
    stride=None,
    fill=0.0,
    blur: float | None = None,
    score: str = "softmax",
    batch_size: int | None = None,
    progress=None,
    **unknown,
):
    """Occlusion maps for ``x`` [N, ...]; returns (attribution, targets, model outputs)."""
    from onnxplain.runtime.driver import SCORE, scorer

    drv, axes = start(explainer, x, "occlusion", target_weights, unknown)
    h, w = x.shape[axes[0]], x.shape[axes[1]]
    stride = window if stride is None else stride
    wins = windows(h, w, window, stride)
    src = fill_source(x, axes, fill, blur)
    n, k = len(x), len(wins)
    base = drv.outputs(x, batch_size)
    chosen, f = scorer(drv, base[SCORE], target, target_weights, score)
    f0 = f(base[SCORE], np.arange(n))

    # every window has the same size: rows i..j are copies of their items with one fancy-indexed patch each
    wh, ww = wins[0][1] - wins[0][0], wins[0][3] - wins[0][2]
    y0s, x0s = np.array([v[0] for v in wins]), np.array([v[2] for v in wins])
    buf = []  # the occluded copies of one batch, reused

    def rows(i, j):
        if not buf or len(buf[0]) < j - i:
            buf[:] = [np.empty((j - i, *x.shape[1:]), dtype=x.dtype)]
        out = buf[0][: j - i]
        item, win = np.divmod(np.arange(i, j), k)
        np.take(x, item, axis=0, out=out, mode="clip")  # "raise" (the default) buffers out
        at_out, at_src = [slice(None)] * x.ndim, [slice(None)] * x.ndim
        at_out[0], at_src[0] = np.arange(j - i)[:, None, None], item[:, None, None]
        at_out[axes[0]] = at_src[axes[0]] = (y0s[win][:, None] + np.arange(wh))[:, :, None]
        at_out[axes[1]] = at_src[axes[1]] = (x0s[win][:, None] + np.arange(ww))[:, None, :]
        out[tuple(at_out)] = src[tuple(at_src)]
        return out

    y = drv.outputs_rows(rows, n * k, batch_size, progress)[SCORE]
    s = f(y, np.repeat(np.arange(n), k)).reshape(n, k)
    drop = f0[:, None] - s
    total = np.zeros((n, h, w), dtype=np.float64)
    count = np.zeros((h, w), dtype=np.float64)
    for q, (y0, y1, x0, x1) in enumerate(wins):
        total[:, y0:y1, x0:x1] += drop[:, q, None, None]
        count[y0:y1, x0:x1] += 1
    maps = (total / count).astype(x.dtype)
    c = explainer.options.channel_axis % 4
    attribution = np.expand_dims(maps, c)
    outputs = {kk: v for kk, v in base.items() if kk != SCORE}
    return attribution, chosen, outputs
