"""LSTM, GRU and RNN from the ONNX spec, in numpy, for the oracle (onnx.reference's own ignore
sequence_lens, clip, input_forget and every activation but the defaults).

Written from the operator docs (onnx/docs/Operators.md, LSTM/GRU/RNN), with onnxruntime's choices
where the spec is silent (checked against onnxruntime's forward in tests/test_recurrent.py):

* a batch item past its sequence length keeps its state and outputs zeros; the reverse direction
  runs from its own last valid step back to step 0; a batch item of length 0 gets zero Y_h/Y_c;
* ``clip`` bounds the input of every gate activation, not the input of LSTM's ``h(C)``;
* ``input_forget`` couples the gates as ``f = 1 - i``;
* activation_alpha/beta are consumed, in order, only by the activations that take them, with
  onnxruntime's defaults (LeakyRelu 0.01, HardSigmoid 0.2/0.5, Elu 1.0, the others 0).
"""

from __future__ import annotations

import numpy as np
from onnx.reference.op_run import OpRun


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


FUNCS = {
    "relu": lambda x, a, b: np.maximum(x, 0),
    "tanh": lambda x, a, b: np.tanh(x),
    "sigmoid": lambda x, a, b: _sigmoid(x),
    "affine": lambda x, a, b: a * x + b,
    "leakyrelu": lambda x, a, b: np.where(x >= 0, x, a * x),
    "thresholdedrelu": lambda x, a, b: np.where(x > a, x, 0),
    "scaledtanh": lambda x, a, b: a * np.tanh(b * x),
    "hardsigmoid": lambda x, a, b: np.minimum(np.maximum(a * x + b, 0), 1),
    "elu": lambda x, a, b: np.where(x >= 0, x, a * np.expm1(np.minimum(x, 0))),
    "softsign": lambda x, a, b: x / (1 + np.abs(x)),
    "softplus": lambda x, a, b: np.logaddexp(0, x),
}
TAKES = {
    "affine": (1, 1),
    "leakyrelu": (1, 0),
    "thresholdedrelu": (1, 0),
    "scaledtanh": (1, 1),
    "hardsigmoid": (1, 1),
    "elu": (1, 0),
}
DEFAULTS = {"leakyrelu": (0.01, 0.0), "hardsigmoid": (0.2, 0.5), "elu": (1.0, 0.0)}
N_ACTS = {"LSTM": 3, "GRU": 2, "RNN": 1}
DEFAULT_ACTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}


def activations(op, names, alphas, betas, dirs):
    names = [n.decode() if isinstance(n, bytes) else n for n in (names or DEFAULT_ACTS[op] * dirs)]
    alphas, betas = list(alphas or []), list(betas or [])
    out = []
    for name in names:
        key = name.lower()
        ta, tb = TAKES.get(key, (0, 0))
        da, db = DEFAULTS.get(key, (0.0, 0.0))
        a = (alphas.pop(0) if alphas else da) if ta else 0.0
        b = (betas.pop(0) if betas else db) if tb else 0.0
        out.append(lambda x, f=FUNCS[key], a=a, b=b: f(x, a, b))
    n = N_ACTS[op]
    return [out[d * n : (d + 1) * n] for d in range(dirs)]


def _step(op, acts, x, h, c, w, r, wb, rb, p, clip, input_forget, lbr):
    """One step of one direction; x [B, I], h/c [B, H]. Returns (h, c)."""
    cl = (lambda v: np.clip(v, -clip, clip)) if clip is not None else (lambda v: v)
    if op == "RNN":
        return acts[0](cl(x @ w.T + h @ r.T + wb + rb)), c
    if op == "GRU":
        f, g = acts
        wz, wr, wh = np.split(w, 3)
        rz, rr, rh = np.split(r, 3)
        bz, br, bh = np.split(wb, 3)
        cz, cr, ch = np.split(rb, 3)
        z = f(cl(x @ wz.T + h @ rz.T + bz + cz))
        rg = f(cl(x @ wr.T + h @ rr.T + br + cr))
        if lbr:
            hh = g(cl(x @ wh.T + rg * (h @ rh.T + ch) + bh))
        else:
            hh = g(cl(x @ wh.T + (rg * h) @ rh.T + ch + bh))
        return (1 - z) * hh + z * h, c
    f, g, hf = acts
    a = x @ w.T + h @ r.T + wb + rb
    ai, ao, af, ac = np.split(a, 4, axis=-1)
    pi, po, pf = np.split(p, 3)
    i = f(cl(ai + pi * c))
    fg = 1 - i if input_forget else f(cl(af + pf * c))
    cn = fg * c + i * g(cl(ac))
    o = f(cl(ao + po * cn))
    return o * hf(cn), cn


