"""DeepLIFT (Shrikumar et al. 2017, "Learning important features through propagating activation
differences", arXiv:1704.02685) as modified rules.

Every tensor t has a difference-from-reference Δt = t - t', where t' is its value when the network
runs on the baseline (``env.ref``: a second copy of the forward graph, built by the head). The walker
carries *multipliers* m_t instead of gradients, and every rule keeps the paper's
summation-to-delta property node by node:

    sum over inputs of m_x Δx  =  sum over outputs of m_y Δy

so that at the input sum((x - x') m_x) = sum(seed * (f(x) - f(x'))) (completeness). The rules:

* linear and affine ops (Conv, Gemm and MatMul with one operand on the path, Add, pooling by
  averages, shape ops, BatchNormalization in inference mode): their true VJP is exact for Δ
  (``rule = "gradient"`` in rules/deeplift.toml);
* ``rescale`` (the paper's rescale rule, section 3.5.1) for every elementwise nonlinearity of one
  input, and for reductions of an elementwise map (ReduceL1/L2/SumSquare/LogSum/LogSumExp);
* ``shapley_product`` for products of two tensors on the path (Mul, Div, MatMul, Einsum, Gemm);
* ``extremum`` for Max/Min of every kind (MaxPool, GlobalMaxPool, ReduceMax/Min, elementwise);
* ``softmax``: Softmax/LogSoftmax decomposed into rescaled exp, log and linear sums;
* ``standardize``: the normalisation layers decomposed into rescale, Shapley products and linear
  maps;
* ``switch`` for Where whose condition depends on the input;
* ``projection``, a last resort for any other op: exact, but blind to the op's structure.

Thresholds: where a secant Δy/Δx is needed, |Δx| <= tiny * max(1, |x|, |x'|) counts as "no
difference" and the local gradient at x is used instead. ``tiny = 0`` (the default) means sqrt of
the machine epsilon of x's type (3.5e-4 for float32, 1.5e-8 for float64, 3.1e-2 for float16),
fixed when the graph is built: the classic finite-difference step, which balances the rounding
error of the secant (eps |y| / |Δx|) against the error of the tangent (|f''| |Δx| / 2).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxplain.errors import OnnxplainError
from onnxplain.graph.backward import VALUE_FREE
from onnxplain.graph.builder import np_dtype, rank
from onnxplain.rules.table import modified
from onnxplain.rules.vjp import VJP, attr, load_all
from onnxplain.rules.vjp.activation import _softmax_axes
from onnxplain.rules.vjp.pooling import _scatter_add, _zeros
from onnxplain.rules.vjp.reduction import kept, reduced_axes

load_all()


# ---- helpers ------------------------------------------------------------------------------
def _ref(env, t):
    """t' : the tensor's value on the baseline (itself when it does not depend on the input)."""
    return env.ref.get(t.name, t)


def _path_inputs(env, node) -> list[int]:
    """Indices of the inputs whose values differ between the two passes (on the explained path)."""
    skip = VALUE_FREE.get(node.op, ())
    return [
        i
        for i, t in enumerate(node.inputs)
        if i not in skip and t.name and not isinstance(t, gs.Constant) and env.on_path(t)
    ]


def _tol(tiny: float, t) -> float:
    if tiny > 0:
        return tiny
    return float(np.sqrt(np.finfo(np_dtype(t) or np.float32).eps))


def _c(b, v, like):
    return b.const(v, like=like)


def _as(b, t, like):
    """``t`` cast to ``like``'s float type where they differ (Cast between float types)."""
    if np_dtype(t) == np_dtype(like) or np_dtype(like) is None:
        return t
    return b.Cast(t, to=onnx.helper.np_dtype_to_tensor_dtype(np_dtype(like)))


def _mid(b, t, tr):
    """(t + t') / 2, typed and shaped like t."""
    m = b.Mul(b.Add(t, tr), _c(b, 0.5, t))
    m.dtype, m.shape = t.dtype, t.shape
    return m


