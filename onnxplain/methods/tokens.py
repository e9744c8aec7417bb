"""Black-box methods over tokens, for models whose explained input is integer (token ids, bytes).

A token is hidden by replacing its id with ``fill`` (a number; the image fills such as ``blur`` or
``mean``, the defaults, stand for 0, the usual padding id). The score is
the explained scalar ``sum(w * logits)`` of the model run on the perturbed ids (the logits under a
final Softmax/Sigmoid, as for the gradient methods), so every target the Explainer resolves works.

* ``occlusion``: the score drop when each token alone is hidden (Zeiler & Fergus 2014; for text,
  leave-one-out as in Li et al. 2016, "Understanding neural networks through representation erasure");
* ``lime``: a weighted ridge model of the score over random subsets of kept tokens (Ribeiro et al. 2016);
* ``kernelshap``: Shapley values of the tokens by the Shapley-kernel regression (Lundberg & Lee 2017).

The map has the ids' shape ``[N, T]`` and is also ``outputs["token_scores"]``.
"""

from __future__ import annotations

import numpy as np

from onnxplain.errors import OnnxplainError
from onnxplain.methods.lime import lime_fit, lime_kernel, lime_samples, shap_fit, shap_samples

METHODS = ("occlusion", "lime", "kernelshap")


def explain(explainer, ids: np.ndarray, method: str, seeds: np.ndarray, opts: dict, progress=None):
    """(attribution [N, T], outputs) for integer inputs ``ids`` [N, T]; ``seeds`` [N, ...] weigh the logits."""
    if method not in METHODS:
        raise OnnxplainError(f"{method} over tokens is not available (token methods: {', '.join(METHODS)})")
    if ids.ndim != 2:
        raise OnnxplainError(f"token methods take ids of shape [N, T], got {list(ids.shape)}")
    fill = opts.get("fill", 0)
    fill = 0 if isinstance(fill, str) or fill is None else int(fill)  # image fills (blur, mean) mean the pad id
    score = _scorer(explainer, seeds)
    rng = np.random.default_rng(opts.get("seed", 0))
    n, t = ids.shape
    attribution = np.zeros((n, t), dtype=np.float32)
    for i in range(n):
        if method == "occlusion":
            z = np.ones((t + 1, t), dtype=np.int8)
            z[np.arange(1, t + 1), np.arange(t)] = 0  # row 0: nothing hidden
        elif method == "lime":
            z = lime_samples(t, opts["samples"], rng)
        else:
            z, w = shap_samples(t, opts["samples"], rng)
            z = np.concatenate([np.ones((1, t), np.int8), z, np.zeros((1, t), np.int8)])  # + full and empty
        y = score(i, np.where(z.astype(bool), ids[i][None], fill), opts["batch_size"])
        if method == "occlusion":
            attribution[i] = y[0] - y[1:]
        elif method == "lime":
            attribution[i] = lime_fit(z, y, lime_kernel(z, opts.get("kernel_width", 0.25)), opts.get("alpha", 1.0))[0]
        else:
            attribution[i] = shap_fit(z[1:-1], y[1:-1], w, float(y[0]), float(y[-1]))
        if progress is not None:
            progress(i + 1, n)
    return attribution, {"token_scores": attribution}


def _scorer(explainer, seeds: np.ndarray):
    """score(i, rows of ids, batch) -> [rows] of sum(seed_i * logits(rows))."""
    session, name = explainer.logits_of_entry()
    entry = explainer.entry

    def score(i, rows, batch):
        out = []
        for a in range(0, len(rows), batch):
            y = session.run([name], {entry: rows[a : a + batch].astype(rows.dtype)})[0]
            out.append((y.reshape(len(y), -1) * seeds[i].reshape(1, -1)).sum(axis=1))
        return np.concatenate(out).astype(np.float64)

    return score