def run(
    op,
    X,
    W,
    R,
    B=None,
    sequence_lens=None,
    initial_h=None,
    initial_c=None,
    P=None,
    *,
    activations_=None,
    activation_alpha=None,
    activation_beta=None,
    clip=None,
    direction="forward",
    input_forget=0,
    layout=0,
    linear_before_reset=0,
):
    """(Y, Y_h, Y_c) of LSTM/GRU/RNN in the inputs' precision (Y_c is None but for LSTM)."""
    direction = direction.decode() if isinstance(direction, bytes) else (direction or "forward")
    dirs = 2 if direction == "bidirectional" else 1
    if layout:
        X = X.swapaxes(0, 1)
        initial_h = None if initial_h is None else initial_h.swapaxes(0, 1)
        initial_c = None if initial_c is None else initial_c.swapaxes(0, 1)
    T, N = X.shape[:2]
    H = R.shape[-1]
    gates = W.shape[1] // H
    B = np.zeros((dirs, 2 * gates * H), X.dtype) if B is None else B
    P = np.zeros((dirs, 3 * H), X.dtype) if P is None else P
    h0 = np.zeros((dirs, N, H), X.dtype) if initial_h is None else initial_h
    c0 = np.zeros((dirs, N, H), X.dtype) if initial_c is None else initial_c
    lens = np.full(N, T) if sequence_lens is None else np.asarray(sequence_lens)
    acts = activations(op, activations_, activation_alpha, activation_beta, dirs)
    Y = np.zeros((T, dirs, N, H), X.dtype)
    Yh, Yc = np.zeros((dirs, N, H), X.dtype), np.zeros((dirs, N, H), X.dtype)
    for d in range(dirs):
        reverse = direction == "reverse" or d == 1
        wb, rb = np.split(B[d], 2)
        h, c = h0[d].copy(), c0[d].copy()
        for t in range(T - 1, -1, -1) if reverse else range(T):
            hn, cn = _step(op, acts[d], X[t], h, c, W[d], R[d], wb, rb, P[d], clip, input_forget, linear_before_reset)
            live = (t < lens)[:, None]
            h, c = np.where(live, hn, h), np.where(live, cn, c)
            Y[t, d] = np.where(live, hn, 0)
        Yh[d], Yc[d] = np.where((lens > 0)[:, None], h, 0), np.where((lens > 0)[:, None], c, 0)
    if layout:
        Y, Yh, Yc = Y.transpose(2, 0, 1, 3), Yh.swapaxes(0, 1), Yc.swapaxes(0, 1)
    return Y, Yh, (Yc if op == "LSTM" else None)


class _Recurrent(OpRun):
    op_domain = ""

    def _run(
        self, X, W, R, B=None, sequence_lens=None, initial_h=None, initial_c=None, P=None, activations=None, **attrs
    ):
        attrs.pop("hidden_size", None)
        attrs = {k: v for k, v in attrs.items() if v is not None}
        outs = run(
            self.onnx_node.op_type,
            X,
            W,
            R,
            B,
            sequence_lens,
            initial_h,
            initial_c,
            P,
            activations_=activations,
            **attrs,
        )
        return tuple(o for o in outs if o is not None)[: len(self.onnx_node.output)]


class LSTMByDefinition(_Recurrent):
    pass


class GRUByDefinition(_Recurrent):
    def _run(self, X, W, R, B=None, sequence_lens=None, initial_h=None, **attrs):
        return super()._run(X, W, R, B, sequence_lens, initial_h, **attrs)


class RNNByDefinition(GRUByDefinition):
    pass


LSTMByDefinition.__name__ = "LSTM"
GRUByDefinition.__name__ = "GRU"
RNNByDefinition.__name__ = "RNN"