def _no_delta(b, d, t, tr, tol):
    """|Δt| <= tol * max(1, |t|, |t'|): too small a difference for a secant."""
    scale = b.Max(_c(b, 1, t), b.Abs(t), b.Abs(tr))
    return b.Not(b.Greater(b.Abs(d), b.Mul(scale, _c(b, tol, t))))


def _secant(b, f, fr, t, tr, tangent, tol):
    """Δf / Δt, or ``tangent`` (df/dt at t) where |Δt| is tiny."""
    d = b.Sub(t, tr)
    small = _no_delta(b, d, t, tr, tol)
    return b.Where(small, tangent, b.Div(b.Sub(f, fr), b.Where(small, _c(b, 1, t), d)))


def _true_vjp(b, node, g):
    rule = VJP.get(node.op)
    if rule is None:
        return None
    out = list(rule(b, node, g))
    return out + [None] * (len(node.inputs) - len(out))


def _inv_count(b, x, reduced):
    """1 / (number of elements of x per element of ``reduced``), as a tensor like x."""
    to = onnx.helper.np_dtype_to_tensor_dtype(np_dtype(x))
    return b.Div(b.Cast(b.Size(reduced), to=to), b.Cast(b.Size(x), to=to))


# ---- rescale ------------------------------------------------------------------------------
# On each piece y is x, -x or a constant (Clip's bounds are off the path), so Δy and Δx are the same
# rounded difference (or Δy is exact): the secant is exact, and bounded by 1, for any Δx != 0. Only
# Δx = 0 (0/0) takes the true VJP; other nonlinearities also take it where |Δx| is tiny.
EXACT_PIECES = {"Relu", "Clip", "Abs"}


@modified("rescale", tiny=0.0)
def rescale(env, tiny):
    """The rescale rule for a nonlinearity y = f(x) of one input on the path:

        m_x = m_y * Δy / Δx,   or m_y * f'(x) (the true VJP) where |Δx| is tiny
        (Relu, Clip, Abs: where Δx = 0, see EXACT_PIECES).

    Other inputs (Clip's bounds, PRelu's slope, Pow's exponent) must be off the path; when they are
    not, the node gets the projection rule. Reductions of an elementwise map are rescaled piece by
    piece (see :func:`_reduce_rescale`).
    """

    def rule(b, node, g):
        if node.op in _REDUCE_RESCALE:
            return _reduce_rescale(env, b, node, g, tiny)
        on = _path_inputs(env, node)
        if len(on) != 1 or len(node.outputs) != 1:
            return _projection(env, b, node, g, tiny)
        i = on[0]
        x, y = node.inputs[i], node.outputs[0]
        xr = _ref(env, x)
        true = _true_vjp(b, node, g)
        dx, dy = b.Sub(x, xr), _as(b, b.Sub(y, _ref(env, y)), x)
        out = [None] * len(node.inputs)
        if node.op in EXACT_PIECES and tiny == 0:  # Δy/Δx is exact wherever Δx != 0; where Δx = 0, Δy = 0 too,
            # so with z = [Δx = 0]: m = g Δy / (Δx + z) + z f'(x) g, without Where (2.7x a Mul in onnxruntime)
            z = b.Cast(b.Equal(dx, _c(b, 0, x)), to=onnx.helper.np_dtype_to_tensor_dtype(np_dtype(x)))
            secant = b.Mul(_as(b, g[0], x), b.Div(dy, b.Add(dx, z)))
            out[i] = secant if true is None else b.Add(secant, b.Mul(z, true[i]))
            return out
        small = _no_delta(b, dx, x, xr, _tol(tiny, x))
        secant = b.Mul(_as(b, g[0], x), b.Div(dy, b.Where(small, _c(b, 1, x), dx)))
        local = true[i] if true is not None else b.Mul(secant, _c(b, 0, x))
        out[i] = b.Where(small, local, secant)
        return out

    return rule


