"""VJPs of the recurrent layers LSTM, GRU and RNN (ONNX operators LSTM/GRU/RNN, opsets 7-22).

Backpropagation through time, unrolled over the sequence length, which must therefore be static:
per direction the rule re-computes the forward pass step by step from X and the initial states with
the spec's equations (keeping each step's gate values), then runs the reverse recursion from the
cotangents of Y, Y_h and Y_c. The input projections of all steps share one MatMul each way
(``X W^T`` forward, ``dA W`` back); only the recurrent products are per step. Only dX, dinitial_h and
dinitial_c are built; W, R, B and P get none.

Where the spec is silent the rule follows onnxruntime's CPU kernels (``deep_cpu_lstm``, ``deep_cpu_gru``,
``rnn``), as checked in tests/test_recurrent.py:

* ``sequence_lens``: a batch item past its length keeps its state and outputs zeros; the reverse direction
  starts at the item's own last valid step; a batch item of length 0 gets zero Y_h and Y_c;
* ``clip`` bounds the input of every gate activation (not LSTM's ``h(C)``); ``input_forget`` sets f = 1 - i;
* activation_alpha/beta are consumed in order by the activations that take them, with onnxruntime's
  defaults (LeakyRelu 0.01, HardSigmoid 0.2/0.5, Elu 1.0, the others 0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxplain.errors import OnnxplainError, ShapeError
from onnxplain.graph.builder import np_dtype
from onnxplain.rules.vjp import attr, vjp


def _k(b, v, like):
    return b.const(v, like=like)


@dataclass(frozen=True)
class Act:
    """An activation of the spec: whether it reads alpha/beta, their defaults, ``y = f(x)`` and ``g f'(x)``."""

    takes: tuple
    defaults: tuple
    f: Callable  # (b, x, alpha, beta) -> y
    vjp: Callable  # (b, g, x, y, alpha, beta) -> g * f'(x)


ACTIVATIONS = {
    "sigmoid": Act(
        (0, 0),
        (0, 0),
        lambda b, x, a, c: b.Sigmoid(x),
        lambda b, g, x, y, a, c: b.Mul(g, b.Mul(y, b.Sub(_k(b, 1, y), y))),
    ),
    "tanh": Act(
        (0, 0), (0, 0), lambda b, x, a, c: b.Tanh(x), lambda b, g, x, y, a, c: b.Mul(g, b.Sub(_k(b, 1, y), b.Mul(y, y)))
    ),
    "relu": Act(
        (0, 0), (0, 0), lambda b, x, a, c: b.Relu(x), lambda b, g, x, y, a, c: b.mask(g, b.Greater(x, _k(b, 0, x)))
    ),
    "affine": Act(
        (1, 1),
        (0, 0),
        lambda b, x, a, c: b.Add(b.Mul(x, _k(b, a, x)), _k(b, c, x)),
        lambda b, g, x, y, a, c: b.Mul(g, _k(b, a, g)),
    ),
    "leakyrelu": Act(
        (1, 0),
        (0.01, 0),
        lambda b, x, a, c: b.LeakyRelu(x, alpha=float(a)),
        lambda b, g, x, y, a, c: b.Where(b.Less(x, _k(b, 0, x)), b.Mul(g, _k(b, a, g)), g),
    ),
    "thresholdedrelu": Act(
        (1, 0),
        (0, 0),
        lambda b, x, a, c: b.mask(x, b.Greater(x, _k(b, a, x))),
        lambda b, g, x, y, a, c: b.mask(g, b.Greater(x, _k(b, a, x))),
    ),
    "scaledtanh": Act(
        (1, 1),
        (0, 0),
        lambda b, x, a, c: b.Mul(b.Tanh(b.Mul(x, _k(b, c, x))), _k(b, a, x)),
        lambda b, g, x, y, a, c: b.Mul(
            b.Mul(g, _k(b, a * c, g)), b.Sub(_k(b, 1, g), b.Mul(t := b.Tanh(b.Mul(x, _k(b, c, x))), t))
        ),
    ),
    "hardsigmoid": Act(
        (1, 1),
        (0.2, 0.5),
        lambda b, x, a, c: b.HardSigmoid(x, alpha=float(a), beta=float(c)),
        lambda b, g, x, y, a, c: b.mask(
            b.Mul(g, _k(b, a, g)), b.And(b.Greater(y, _k(b, 0, y)), b.Less(y, _k(b, 1, y)))
        ),
    ),
    "elu": Act(
        (1, 0),
        (1.0, 0),
        lambda b, x, a, c: b.Elu(x, alpha=float(a)),
        lambda b, g, x, y, a, c: b.Where(b.Less(x, _k(b, 0, x)), b.Mul(g, b.Add(y, _k(b, a, y))), g),
    ),
    "softsign": Act(
        (0, 0),
        (0, 0),
        lambda b, x, a, c: b.Softsign(x),
        lambda b, g, x, y, a, c: b.Div(g, b.Mul(d := b.Add(_k(b, 1, x), b.Abs(x)), d)),
    ),
    "softplus": Act((0, 0), (0, 0), lambda b, x, a, c: b.Softplus(x), lambda b, g, x, y, a, c: b.Mul(g, b.Sigmoid(x))),
}
DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


