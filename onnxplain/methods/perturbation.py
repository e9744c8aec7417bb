"""Meaningful perturbation (Fong & Vedaldi, ICCV 2017) and extremal perturbation (Fong, Patrick &
Vedaldi, ICCV 2019): a smooth mask optimised through the model's gradient graph.

A mask ``m`` in [0, 1] is held at low resolution (``mask_size``, default ``ceil(H/8) x ceil(W/8)``,
28 x 28 for 224 x 224) and upsampled bilinearly with fixed interpolation matrices
(``M = Mh m Mw^T``; half-pixel centres, clamped edges, as ONNX ``Resize`` linear), so the pull-back
of a full-resolution gradient is exactly ``Mh^T G Mw``. The perturbed input is

    x' = M * x + (1 - M) * blur(x)        (all channels alike; blur: Gaussian of sigma ``blur``, 10 px)

``meaningful_perturbation`` (the deletion game) minimises

    score(x') / D + lambda1 * mean(1 - m) + lambda2 * (sum |m[i+1,j] - m[i,j]|^beta + sum |m[i,j+1] - m[i,j]|^beta)

over the low-resolution mask, starting from ``m = 1``; the attribution is ``1 - M``: the region whose
blurring destroys the score. ``D = |score(x) - score(blur(x))|`` is the drop that blurring the whole
image gives, so ``lambda1`` (option ``l1``, default 1) prices the deleted *fraction* of the image in
units of that drop whatever the score's scale and the mask's size (the paper's ``lambda1`` 1e-4 on a
*sum* over 28 x 28 cells against a softmax probability; on the 8 x 8 mask of a 64 x 64 image and a
logit score that price is negligible and the optimum deletes most of the image: up to 83% on the demo
shapes). ``lambda2`` 1e-2 and ``beta`` 3 are the paper's (options ``tv``, ``beta``).

``extremal_perturbation`` (the preservation game, with the 2019 paper's area constraint; smoothness comes
from the upsampling alone, not the paper's smooth-max) minimises

    -score(x') + lambda_t * mean((sort(M) - r_a)^2)

where ``r_a`` is the sorted reference with a fraction ``area`` (0.1) of ones; ``lambda_t`` grows
geometrically from ``area_weight / 1000`` to ``area_weight`` (300) over the iterations; equal mask
values share the reference's mean (:func:`tied_reference`), so ties favour no pixel. It starts at
``m = 0.5``; the attribution is ``M``: the region that alone keeps the score.

Score: the target's logit (``score="logit"``, default) or its softmax probability (``"softmax"``, the
papers' choice); with ``probabilities=True`` the explained output itself. The softmax of a confident
prediction is flat (gradient ``p (1 - p)`` near 0), which left the deletion mask empty on 10 of 24 demo
images and the preservation mask to its area term. Its gradient with
respect to ``x'`` comes from the gradient graph in weights mode (seed ``p_t (onehot_t - p)`` for
the softmax, ``onehot_t`` otherwise) after a forward pass through :class:`onnxplain.runtime.driver.Driver`
for the logits; the chain rule gives ``dS/dM = sum_channels g * (x - blur(x))``. Adam (``lr`` 0.1,
``iterations`` 300) with the mask clipped to [0, 1] after every step; all items of a batch are
optimised together (independently). ``jitter`` (pixels, default 0) rolls the perturbed image by a
random shift in ``[-jitter, jitter]`` per axis at every step (the papers' robustness to small
translations; ``seed`` fixes the shifts). ``progress(done, iterations)``.

Output: ``[N, 1, H, W]`` (NCHW) or ``[N, H, W, 1]`` (NHWC); ``outputs`` adds ``mask`` (the
upsampled mask, that shape), ``mask_lowres`` ``[N, h, w]``, ``score`` (the target's score on x)
and ``perturbed_score`` (on the final x').
"""

from __future__ import annotations

import math

import numpy as np

from onnxplain.errors import OnnxplainError
from onnxplain.methods.cam_forward import _interp_matrix
from onnxplain.methods.occlusion import fill_source, spatial_axes, start

METHODS = ("meaningful_perturbation", "extremal_perturbation")
TIE = 1e-9  # mask values closer than this are equal (the upsampling of a constant mask is not exactly constant)