def _reduce_rescale(env, b, node, g, tiny):
    """y = outer(sum over the axes of inner(x)); each piece is rescaled, the sum is linear:

    ReduceSumSquare: inner x^2, Δ(x^2)/Δx = x + x' (exact);
    ReduceL2: also outer sqrt, Δsqrt(s)/Δs = 1 / (y + y') (0 where y = y' = 0);
    ReduceL1: inner |x|, secant with fallback sign(x);
    ReduceLogSum: outer log, secant with fallback 1/s;
    ReduceLogSumExp: inner e = exp(x - c), outer log(s) + c, with c = max(max x, max x') per group
    (a constant shared by both passes, which leaves the multipliers unchanged).
    """
    axes = reduced_axes(node)
    if axes is None:
        return [g[0]]
    x = node.inputs[0]
    xr = _ref(env, x)
    tol = _tol(tiny, x)
    gk = kept(b, node, g[0], axes)
    op = node.op
    if op == "ReduceSumSquare":
        return [b.Mul(gk, b.Add(x, xr))]
    if op == "ReduceL2":
        yk, ykr = kept(b, node, node.outputs[0], axes), kept(b, node, _ref(env, node.outputs[0]), axes)
        tot = b.Add(yk, ykr)
        pos = b.Greater(tot, _c(b, 0, x))
        slope = b.Where(pos, b.Reciprocal(b.Where(pos, tot, _c(b, 1, x))), _c(b, 0, x))
        return [b.Mul(b.Mul(gk, slope), b.Add(x, xr))]
    if op == "ReduceL1":
        return [b.Mul(gk, _secant(b, b.Abs(x), b.Abs(xr), x, xr, b.Sign(x), tol))]
    if op == "ReduceLogSum":
        s = b.reduce("ReduceSum", x, axes, keepdims=True)
        sr = b.reduce("ReduceSum", xr, axes, keepdims=True)
        slope = _secant(b, b.Log(s), b.Log(sr), s, sr, b.Reciprocal(s), tol)
        return [b.Expand(b.Mul(gk, slope), b.Shape(x))]
    # ReduceLogSumExp
    c = b.Max(b.reduce("ReduceMax", x, axes, keepdims=True), b.reduce("ReduceMax", xr, axes, keepdims=True))
    e, er = b.Exp(b.Sub(x, c)), b.Exp(b.Sub(xr, c))
    s, sr = b.reduce("ReduceSum", e, axes, keepdims=True), b.reduce("ReduceSum", er, axes, keepdims=True)
    slope = _secant(b, b.Log(s), b.Log(sr), s, sr, b.Reciprocal(s), tol)
    return [b.Mul(b.Mul(gk, slope), _secant(b, e, er, x, xr, e, tol))]


_REDUCE_RESCALE = {"ReduceSumSquare", "ReduceL2", "ReduceL1", "ReduceLogSum", "ReduceLogSumExp"}


# ---- products -----------------------------------------------------------------------------
@modified("shapley_product", tiny=0.0)
def shapley_product(env, tiny):
    """Products of two tensors on the path, y = a b (Mul; MatMul, Einsum and Gemm as bilinear maps):

        Δ(ab) = ā Δb + b̄ Δa  exactly,  ā = (a + a') / 2,  b̄ = (b + b') / 2,

    the Shapley value of the two factors. So m_a and m_b are the true VJP evaluated at the
    midpoints (ā, b̄). Div is a (1/b): Δ(1/b) = -Δb / (b b') exactly, so m_a = m_y (1/b + 1/b') / 2
    and m_b = -m_y ā / (b b'), also when only b is on the path. With one factor on the path the op
    is linear: its true VJP. Three or more factors on the path (Einsum) get the projection rule.
    """

    def rule(b, node, g):
        on = _path_inputs(env, node)
        if node.op == "Div":
            return _div(env, b, node, g, on)
        if len(on) <= 1:
            return _true_vjp(b, node, g)
        if len(on) > 2:
            return _projection(env, b, node, g, tiny)
        ins = list(node.inputs)
        for i in on:
            ins[i] = _mid(b, ins[i], _ref(env, ins[i]))
        at_mid = SimpleNamespace(
            op=node.op, name=node.name, attrs=node.attrs, domain=node.domain, inputs=ins, outputs=node.outputs
        )
        return _true_vjp(b, at_mid, g)

    return rule