@dataclass
class Fn:
    """One activation with its alpha/beta bound, and the cell's clip, applied to a gate's input."""

    act: Act
    alpha: float
    beta: float
    clip: float | None

    def __call__(self, b, a):
        """(y, what the backward needs) for pre-activation ``a``."""
        x = a if self.clip is None else b.Max(b.Min(a, _k(b, self.clip, a)), _k(b, -self.clip, a))
        y = self.act.f(b, x, self.alpha, self.beta)
        return y, (a, x, y)

    def back(self, b, g, saved):
        a, x, y = saved
        ga = self.act.vjp(b, g, x, y, self.alpha, self.beta)
        return ga if self.clip is None else b.mask(ga, b.Less(b.Abs(a), _k(b, self.clip, a)))


def _str(v):
    return v.decode() if isinstance(v, bytes) else v


def activations(node, dirs: int) -> list[list[Fn]]:
    """Per direction, the cell's activations (f, g, h for LSTM; f, g for GRU; f for RNN)."""
    n = len(DEFAULT_ACTIVATIONS[node.op])
    names = [_str(s) for s in attr(node, "activations", None) or DEFAULT_ACTIVATIONS[node.op] * dirs]
    if len(names) != n * dirs:
        raise OnnxplainError(
            f"{node.op} '{node.name}': activations {names} must name {n * dirs} functions ({n} per direction)"
        )
    alphas, betas = list(attr(node, "activation_alpha", None) or []), list(attr(node, "activation_beta", None) or [])
    clip = attr(node, "clip", None)
    fns = []
    for j, name in enumerate(names):
        act = ACTIVATIONS.get(name.lower())
        if act is None:
            raise OnnxplainError(
                f"{node.op} '{node.name}': unknown activation '{name}' (the spec allows "
                f"{', '.join(sorted(ACTIVATIONS))})"
            )
        alpha = (alphas.pop(0) if alphas else act.defaults[0]) if act.takes[0] else 0.0
        beta = (betas.pop(0) if betas else act.defaults[1]) if act.takes[1] else 0.0
        fns.append(Fn(act, alpha, beta, None if node.op == "LSTM" and j % n == 2 else clip))  # not h(C)
    return [fns[d * n : (d + 1) * n] for d in range(dirs)]


# ---- one step of each cell: forward (state, saved values) and backward --------------------------------
# ``a`` is the step's input projection X_t W^T + biases [B, G*H]; R is R[d]^T ([H, G*H]) for the forward,
# R[d] ([G*H, H]) for the backward; every function returns the cotangent of ``a`` for the dX MatMul.


def lstm_step(b, cell, a, h, c):
    """it = f(a_i + h Ri + Pi C_{t-1}), ft = f(a_f + h Rf + Pf C_{t-1}) (or 1 - it with input_forget),
    ct = g(a_c + h Rc), Ct = ft C_{t-1} + it ct, ot = f(a_o + h Ro + Po Ct), Ht = ot h(Ct)."""
    f, g, hf = cell.acts
    H = cell.H
    ai, ao, af, ac = b.split(b.Add(a, b.MatMul(h, cell.rt)), [H] * 4, axis=1)
    if cell.p is not None:
        ai, af = b.Add(ai, b.Mul(cell.p[0], c)), b.Add(af, b.Mul(cell.p[2], c))
    i, si = f(b, ai)
    if cell.input_forget:
        fg, sf = b.Sub(_k(b, 1, i), i), None
    else:
        fg, sf = f(b, af)
    cc, sc = g(b, ac)
    cn = b.Add(b.Mul(fg, c), b.Mul(i, cc))
    if cell.p is not None:
        ao = b.Add(ao, b.Mul(cell.p[1], cn))
    o, so = f(b, ao)
    hc, sh = hf(b, cn)
    return b.Mul(o, hc), cn, (c, i, fg, cc, o, hc, si, sf, sc, so, sh)