def _size(mask_size, h, w):
    if mask_size is None:
        return max(1, math.ceil(h / 8)), max(1, math.ceil(w / 8))
    t = (mask_size, mask_size) if np.isscalar(mask_size) else tuple(mask_size)
    if len(t) != 2 or any(int(a) != a or a < 1 for a in t):
        raise OnnxplainError(f"mask_size must be a positive int or a pair of them, got {mask_size!r}")
    return int(t[0]), int(t[1])


class Problem:
    """The objective of one call: the mask parameterisation, the regularisers and the score gradient.

    ``loss_and_grad(m)`` -> (loss [N], dloss/dm [N, h, w]) for a low-resolution mask ``m``."""

    def __init__(
        self,
        explainer,
        x,
        chosen,
        method,
        *,
        mask_size=None,
        blur=10.0,
        l1=1.0,
        tv=1e-2,
        beta=3.0,
        area=0.1,
        area_weight=300.0,
        score="logit",
        batch_size=None,
        weights=None,
    ):
        from onnxplain.runtime.driver import for_explainer

        if method not in METHODS:
            raise OnnxplainError(f"unknown perturbation method '{method}'")
        if score not in ("softmax", "logit"):
            raise OnnxplainError(f"score must be 'softmax' or 'logit', not '{score}'")
        if not 0 < area < 1:
            raise OnnxplainError(f"area must be in (0, 1), got {area}")
        if beta < 1:
            raise OnnxplainError(f"beta must be at least 1, got {beta}")
        self.ex, self.x, self.chosen, self.method = explainer, x, chosen, method
        self.drv = for_explainer(explainer)
        self.axes = spatial_axes(x, explainer.options.channel_axis)
        self.c = explainer.options.channel_axis % 4
        self.h, self.w = x.shape[self.axes[0]], x.shape[self.axes[1]]
        self.mh_n, self.mw_n = _size(mask_size, self.h, self.w)
        self.Mh = _interp_matrix(self.h, self.mh_n)  # [H, h]
        self.Mw = _interp_matrix(self.w, self.mw_n)  # [W, w]
        self.x64 = x.astype(np.float64)
        self.b64 = fill_source(x, self.axes, None, float(blur)).astype(np.float64)
        self.diff = self.x64 - self.b64
        self.l1, self.tv, self.beta = float(l1), float(tv), float(beta)
        self.area, self.area_weight, self.lam = float(area), float(area_weight), float(area_weight)
        self.score_kind, self.batch_size = score, batch_size
        self.weights = weights  # a seed of the explained output's shape instead of classes: score sum(w * y)
        k = self.h * self.w
        ones = int(round(self.area * k))
        self.ref = np.concatenate([np.zeros(k - ones), np.ones(ones)])  # sorted ascending
        self.shift = np.zeros((len(x), 2), dtype=int)
        self.norm = np.ones(len(x))
        if method == "meaningful_perturbation":  # the score drop that blurring everything gives
            self.norm = np.maximum(
                np.abs(self.scores(self.x64) - self.scores(self.b64)),
                1e-3 * np.maximum(1.0, np.abs(self.scores(self.x64))),
            )

    # ---- mask <-> image -------------------------------------------------------------------
    def up(self, m):
        """[N, h, w] -> [N, H, W]."""
        return np.einsum("Hh,nhw,Ww->nHW", self.Mh, m, self.Mw)

    def down(self, g):
        """The adjoint of :meth:`up`: [N, H, W] -> [N, h, w]."""
        return np.einsum("Hh,nHW,Ww->nhw", self.Mh, g, self.Mw)

    def perturb(self, big):
        """x' for the upsampled mask ``big`` [N, H, W] (rolled by the current jitter)."""
        mk = np.expand_dims(big, self.c)
        xp = self.b64 + mk * self.diff
        return self._roll(xp, 1)

    def _roll(self, a, sign):
        if not self.shift.any():
            return a
        out = np.empty_like(a)
        for i, (dy, dx) in enumerate(self.shift):
            out[i] = np.roll(a[i], (sign * dy, sign * dx), axis=(self.axes[0] - 1, self.axes[1] - 1))
        return out

    # ---- score ----------------------------------------------------------------------------
    def scores(self, xp):
        """The target score of each row of ``xp`` (forward passes only), float64 [N]."""
        from onnxplain.runtime.driver import SCORE, class_scores, weighted_scores

        y = self.drv.outputs(xp.astype(self.x.dtype), self.batch_size)[SCORE]
        if self.weights is not None:
            return weighted_scores(y, self.weights)
        return class_scores(self.drv, y, self.chosen, self.score_kind)

    def score_and_grad(self, xp):
        """The target score of each row of ``xp`` [N, ...] (float64 [N]) and its gradient w.r.t. ``xp``."""
        from onnxplain.runtime.driver import SCORE, class_scores, weighted_scores

        xq = xp.astype(self.x.dtype)
        y = self.drv.outputs(xq, self.batch_size)[SCORE]
        n = len(xq)
        if self.weights is not None:  # linear in y: the seed is the weights themselves
            g = self.ex.run(
                xq,
                "gradient",
                target_weights=np.ascontiguousarray(self.weights, dtype=y.dtype),
                batch_size=self.batch_size or 16,
            ).attribution
            return weighted_scores(y, self.weights), g.astype(np.float64)
        s = class_scores(self.drv, y, self.chosen, self.score_kind)
        z = self.drv.per_class(y)
        onehot = np.zeros_like(z)
        onehot[np.arange(n), self.chosen] = 1.0
        if self.score_kind == "softmax" and not self.drv.probabilities:
            e = np.exp(z - z.max(axis=1, keepdims=True))
            p = e / e.sum(axis=1, keepdims=True)
            wts = s[:, None] * (onehot - p)
        else:
            wts = onehot
        ax = self.drv.class_axis_of(y)
        wr = np.moveaxis(wts.reshape((n, z.shape[1]) + (1,) * (y.ndim - 2)), 1, ax)
        seed = np.broadcast_to(wr, y.shape)
        g = self.ex.run(
            xq, "gradient", target_weights=np.ascontiguousarray(seed, dtype=y.dtype), batch_size=self.batch_size or 16
        ).attribution
        return s, g.astype(np.float64)

    # ---- objective ------------------------------------------------------------------------
    def regulariser(self, m, big):
        """(value [N], d/dm [N, h, w], d/dbig [N, H, W] or None)."""
        n = len(m)
        if self.method == "meaningful_perturbation":
            val = self.l1 * (1 - m).reshape(n, -1).mean(axis=1)
            gm = np.full_like(m, -self.l1 / m[0].size)
            for axis in (1, 2):
                d = np.diff(m, axis=axis)
                if d[0].size == 0:
                    continue
                val = val + self.tv * (np.abs(d) ** self.beta).reshape(n, -1).sum(axis=1)
                gd = self.tv * self.beta * np.abs(d) ** (self.beta - 1) * np.sign(d)
                pad = [(0, 0)] * 3
                pad[axis] = (1, 0)
                gm += np.pad(gd, pad)  # + at i+1
                pad[axis] = (0, 1)
                gm -= np.pad(gd, pad)  # - at i
            return val, gm, None
        flat = big.reshape(n, -1)
        order = np.argsort(flat, axis=1, kind="stable")
        srt = np.take_along_axis(flat, order, axis=1)
        r = srt - tied_reference(srt, self.ref)
        val = self.lam * (r**2).mean(axis=1)
        gb = np.empty_like(flat)
        np.put_along_axis(gb, order, 2 * self.lam * r / flat.shape[1], axis=1)
        return val, np.zeros_like(m), gb.reshape(big.shape)

    def loss_and_grad(self, m):
        big = self.up(m)
        xp = self.perturb(big)
        s, g = self.score_and_grad(xp)
        g = self._roll(g, -1)  # back to the unrolled frame
        sign = 1.0 if self.method == "meaningful_perturbation" else -1.0
        s, g = s / self.norm, g / self.norm.reshape((-1,) + (1,) * (g.ndim - 1))
        gbig = sign * (g * self.diff).sum(axis=self.c)
        reg, gm, gb = self.regulariser(m, big)
        if gb is not None:
            gbig = gbig + gb
        return sign * s + reg, self.down(gbig) + gm, s * self.norm


