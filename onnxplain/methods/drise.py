"""D-RISE (Petsiuk et al., CVPR 2021, "Black-box Explanation of Object Detectors via Saliency Maps").

RISE's random masks (:class:`onnxplain.methods.rise.Masks`) scored not by a class score but by how
well the masked image's detections still contain the explained one. A detection is a vector
``d = (box, objectness, class probabilities)``; the similarity of the explained detection ``d_t``
to a proposal ``d_j`` is

    s(d_t, d_j) = IoU(box_t, box_j) * O_j * cos(P_t, P_j)

(``O_j``: the objectness; for detectors without one, the proposal's confidence ``max_c P_j`` --
the paper's probability vectors hold a background class whose share carries the confidence, which
a cosine of sigmoid class scores alone ignores) and a mask's weight is the best over the masked
image's proposals, ``w_i = max_j s(d_t, d_j)``. The saliency is ``S = sum_i w_i M_i / n_masks``
(the paper's weighted sum of masks, normalised by their number).

The explained detection is a :class:`onnxplain.targets.Detection` target (its layout decodes every
proposal); without one the task's default (the top detection) is explained. Output ``[N, 1, H, W]``.
"""

from __future__ import annotations

import numpy as np

from onnxplain.errors import OnnxplainError
from onnxplain.methods.occlusion import spatial_axes
from onnxplain.methods.rise import CHUNK, Masks


def similarity(box_t, probs_t, cand, objectness: bool = True) -> float:
    """max over proposals of IoU x objectness (or, without, the confidence) x cosine of the class probabilities."""
    from onnxplain.targets import iou

    ov = iou(box_t, cand.boxes)
    p = cand.probs
    cos = p @ probs_t / (np.linalg.norm(p, axis=1) * np.linalg.norm(probs_t) + 1e-12)
    conf = cand.objectness if objectness else p.max(axis=1)
    return float(np.max(ov * conf * cos)) if len(ov) else 0.0


def explain(
    explainer,
    x: np.ndarray,
    target,
    *,
    n_masks: int = 1000,
    cells: int = 8,
    p: float = 0.5,
    seed: int = 0,
    batch_size: int | None = None,
    progress=None,
):
    """D-RISE saliency for ``x`` [N, ...] and a resolved detection ``target``; returns (attribution, outputs)."""
    from onnxplain.runtime.driver import SCORE, for_explainer
    from onnxplain.targets import Detection, spatial_size

    spec = target.spec
    if not isinstance(spec, Detection):
        raise OnnxplainError(
            "d_rise explains a detection: give a Detection target (CLI: --box/--class with --task detect)"
        )
    if spec.coordinate is not None:
        raise OnnxplainError("d_rise scores whole detections; a box coordinate (ODAM) needs a gradient method")
    lay, sex, _, names = spec.plan(explainer)
    if names is not None:
        raise OnnxplainError(
            "d_rise decodes the raw candidates of a detector without NonMaxSuppression; this "
            "graph has one: use occlusion or rise with the Detection target"
        )
    axes = spatial_axes(x, explainer.options.channel_axis)
    c = explainer.options.channel_axis % 4
    h, w = x.shape[axes[0]], x.shape[axes[1]]
    size = spatial_size(explainer, x)
    masks = Masks(int(n_masks), (h, w), int(cells), float(p), seed)
    drv = for_explainer(sex)
    base = drv.outputs(x, batch_size)
    n = len(x)
    sal = np.zeros((n, h, w), dtype=np.float64)
    total, done = n * masks.n, 0
    for i0 in range(0, masks.n, CHUNK):
        m = masks[i0 : i0 + CHUNK]
        mk = np.expand_dims(m, c).astype(x.dtype)
        for item in range(n):
            box_t, probs_t = target.items[item]["box"], target.items[item]["scores"]

            def rows(a, b, item=item, mk=mk):
                return x[item : item + 1] * mk[a:b]

            prog = None if progress is None else (lambda d, _t, base_done=done: progress(base_done + d, total))
            outs = drv.outputs_rows(rows, len(m), batch_size, prog)
            obj = lay.objectness is not None and spec.use_objectness
            s = np.array([similarity(box_t, probs_t, spec.decode(lay, outs, r, size), obj) for r in range(len(m))])
            sal[item] += np.tensordot(s, m, axes=1)
            done += len(m)
    attribution = np.expand_dims(sal / masks.n, c).astype(x.dtype)
    outputs = {k: v for k, v in base.items() if k != SCORE}
    return attribution, outputs