def lstm_back(b, cell, s, dh, dc):
    f, g, hf = cell.acts
    c, i, fg, cc, o, hc, si, sf, sc, so, sh = s
    dao = f.back(b, b.Mul(dh, hc), so)
    dcn = b.Add(dc, hf.back(b, b.Mul(dh, o), sh))
    if cell.p is not None:
        dcn = b.Add(dcn, b.Mul(cell.p[1], dao))
    di, dfg = b.Mul(dcn, cc), b.Mul(dcn, c)
    dc_prev = b.Mul(dcn, fg)
    if cell.input_forget:
        di, daf = b.Sub(di, dfg), cell.zero
    else:
        daf = f.back(b, dfg, sf)
    dai = f.back(b, di, si)
    dac = g.back(b, b.Mul(dcn, i), sc)
    if cell.p is not None:
        dc_prev = b.Add(dc_prev, b.Add(b.Mul(cell.p[0], dai), b.Mul(cell.p[2], daf)))
    da = b.Concat(dai, dao, daf, dac, axis=1)
    return da, b.MatMul(da, cell.r), dc_prev


def gru_step(b, cell, a, h, c):
    """zt = f(a_z + h Rz), rt = f(a_r + h Rr), ht = g(a_h + (rt h) Rh) (Rbh is in a_h), or with
    linear_before_reset ht = g(a_h + rt (h Rh + Rbh)); Ht = (1 - zt) ht + zt h."""
    f, g = cell.acts
    H = cell.H
    az, ar, ah = b.split(a, [H] * 3, axis=1)
    if cell.lbr:
        rz, rr, hr = b.split(b.MatMul(h, cell.rt), [H] * 3, axis=1)
        hr = hr if cell.rbh is None else b.Add(hr, cell.rbh)
    else:
        rz, rr = b.split(b.MatMul(h, cell.rt_zr), [H] * 2, axis=1)
    z, sz = f(b, b.Add(az, rz))
    r, sr = f(b, b.Add(ar, rr))
    if cell.lbr:
        hh, shh = g(b, b.Add(ah, b.Mul(r, hr)))
    else:
        hh, shh = g(b, b.Add(ah, b.MatMul(b.Mul(r, h), cell.rt_h)))
        hr = None
    return b.Add(hh, b.Mul(z, b.Sub(h, hh))), c, (h, z, r, hh, hr, sz, sr, shh)


def gru_back(b, cell, s, dh, dc):
    f, g = cell.acts
    h, z, r, hh, hr, sz, sr, shh = s
    daz = f.back(b, b.Mul(dh, b.Sub(h, hh)), sz)
    dah = g.back(b, b.Sub(dh, b.Mul(dh, z)), shh)
    dh_prev = b.Mul(dh, z)
    if cell.lbr:
        dar = f.back(b, b.Mul(dah, hr), sr)
        dh_prev = b.Add(dh_prev, b.MatMul(b.Concat(daz, dar, b.Mul(dah, r), axis=1), cell.r))
    else:
        drh = b.MatMul(dah, cell.r_h)
        dar = f.back(b, b.Mul(drh, h), sr)
        dh_prev = b.Add(dh_prev, b.Add(b.Mul(drh, r), b.MatMul(b.Concat(daz, dar, axis=1), cell.r_zr)))
    return b.Concat(daz, dar, dah, axis=1), dh_prev, None


def rnn_step(b, cell, a, h, c):
    """Ht = f(a + h Ri)."""
    hn, s = cell.acts[0](b, b.Add(a, b.MatMul(h, cell.rt)))
    return hn, c, s


def rnn_back(b, cell, s, dh, dc):
    da = cell.acts[0].back(b, dh, s)
    return da, b.MatMul(da, cell.r), None


CELLS = {"LSTM": (lstm_step, lstm_back), "GRU": (gru_step, gru_back), "RNN": (rnn_step, rnn_back)}


@dataclass
class Cell:
    """One direction's weights, as the step functions use them."""

    acts: list
    H: int
    r: gs.Tensor  # R[d] [G*H, H]
    rt: gs.Tensor  # R[d]^T
    zero: gs.Tensor  # zeros [B, H]
    p: list | None = None  # LSTM peepholes [Pi, Po, Pf]
    input_forget: bool = False
    lbr: bool = False  # GRU linear_before_reset
    rbh: gs.Tensor | None = None  # GRU Rb of the h gate
    rt_zr: gs.Tensor | None = None
    rt_h: gs.Tensor | None = None
    r_zr: gs.Tensor | None = None
    r_h: gs.Tensor | None = None