def tied_reference(srt: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """The sorted reference matched to sorted values ``srt`` [N, K], averaged over runs of equal values.

    ``sort`` breaks ties by position, so equal mask values (the uniform start, a flat mask) would be
    matched to the reference's ones by their index: the area term would then grow the *last* pixels
    (the image's bottom rows) whatever the score says. Equal values (within ``TIE``) get the mean of the reference over
    their run instead (the symmetric subgradient of ``sum (sort(M) - r)^2``), so no pixel is favoured."""
    out = np.empty_like(srt)
    csum = np.concatenate([[0.0], np.cumsum(ref)])
    for i, row in enumerate(srt):
        starts = np.flatnonzero(np.concatenate([[True], np.diff(row) > TIE]))
        ends = np.append(starts[1:], len(row))
        means = (csum[ends] - csum[starts]) / (ends - starts)
        out[i] = np.repeat(means, ends - starts)
    return out


def explain(
    explainer,
    x: np.ndarray,
    target: np.ndarray | None,
    target_weights=None,
    *,
    method: str = "meaningful_perturbation",
    iterations: int = 300,
    lr: float = 0.1,
    mask_size=None,
    blur: float = 10.0,
    l1: float = 1.0,
    tv: float = 1e-2,
    beta: float = 3.0,
    area: float = 0.1,
    area_weight: float = 300.0,
    jitter: int = 0,
    seed: int = 0,
    score: str = "logit",
    batch_size: int | None = None,
    progress=None,
    **unknown,
):
    """Perturbation masks for ``x`` [N, ...]; returns (attribution, targets, model outputs)."""
    from onnxplain.runtime.driver import SCORE, scorer

    drv, _ = start(explainer, x, method, target_weights, unknown)
    iterations, jitter = int(iterations), int(jitter)
    if iterations < 0:
        raise OnnxplainError(f"iterations must be non-negative, got {iterations}")
    if jitter < 0:
        raise OnnxplainError(f"jitter must be non-negative, got {jitter}")
    if not lr > 0:
        raise OnnxplainError(f"lr must be positive, got {lr}")
    n = len(x)
    base = drv.outputs(x, batch_size)
    chosen, f = scorer(drv, base[SCORE], target, target_weights, score)
    prob = Problem(
        explainer,
        x,
        chosen,
        method,
        mask_size=mask_size,
        blur=blur,
        l1=l1,
        tv=tv,
        beta=beta,
        area=area,
        area_weight=area_weight,
        score=score,
        batch_size=batch_size,
        weights=target_weights,
    )
    rng = np.random.default_rng(seed)
    m = np.full((n, prob.mh_n, prob.mw_n), 1.0 if method == "meaningful_perturbation" else 0.5)
    mom, vel = np.zeros_like(m), np.zeros_like(m)
    b1, b2, eps = 0.9, 0.999, 1e-8
    for it in range(iterations):
        if method == "extremal_perturbation":
            frac = it / max(1, iterations - 1)
            prob.lam = prob.area_weight * 1000.0 ** (frac - 1)
        if jitter:
            prob.shift = rng.integers(-jitter, jitter + 1, size=(n, 2))
        _, grad, _ = prob.loss_and_grad(m)
        mom = b1 * mom + (1 - b1) * grad
        vel = b2 * vel + (1 - b2) * grad * grad
        mhat = mom / (1 - b1 ** (it + 1))
        vhat = vel / (1 - b2 ** (it + 1))
        m = np.clip(m - lr * mhat / (np.sqrt(vhat) + eps), 0.0, 1.0)
        if progress is not None:
            progress(it + 1, iterations)
    prob.shift[:] = 0
    big = prob.up(m)
    y = drv.outputs(prob.perturb(big).astype(x.dtype), batch_size)[SCORE]
    c = prob.c
    heat = 1.0 - big if method == "meaningful_perturbation" else big
    attribution = np.expand_dims(heat, c).astype(x.dtype)
    outputs = {k: v for k, v in base.items() if k != SCORE}
    outputs["mask"] = np.expand_dims(big, c).astype(x.dtype)
    outputs["mask_lowres"] = m.astype(x.dtype)
    outputs["score"] = f(base[SCORE], np.arange(n))
    outputs["perturbed_score"] = f(y, np.arange(n))
    return attribution, chosen, outputs