def _div(env, b, node, g, on):
    a, d = node.inputs[0], node.inputs[1]
    if 1 not in on:
        return _true_vjp(b, node, g)
    gy = g[0]
    inv, inv_r = b.Reciprocal(d), b.Reciprocal(_ref(env, d))
    a_bar = _mid(b, a, _ref(env, a)) if 0 in on else a
    m_d = b.Neg(b.Mul(b.Mul(gy, a_bar), b.Mul(inv, inv_r)))
    m_a = b.Mul(gy, _mid(b, inv, inv_r)) if 0 in on else None
    return [m_a, m_d]


# ---- max and min --------------------------------------------------------------------------
@modified("extremum")
def extremum(env):
    """y = max over a set (MaxPool window, GlobalMaxPool plane, ReduceMax axes, elementwise Max
    inputs; Min alike). Let i be the winner at x and k the winner at x'. Then

        Δx_k <= Δy <= Δx_i,   and   Δy = λ Δx_i + (1 - λ) Δx_k  with
        λ = (x_i - x_k) / ((x_i - x_k) + (x'_k - x'_i))  in [0, 1]

    (the margin of the winner at x over the share of both margins; λ = 1 when i = k). So the
    multiplier goes to the winner at x with weight λ and to the winner at the baseline with 1 - λ:
    a convex mix of the two gradient routes that sums to Δy exactly, with multipliers in [0, 1] and
    no division by a small difference. Ties share their route evenly (as the true VJP of Reduce*
    and Max/Min does); MaxPool routes to the first maximum of each window (its Indices).
    """

    def rule(b, node, g):
        if node.op == "MaxPool":
            return _max_pool(env, b, node, g)
        if node.op in ("Max", "Min"):
            return _max_min(env, b, node, g)
        if node.op == "GlobalMaxPool":
            r = rank(node.inputs[0])
            return [_reduce_extremum(env, b, node, g[0], list(range(2, r)), True, True)]
        axes = reduced_axes(node)
        if axes is None:
            return [g[0]]
        return [_reduce_extremum(env, b, node, g[0], axes, node.op == "ReduceMax", bool(attr(node, "keepdims", 1)))]

    return rule


def _mix(b, gap, gap_r, like):
    """λ = gap / (gap + gap_r) (both >= 0), 1 where both are 0."""
    tot = b.Add(gap, gap_r)
    pos = b.Greater(tot, _c(b, 0, like))
    return b.Where(pos, b.Div(gap, b.Where(pos, tot, _c(b, 1, like))), _c(b, 1, like))


def _reduce_extremum(env, b, node, gy, axes, is_max, keepdims):
    x, y = node.inputs[0], node.outputs[0]
    xr, yr = _ref(env, x), _ref(env, y)
    if not keepdims:
        gy, y, yr = b.unsqueeze(gy, axes), b.unsqueeze(y, axes), b.unsqueeze(yr, axes)
    to = onnx.helper.np_dtype_to_tensor_dtype(np_dtype(x))
    win, win_r = b.Cast(b.Equal(x, y), to=to), b.Cast(b.Equal(xr, yr), to=to)
    n, n_r = b.reduce("ReduceSum", win, axes), b.reduce("ReduceSum", win_r, axes)
    x_at_r = b.Div(b.reduce("ReduceSum", b.Mul(x, win_r), axes), n_r)  # x at the baseline's winners
    xr_at_x = b.Div(b.reduce("ReduceSum", b.Mul(xr, win), axes), n)  # x' at x's winners
    gap, gap_r = (b.Sub(y, x_at_r), b.Sub(yr, xr_at_x)) if is_max else (b.Sub(x_at_r, y), b.Sub(xr_at_x, yr))
    lam = _mix(b, b.Relu(gap), b.Relu(gap_r), x)
    share = b.Add(b.Mul(win, b.Div(lam, n)), b.Mul(win_r, b.Div(b.Sub(_c(b, 1, x), lam), n_r)))
    return b.Mul(gy, share)


