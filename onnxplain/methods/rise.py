"""RISE (Petsiuk, Das & Saenko, BMVC 2018): Randomized Input Sampling for Explanation.

``n_masks`` random binary grids of ``cells`` x ``cells`` (each cell on with probability ``p``)
are upsampled bilinearly to ``(cells + 1) * cell`` pixels per axis, ``cell = ceil(H / cells)``
(likewise W), shifted by a random offset in ``[0, cell)`` per axis and cropped to H x W: smooth
masks in [0, 1] whose cell borders fall anywhere. Each item is multiplied by each mask (all
channels alike) and scored through :class:`onnxplain.runtime.driver.Driver`; the saliency is the
score-weighted mean of the masks,

    S = sum_i score_i * mask_i / (n_masks * p).

The upsampling is bilinear with half-pixel centres and clamped edges (ONNX ``Resize`` linear,
as :func:`onnxplain.methods.cam_forward.upsample`). Score: the target's softmax probability
(``score="softmax"``, default, as in the paper) or its logit (``"logit"``); with
``probabilities=True`` the explained output itself; with target weights ``sum(w * y)``
(:func:`onnxplain.runtime.driver.scorer`). ``seed`` fixes the masks (the same masks for
every item of a call); masks are made chunk by chunk, never all at once. Output: ``[N, 1, H, W]``
(NCHW) or ``[N, H, W, 1]`` (NHWC).

S is an *offset* map: for a score that ignores the input it is the mean score ``mean_i score_i``
everywhere (times the masks' coverage ``sum_i mask_i / (n_masks p)``, 1 up to sampling noise), not 0.
``outputs["baseline"]`` holds that value per pixel, ``mean_i score_i * sum_i mask_i / (n_masks p)``;
figures show ``S - baseline`` (Petsiuk et al.'s saliency relative to the mean score), so a pixel
coloured red raised the score above what a random mask gives on average.
"""

from __future__ import annotations

import math

import numpy as np

from onnxplain.errors import OnnxplainError
from onnxplain.methods.cam_forward import _interp_matrix
from onnxplain.methods.occlusion import start

# masks per driver call (the driver batches inside): 64 float32 masks of 224 x 224 are 13 MB, which the
# allocator keeps; 256 float64 ones (100 MB) were returned to the system and page-faulted in again on every
# call (0.2 s per 256 masks, a sixth of RISE's time on ResNet-18)
CHUNK = 64


class Masks:
    """The RISE masks of one seed, made on demand: ``masks[i:j]`` -> [j - i, H, W] of ``dtype``."""

    def __init__(self, n: int, size, cells: int = 7, p: float = 0.5, seed: int = 0, dtype=np.float64):
        if n < 1:
            raise OnnxplainError(f"n_masks must be at least 1, got {n}")
        if cells < 1:
            raise OnnxplainError(f"cells must be at least 1, got {cells}")
        if not 0 < p <= 1:
            raise OnnxplainError(f"p must be in (0, 1], got {p}")
        rng = np.random.default_rng(seed)
        h, w = size
        self.n, self.size, self.p = n, (h, w), p
        self.grids = (rng.random((n, cells, cells)) < p).astype(dtype)
        ch, cw = math.ceil(h / cells), math.ceil(w / cells)
        self.shifts = np.stack([rng.integers(0, ch, n), rng.integers(0, cw, n)], axis=1)
        self.mh = _interp_matrix((cells + 1) * ch, cells).astype(dtype)  # [(cells+1)*ch, cells]
        self.mw = _interp_matrix((cells + 1) * cw, cells).astype(dtype)

    def __getitem__(self, sl: slice) -> np.ndarray:
        h, w = self.size
        i, j, _ = sl.indices(self.n)
        rows = self.mh[self.shifts[i:j, :1] + np.arange(h)]  # [k, H, cells]: each mask's shifted crop
        cols = self.mw[self.shifts[i:j, 1:] + np.arange(w)]  # [k, W, cells]
        return rows @ (self.grids[i:j] @ cols.transpose(0, 2, 1))  # [k, H, cells] @ [k, cells, W]


def explain(
    explainer,
    x: np.ndarray,
    target: np.ndarray | None,
    target_weights=None,
    *,
    n_masks: int = 2000,
    cells: int = 7,
    p: float = 0.5,
    seed: int = 0,
    score: str = "softmax",
    batch_size: int | None = None,
    progress=None,
    **unknown,
):
    """RISE saliency for ``x`` [N, ...]; returns (attribution, targets, model outputs)."""
    from onnxplain.runtime.driver import SCORE, one_blas_thread, scorer

    drv, axes = start(explainer, x, "rise", target_weights, unknown)
    c = explainer.options.channel_axis % 4
    h, w = x.shape[axes[0]], x.shape[axes[1]]
    masks = Masks(int(n_masks), (h, w), int(cells), float(p), seed, dtype=np.float32)
    n = len(x)
    base = drv.outputs(x, batch_size)
    chosen, f = scorer(drv, base[SCORE], target, target_weights, score)
    sal = np.zeros((n, h, w), dtype=np.float64)
    ssum = np.zeros(n)  # sum of the scores over the masks
    cover = np.zeros((h, w))  # sum of the masks
    total, done = n * masks.n, 0
    buf = []  # the masked copies of one batch, reused

    def rows(a, b, item, mk):
        if not buf or len(buf[0]) < b - a:
            buf[:] = [np.empty((b - a, *x.shape[1:]), x.dtype)]
        return np.multiply(x[item : item + 1], mk[a:b], out=buf[0][: b - a])

    for i0 in range(0, masks.n, CHUNK):
        with one_blas_thread():
            m = masks[i0 : i0 + CHUNK]  # [k, H, W]
        cover += m.sum(axis=0, dtype=np.float64)
        mk = np.expand_dims(m, c).astype(x.dtype, copy=False)  # channel axis of size 1 for broadcasting
        for item in range(n):
            prog = None if progress is None else (lambda d, _t, base_done=done: progress(base_done + d, total))
            y = drv.outputs_rows(lambda a, b, item=item, mk=mk: rows(a, b, item, mk), len(m), batch_size, prog)[SCORE]
            s = f(y, np.full(len(m), item))
            with one_blas_thread():
                sal[item] += np.tensordot(s.astype(m.dtype), m, axes=1)
            ssum[item] += s.sum()
            done += len(m)
    attribution = np.expand_dims(sal / (masks.n * masks.p), c).astype(x.dtype)
    outputs = {k: v for k, v in base.items() if k != SCORE}
    # what S is for a score that ignores the input: the mean score times the masks' coverage
    baseline = (ssum / masks.n)[:, None, None] * (cover / (masks.n * masks.p))[None]
    outputs["baseline"] = np.expand_dims(baseline, c).astype(x.dtype)
    return attribution, chosen, outputs