def _input(node, i):
    return node.inputs[i] if len(node.inputs) > i and node.inputs[i].name else None


def _cell(b, node, d, H, acts, zero):
    """Direction ``d``'s Cell, its W[d] and the biases folded into the input projection."""
    op = node.op
    w, r, bias, p = node.inputs[1], node.inputs[2], _input(node, 3), _input(node, 7) if op == "LSTM" else None
    idx = b.const(np.int64(d))
    rd = b.Gather(r, idx, axis=0)
    cell = Cell(acts, H, rd, b.transpose(rd, [1, 0]), zero)
    xbias = None
    if bias is not None:
        wb, rb = b.split(b.Gather(bias, idx, axis=0), [GATES[op] * H] * 2, axis=0)
        xbias = b.Add(wb, rb)
    if op == "LSTM":
        cell.input_forget = bool(attr(node, "input_forget", 0))
        if p is not None:
            cell.p = b.split(b.Gather(p, idx, axis=0), [H] * 3, axis=0)
    if op == "GRU":
        cell.lbr = bool(attr(node, "linear_before_reset", 0))
        cell.r_zr, cell.r_h = b.split(rd, [2 * H, H], axis=0)
        cell.rt_zr, cell.rt_h = b.transpose(cell.r_zr, [1, 0]), b.transpose(cell.r_h, [1, 0])
        if cell.lbr and bias is not None:  # Rbh stays inside the reset gate's product
            rb_zr, cell.rbh = b.split(rb, [2 * H, H], axis=0)
            xbias = b.Add(wb, b.Concat(rb_zr, _k(b, np.zeros(H), zero), axis=0))
    return cell, b.Gather(w, idx, axis=0), xbias


def _zeros(b, x, H, dtype):
    """A [B, H] zero state for X [T, B, I] (B may be symbolic)."""
    n = x.shape[1] if x.shape is not None else None
    if isinstance(n, int) and n >= 0:
        return b.const(np.zeros((n, H)), dtype=dtype)
    shape = b.Concat(b.shape_of(x, 1, 2), b.ints([H]), axis=0)
    return b.emit("ConstantOfShape", shape, value=gs.Constant(b.name("zero"), np.zeros([1], dtype)), dtype=dtype)


def _add(b, u, v):
    return v if u is None else u if v is None else b.Add(u, v)


def _at(b, v, i: int, axis: int = 0):
    """``v`` at index ``i`` of ``axis`` (the axis dropped); None stays None."""
    return None if v is None else b.Gather(v, b.const(np.int64(i)), axis=axis)


@dataclass
class Masks:
    """sequence_lens as float masks: live[t] = [t < len] and hold = 1 - live ([T, B, 1]), alive = [len > 0]."""

    live: gs.Tensor
    hold: gs.Tensor
    alive: gs.Tensor


def _masks(b, lens, T: int, dtype) -> Masks | None:
    if lens is None:
        return None
    to = onnx.helper.np_dtype_to_tensor_dtype(dtype)
    steps = b.const(np.arange(T).reshape(T, 1), dtype=np_dtype(lens) or np.int32)
    live = b.unsqueeze(b.Cast(b.Less(steps, lens), to=to), [2])
    alive = b.unsqueeze(b.Cast(b.Greater(lens, b.const(0, like=lens)), to=to), [1])
    return Masks(live, b.Sub(_k(b, 1, live), live), alive)