def _max_min(env, b, node, g):
    """Variadic elementwise Max/Min (broadcasting): the sets are the inputs at each output position."""
    if len(node.inputs) == 1:
        return [g[0]]
    y = node.outputs[0]
    yr = _ref(env, y)
    to = onnx.helper.np_dtype_to_tensor_dtype(np_dtype(y))
    xs = list(node.inputs)
    xrs = [_ref(env, t) for t in xs]
    wins = [b.Cast(b.Equal(t, y), to=to) for t in xs]
    wins_r = [b.Cast(b.Equal(t, yr), to=to) for t in xrs]
    n, n_r = b.Sum(*wins), b.Sum(*wins_r)
    x_at_r = b.Div(b.Sum(*[b.Mul(t, w) for t, w in zip(xs, wins_r)]), n_r)
    xr_at_x = b.Div(b.Sum(*[b.Mul(t, w) for t, w in zip(xrs, wins)]), n)
    is_max = node.op == "Max"
    gap, gap_r = (b.Sub(y, x_at_r), b.Sub(yr, xr_at_x)) if is_max else (b.Sub(x_at_r, y), b.Sub(xr_at_x, yr))
    lam = _mix(b, b.Relu(gap), b.Relu(gap_r), y)
    a, a_r = b.Mul(g[0], b.Div(lam, n)), b.Mul(g[0], b.Div(b.Sub(_c(b, 1, y), lam), n_r))
    return [b.Add(b.Mul(a, w), b.Mul(a_r, w_r)) for w, w_r in zip(wins, wins_r)]