def _direction(b, node, cell, wd, xbias, x, T, reverse, masks, h, c, gy, dh, dc):
    """One direction's BPTT: re-run the forward from (h, c), then the reverse recursion from the
    cotangents gy ([T, B, H]), dh and dc ([B, H]) of its Y, Y_h and Y_c. Returns (dX, dh0, dc0)."""
    step, back = CELLS[node.op]
    xa = b.MatMul(x, b.transpose(wd, [1, 0]))
    xa = xa if xbias is None else b.Add(xa, xbias)
    tape = []
    for t in range(T - 1, -1, -1) if reverse else range(T):
        hn, cn, saved = step(b, cell, _at(b, xa, t), h, c)
        tape.append((t, saved))
        if masks is None:
            h, c = hn, cn
        else:  # past its length a batch item keeps its state
            m = _at(b, masks.live, t)
            h = b.Add(h, b.Mul(m, b.Sub(hn, h)))
            c = None if c is None else b.Add(c, b.Mul(m, b.Sub(cn, c)))
    if masks is not None:  # Y_h, Y_c of a length-0 item are zeros
        dh, dc = [None if v is None else b.Mul(v, masks.alive) for v in (dh, dc)]
    dh = cell.zero if dh is None else dh
    dc = (cell.zero if dc is None else dc) if node.op == "LSTM" else None
    da = {}
    for t, saved in reversed(tape):
        dhn, dcn = _add(b, dh, _at(b, gy, t)), dc
        if masks is not None:
            m, k = _at(b, masks.live, t), _at(b, masks.hold, t)
            dhn, dcn = b.Mul(dhn, m), None if dc is None else b.Mul(dc, m)
        da[t], dh_prev, dc_prev = back(b, cell, saved, dhn, dcn)
        if masks is not None:
            dh_prev, dc_prev = b.Add(dh_prev, b.Mul(dh, k)), None if dc is None else b.Add(dc_prev, b.Mul(dc, k))
        dh, dc = dh_prev, dc_prev
    stacked = b.Concat(*[b.unsqueeze(da[t], [0]) for t in range(T)], axis=0)
    return b.MatMul(stacked, wd), dh, dc


@vjp("LSTM", "GRU", "RNN")
def recurrent(b, node, g):
    """Backpropagation through time (Werbos 1990, "Backpropagation through time: what it does and how
    to do it") of the ONNX LSTM/GRU/RNN equations, unrolled over the static sequence length."""
    op = node.op
    x, lens, h0, c0 = node.inputs[0], _input(node, 4), _input(node, 5), _input(node, 6) if op == "LSTM" else None
    layout = attr(node, "layout", 0)
    direction = _str(attr(node, "direction", "forward"))
    dirs = 2 if direction == "bidirectional" else 1
    T = x.shape[1 if layout else 0] if x.shape is not None else None
    if not isinstance(T, int) or T < 0:
        raise ShapeError(
            f"{op} '{node.name}': the sequence length of '{x.name}' is not static ({T}); its "
            f"gradient is unrolled over time: fix that dimension (e.g. python -m "
            f"onnxruntime.tools.make_dynamic_shape_fixed)"
        )
    H = attr(node, "hidden_size", None) or (node.inputs[2].shape or [None])[-1]
    if not isinstance(H, int):
        raise OnnxplainError(f"{op} '{node.name}': hidden_size is neither an attribute nor the static last dim of R")
    gy, gyh, gyc = (list(g) + [None] * 3)[:3]
    if layout:  # batch-first: work in [T, B, ...] and [dirs, B, H]
        x = b.transpose(x, [1, 0, 2])
        gy = None if gy is None else b.transpose(gy, [1, 2, 0, 3])
        gyh, gyc, h0, c0 = [None if t is None else b.transpose(t, [1, 0, 2]) for t in (gyh, gyc, h0, c0)]
    zero = _zeros(b, x, H, np_dtype(x))
    masks = _masks(b, lens, T, np_dtype(x))
    acts = activations(node, dirs)
    dx, dh0, dc0 = None, [], []
    for d in range(dirs):
        cell, wd, xbias = _cell(b, node, d, H, acts[d], zero)
        h = zero if h0 is None else _at(b, h0, d)
        c = (zero if c0 is None else _at(b, c0, d)) if op == "LSTM" else None
        dxd, dh, dc = _direction(
            b,
            node,
            cell,
            wd,
            xbias,
            x,
            T,
            direction == "reverse" or d == 1,
            masks,
            h,
            c,
            _at(b, gy, d, axis=1),
            _at(b, gyh, d),
            _at(b, gyc, d),
        )
        dx = _add(b, dx, dxd)
        dh0.append(b.unsqueeze(dh, [0]))
        dc0 += [] if dc is None else [b.unsqueeze(dc, [0])]
    dh0 = b.Concat(*dh0, axis=0) if dirs > 1 else dh0[0]
    dc0 = (b.Concat(*dc0, axis=0) if dirs > 1 else dc0[0]) if dc0 else None
    if layout:
        dx, dh0 = b.transpose(dx, [1, 0, 2]), b.transpose(dh0, [1, 0, 2])
        dc0 = None if dc0 is None else b.transpose(dc0, [1, 0, 2])
    return [dx, None, None, None, None, dh0, dc0, None][: len(node.inputs)]