def _max_pool(env, b, node, g):
    x, y = node.inputs[0], node.outputs[0]
    xr, yr = _ref(env, x), _ref(env, y)
    attrs = {k: v for k, v in node.attrs.items() if k != "storage_order"}
    with_idx = len(node.outputs) > 1 and node.outputs[1].name and not attr(node, "storage_order", 0)
    if with_idx:
        idx, idx_r = node.outputs[1], _ref(env, node.outputs[1])
    else:
        _, idx = b.emit("MaxPool", x, outputs=2, dtype=[np_dtype(x), np.int64], **attrs)
        _, idx_r = b.emit("MaxPool", xr, outputs=2, dtype=[np_dtype(x), np.int64], **attrs)
    flat = b.ints([-1])
    shape_y = b.Shape(y)
    if env.ref_one:  # one baseline item for the whole batch
        xr, yr = b.Expand(xr, b.Shape(x)), b.Expand(yr, shape_y)
        item = b.reduce("ReduceProd", b.shape_of(x, 1), None, keepdims=True)  # Indices are flat over N, C, ...
        zero, one = b.const(np.int64(0)), b.const(np.int64(1))
        offsets = b.Mul(b.Range(zero, b.squeeze(b.shape_of(x, 0, 1), [0]), one), item)
        idx_r = b.Add(b.Expand(idx_r, shape_y), b.Reshape(offsets, b.ints([-1] + [1] * (rank(y) - 1))))
    x_at_r = b.Reshape(b.GatherElements(b.Reshape(x, flat), b.Reshape(idx_r, flat), axis=0), shape_y)
    xr_at_x = b.Reshape(b.GatherElements(b.Reshape(xr, flat), b.Reshape(idx, flat), axis=0), shape_y)
    lam = _mix(b, b.Relu(b.Sub(y, x_at_r)), b.Relu(b.Sub(yr, xr_at_x)), x)
    zeros = _zeros(b, b.Shape(b.Reshape(x, flat)), x)
    k = list(attr(node, "kernel_shape"))
    n = len(k)
    s = list(attr(node, "strides") or [1] * n)
    d = list(attr(node, "dilations") or [1] * n)
    classes = [-(-((ki - 1) * di + 1) // si) for ki, si, di in zip(k, s, d)]
    to_x = _scatter_add(b, zeros, idx, b.Mul(g[0], lam), classes, y.shape)
    to_r = _scatter_add(b, zeros, idx_r, b.Mul(g[0], b.Sub(_c(b, 1, x), lam)), classes, y.shape)
    return [b.Reshape(b.Add(to_x, to_r), b.Shape(x))]


# ---- Where --------------------------------------------------------------------------------
@modified("switch", tiny=0.0)
def switch(env, tiny):
    """y = Where(c, a, b). Where c = c' the chosen branch gets the whole multiplier (the true VJP).
    Where the condition flips (c depends on the input), with J = a - b and J' = a' - b':

        Δy = λ Δa + (1 - λ) Δb,   λ = (c ? J : -J') / (J - J')

    exactly; where |J - J'| is tiny (a switch that is continuous at both points, J ≈ J' ≈ 0, or
    one that jumps by the same amount at both) the branches share it evenly, λ = 1/2. A jump
    (Where(x > 0, 1, 0)) cannot be attributed to a or b; completeness then misses the jump.
    """

    def rule(b, node, g):
        c, a, bb = node.inputs
        cr = _ref(env, c)
        if cr is c:
            return _true_vjp(b, node, g)
        ar, br = _ref(env, a), _ref(env, bb)
        gy, y = g[0], node.outputs[0]
        jump, jump_r = b.Sub(a, bb), b.Sub(ar, br)
        den = b.Sub(jump, jump_r)
        small = _no_delta(b, den, jump, jump_r, _tol(tiny, y))
        lam = b.Where(small, _c(b, 0.5, y), b.Div(b.Where(c, jump, b.Neg(jump_r)), b.Where(small, _c(b, 1, y), den)))
        one, zero = _c(b, 1, y), _c(b, 0, y)
        same = b.Equal(c, cr)
        wa = b.Where(same, b.Where(c, one, zero), lam)
        wb = b.Where(same, b.Where(c, zero, one), b.Sub(one, lam))
        return [None, b.Mul(gy, wa), b.Mul(gy, wb)]

    return rule


# ---- softmax ------------------------------------------------------------------------------
@modified("softmax", tiny=0.0)
def softmax(env, tiny):
    """LogSoftmax z = x - lse, lse = log(s), s = sum(exp x) over the softmax axes, and Softmax
    y = exp(z), decomposed into rescaled elementwise maps and linear sums (no products):

        m_z = m_y Δy/Δz                      (Softmax only; fallback y)
        m_x = m_z - sum(m_z) (Δlse/Δs) (Δe/Δx)

    Δe/Δx and Δlse/Δs are logarithmic means (of e and e', and of 1/s), so their product lies in
    [0, 1] and no multiplier exceeds |m_y| by more than the row's size, however far apart the two
    passes are. Exponentials are taken as e = exp(x - c), c = max(max x, max x') per row, a constant
    shift of both passes which leaves every multiplier unchanged; lse is computed per pass with its
    own shift. Fallbacks where a difference is tiny: e and 1/s.
    """

    def rule(b, node, g):
        x = node.inputs[0]
        xr = _ref(env, x)
        tol = _tol(tiny, x)
        axes = _softmax_axes(b, node)

        def lse(t):
            top = b.reduce("ReduceMax", t, axes)
            return b.Add(top, b.Log(b.reduce("ReduceSum", b.Exp(b.Sub(t, top)), axes)))

        lse_x, lse_r = lse(x), lse(xr)
        c = b.Max(b.reduce("ReduceMax", x, axes), b.reduce("ReduceMax", xr, axes))
        e, er = b.Exp(b.Sub(x, c)), b.Exp(b.Sub(xr, c))
        s, sr = b.Exp(b.Sub(lse_x, c)), b.Exp(b.Sub(lse_r, c))
        slope = b.Mul(_secant(b, lse_x, lse_r, s, sr, b.Reciprocal(s), tol), _secant(b, e, er, x, xr, e, tol))
        m_z = g[0]
        if node.op == "Softmax":
            y = node.outputs[0]
            m_z = b.Mul(m_z, _secant(b, y, _ref(env, y), b.Sub(x, lse_x), b.Sub(xr, lse_r), y, tol))
        return [b.Sub(m_z, b.Mul(b.reduce("ReduceSum", m_z, axes), slope))]

    return rule


# ---- normalisation ------------------------------------------------------------------------
@modified("standardize", tiny=0.0)
def standardize(env, tiny):
    """Layer/instance/group normalisation (and BatchNormalization in training mode), decomposed as
    x_c = x - mean(x), v = mean(x_c^2), r = (v + eps)^(-1/2), x_hat = x_c r, y = x_hat scale + B:

        m_xhat = m_y scale
        m_xc   = m_xhat r̄ + (m_v / n) (x_c + x_c')     (Shapley product x_c r; Δ(x_c^2) = (x_c + x_c') Δx_c)
        m_v    = -sum(m_xhat x̄_c) (r r')^2 / (r + r')   (Δr / Δv exactly, with no division by Δv)
        m_x    = m_xc - mean(m_xc)                     (centring is linear)

    All exact. BatchNormalization in inference mode is affine: its true VJP. Scale or bias on the
    path, or a cotangent on the Mean/InvStdDev outputs, fall back to the projection rule.
    """

    def rule(b, node, g):
        x = node.inputs[0]
        r = rank(x)
        on = _path_inputs(env, node)
        op = node.op
        if op == "BatchNormalization" and not attr(node, "training_mode", 0):
            return _true_vjp(b, node, g)
        if r is None or on != [0] or any(t is not None for t in g[1:]):
            return _projection(env, b, node, g, tiny)
        eps = float(attr(node, "epsilon", 1e-5))
        xr = _ref(env, x)
        scale = node.inputs[1]
        per_channel = b.Reshape(scale, b.ints([-1] + [1] * (r - 2))) if op != "LayerNormalization" else scale
        m_h = b.Mul(g[0], per_channel)
        if op == "LayerNormalization":
            axes = list(range(attr(node, "axis", -1) % r, r))
        elif op == "InstanceNormalization":
            axes = list(range(2, r))
        elif op == "BatchNormalization":
            axes = [a for a in range(r) if a != 1]
        else:  # GroupNormalization
            if b.opset < 21:
                raise OnnxplainError(f"GroupNormalization '{node.name}': the deprecated opset-18 form is not supported")
            groups = b.ints([0, int(attr(node, "num_groups")), -1])
            m_x = _standardized(b, b.Reshape(x, groups), b.Reshape(xr, groups), [2], eps, b.Reshape(m_h, groups))
            return [b.Reshape(m_x, b.Shape(x))] + [None] * (len(node.inputs) - 1)
        return [_standardized(b, x, xr, axes, eps, m_h)] + [None] * (len(node.inputs) - 1)

    return rule


def _standardized(b, x, xr, axes, eps, m_h):
    """Multiplier of x for x_hat = (x - mean) / sqrt(var + eps) over ``axes``, given m_hat."""

    def stats(t):
        xc = b.Sub(t, b.reduce("ReduceMean", t, axes))
        v = b.reduce("ReduceMean", b.Mul(xc, xc), axes)
        return xc, v, b.Reciprocal(b.Sqrt(b.Add(v, _c(b, eps, t))))

    xc, v, r = stats(x)
    xcr, vr, rr = stats(xr)
    m_r = b.reduce("ReduceSum", b.Mul(m_h, _mid(b, xc, xcr)), axes)
    prod = b.Mul(r, rr)
    m_v = b.Neg(b.Mul(m_r, b.Div(b.Mul(prod, prod), b.Add(r, rr))))
    m_xc = b.Add(b.Mul(m_h, _mid(b, r, rr)), b.Mul(b.Mul(m_v, _inv_count(b, x, v)), b.Add(xc, xcr)))
    return b.Sub(m_xc, b.reduce("ReduceMean", m_xc, axes))


# ---- projection ---------------------------------------------------------------------------
@modified("projection", tiny=0.0)
def projection(env, tiny):
    """The last resort, for any op (several inputs and outputs too): per batch item,

        m_x = Δx <m_y, Δy> / <Δx, Δx>,   summed over every input and output on the path,

    which is exact (sum m_x Δx = sum m_y Δy) whatever the op, but attributes along Δx only, blind to
    the op's structure. Where |Δx| is tiny (||Δx||^2 <= tiny^2 sum max(1, x^2, x'^2)) the true VJP
    is used (zero for ops without one). Batch items stay separate when every tensor involved has
    the same leading dimension; otherwise the sums run over whole tensors.
    """

    def rule(b, node, g):
        return _projection(env, b, node, g, tiny)

    return rule


def _projection(env, b, node, g, tiny):
    on = _path_inputs(env, node)
    if not on:
        return [None] * len(node.inputs)
    outs = [(t, gt) for t, gt in zip(node.outputs, g) if gt is not None]
    tensors = [node.inputs[i] for i in on] + [t for t, _ in outs]
    ranks = {rank(t) for t in tensors}
    leads = {t.shape[0] if t.shape else None for t in tensors}
    per_item = len(ranks) == 1 and None not in ranks and min(ranks) >= 1 and len(leads) == 1 and None not in leads
    r = rank(tensors[0]) if per_item else None
    like = node.inputs[on[0]]
    tol = _tol(tiny, like)

    def total(t):
        if per_item and r > 1:
            return b.reduce("ReduceSum", t, list(range(1, r)), keepdims=True)
        return t if per_item else b.reduce("ReduceSum", t, None, keepdims=False)

    s = b.Sum(*[total(_as(b, b.Mul(gt, b.Sub(t, _ref(env, t))), like)) for t, gt in outs])
    q_terms, scale_terms, deltas = [], [], {}
    for i in on:
        t = node.inputs[i]
        tr = _ref(env, t)
        d = deltas[i] = b.Sub(t, tr)
        q_terms.append(total(b.Mul(d, d)))
        scale_terms.append(total(b.Max(_c(b, 1, t), b.Mul(t, t), b.Mul(tr, tr))))
    q = b.Sum(*q_terms) if len(q_terms) > 1 else q_terms[0]
    scale = b.Sum(*scale_terms) if len(scale_terms) > 1 else scale_terms[0]
    small = b.Not(b.Greater(q, b.Mul(scale, _c(b, tol * tol, like))))
    k = b.Div(s, b.Where(small, _c(b, 1, like), q))
    true = _true_vjp(b, node, g)
    vjp = VJP.get(node.op)
    broadcast = bool(vjp and vjp.broadcast)
    out = [None] * len(node.inputs)
    for i in on:
        t = node.inputs[i]
        m = b.Mul(deltas[i], k)
        if broadcast:  # the walker sums output-shaped multipliers back: spread m evenly over the copies
            y = node.outputs[0]
            m = b.Mul(b.Expand(m, b.Shape(y)), _inv_count(b, y, t))
        local = true[i] if true is not None and true[i] is not None else b.Mul(m, _c(b, 0, t))
        out[i] = b.Where(small, local, m)
    return out
