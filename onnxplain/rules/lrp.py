"""Layer-wise relevance propagation (LRP) as modified rules.

References: Bach et al. 2015, "On pixel-wise explanations for non-linear classifier decisions by
layer-wise relevance propagation", PLoS ONE 10(7) (LRP-0, LRP-epsilon, LRP-alpha-beta); Montavon et
al. 2017, "Explaining nonlinear classification decisions with deep Taylor decomposition", Pattern
Recognition 65 (z+, w^2, z^B); Montavon et al. 2019, "Layer-wise relevance propagation: an
overview", in Explainable AI, LNCS 11700 (LRP-gamma, the composite strategy); Kohlbrenner et al.
2020, "Towards best practice in explaining neural network decisions with LRP", IJCNN (flat rule,
composites); Ali et al. 2022, "XAI for transformers: better explanations through conservative
propagation", ICML (frozen normalisation statistics, gates).

The walker carries relevance instead of a cotangent: each rule maps the relevance ``R`` of a node's
output to the relevance of its inputs. A layer linear in its input x has contributions
z_kj = x_j w_jk and output z_k = sum_j z_kj (+ bias); every rule below redistributes R_k over j in
proportion to a (modified) contribution. The transposed products sum_k w_jk s_k are the true VJP
of the node (``VJP[node.op]``) applied to s = R / stab(z), so one rule covers Conv, ConvTranspose,
Gemm, MatMul, pools, reductions, Pad, Resize and the rest. Rules that modify the weights emit the
node's op again on transformed tensors (onnxruntime folds the constant weight transforms) and
take the VJP of a stand-in node holding those tensors.

``stab(z) = z + eps * sign(z)`` with sign(0) = +1 (as Zennit), so a zero output never divides by 0.

Products of two on-path activations (SiLU and SE gates, attention, decomposed GELU/LayerNorm) are
not linear in both. A *gate* operand, one produced by Sigmoid, HardSigmoid or Softmax (strong) or
by Tanh or Erf (weak), possibly through reshapes and arithmetic with constants, is frozen: it is
treated as a constant weight and receives no relevance (Arras et al. 2017's signal-take-all for
LSTM gates; Ali et al. 2022's AH-rule for attention). A normalisation statistic (a Reduce* of the input
through arithmetic with constants, RMSNorm's 1/sqrt(mean(x^2) + eps)) is frozen before any gate. Only the
strongest gates of a product are frozen; when no operand is a gate, the k remaining operands each get 1/k of
the epsilon relevance (each operand's share x_i * df/dx_i sums to z, so the halves conserve). In a Div by an on-path
tensor the divisor is frozen (normalisation statistics); a Div whose numerator is off the path is
an elementwise nonlinearity and passes relevance to the divisor unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxplain.errors import OnnxplainError, ShapeError
from onnxplain.graph.builder import np_dtype, rank
from onnxplain.rules.table import modified
from onnxplain.rules.vjp import VJP, attr, load_all

STABILIZER = 1e-6  # the stabiliser of the weight-modifying rules and of their epsilon fallback

# ops whose on-path operands multiply (None: every operand is a factor)
_FACTORS = {"Mul": (0, 1), "MatMul": (0, 1), "Gemm": (0, 1), "Conv": (0, 1), "ConvTranspose": (0, 1), "Einsum": None}
_GATES = {"Sigmoid": 2, "HardSigmoid": 2, "Softmax": 2, "Tanh": 1, "Erf": 1}
_THROUGH = {
    "Identity",
    "Cast",
    "Reshape",
    "Transpose",
    "Unsqueeze",
    "Squeeze",
    "Flatten",
    "Expand",
    "Neg",
    "Add",
    "Sub",
    "Mul",
    "Div",
}


def stab(b, z, eps: float):
    """z + eps * sign(z), with sign(0) = +1."""
    return b.Add(z, b.Where(b.Less(z, b.const(0, like=z)), b.const(-eps, like=z), b.const(eps, like=z)))


def _zeros(b, t):
    value = gs.Constant(b.name("zero"), np.zeros([1], dtype=np_dtype(t)))
    return b.emit("ConstantOfShape", b.Shape(t), value=value, dtype=np_dtype(t))


def _on(env, t) -> bool:
    return t is not None and bool(t.name) and env.on_path(t)


def gate_strength(t, env, depth: int = 8) -> int:
    """2 if ``t`` comes from Sigmoid/HardSigmoid/Softmax, 1 from Tanh/Erf, 0 otherwise, looking back
    through reshapes and arithmetic with off-path operands (e.g. 0.5 * (1 + erf(x / sqrt 2)))."""
    for _ in range(depth):
        if not t.inputs:
            return 0
        node = t.inputs[0]
        if node.op in _GATES:
            return _GATES[node.op]
        live = [u for u in node.inputs if _on(env, u)]
        if node.op not in _THROUGH or len(live) != 1:
            return 0
        t = live[0]
    return 0


_REDUCE = {"ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "ReduceL1", "ReduceLogSumExp"}
_ARITH = {
    "Sqrt",
    "Reciprocal",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Cast",
    "Identity",
    "Expand",
    "Unsqueeze",
    "Reshape",
    "Squeeze",
}


def is_statistic(t, env, depth: int = 8) -> bool:
    """``t`` is a normalisation statistic of an on-path tensor: a Reduce* (mean, sum of squares, ...)
    followed only by arithmetic with constants (+ eps, sqrt, reciprocal, powers), as RMSNorm's
    1 / sqrt(mean(x^2) + eps). Products freeze it (Ali et al. 2022's LN-rule; AttnLRP's Prop. 3.4)."""
    for _ in range(depth):
        if not t.inputs:
            return False
        node = t.inputs[0]
        if node.op in _REDUCE:
            return True
        live = [u for u in node.inputs if _on(env, u)]
        if node.op not in _ARITH or len({u.name for u in live}) != 1:
            return False
        t = live[0]
    return False


def shares(node, env):
    """({input index: share of the epsilon relevance}, [frozen input indices]) for a node's on-path inputs."""
    on = [i for i, t in enumerate(node.inputs) if _on(env, t)]
    if node.op == "Div" and len(on) > 1:
        return {0: 1.0}, [1]
    spec = _FACTORS.get(node.op, ())
    factors = [i for i in on if spec is None or i in spec]
    if len(factors) < 2:
        return {i: 1.0 for i in on}, []
    strength = {i: 3 if is_statistic(node.inputs[i], env) else gate_strength(node.inputs[i], env) for i in factors}
    top = max(strength.values())
    frozen = [i for i in factors if strength[i] == top] if min(strength.values()) < top else []
    live = [i for i in factors if i not in frozen]
    out = {i: 1.0 / len(live) for i in live}
    out.update({i: 1.0 for i in on if i not in factors})
    return out, frozen


def _frozen_norm_transpose(b, node, s):
    """LayerNormalization/InstanceNormalization with their statistics frozen (Ali et al. 2022's LN-rule):
    y = scale * (x - mean_A x) / sigma + bias is linear in x, with transpose c - mean_A c, c = s scale / sigma."""
    from onnxplain.rules.vjp.normalization import standardized

    x, scale = node.inputs[0], node.inputs[1]
    r = rank(x)
    if r is None:
        raise ShapeError(f"{node.op} '{node.name}': the rank of its input must be known")
    if node.op == "LayerNormalization":
        axes = list(range(attr(node, "axis", -1) % r, r))
    else:
        axes = list(range(2, r))
        scale = b.Reshape(scale, b.ints([-1] + [1] * (r - 2)))
    _, inv = standardized(b, x, axes, float(attr(node, "epsilon", 1e-5)))
    c = b.Mul(b.Mul(s, scale), inv)
    return [b.Sub(c, b.reduce("ReduceMean", c, axes, keepdims=True))] + [None] * (len(node.inputs) - 1)


def transpose(b, node, s):
    """sum_k (dz_k / dx_j) s_k for every input: the node's true VJP at cotangent ``s``."""
    if node.op in ("LayerNormalization", "InstanceNormalization"):
        return _frozen_norm_transpose(b, node, s)
    load_all()
    if node.op not in VJP:
        raise OnnxplainError(f"LRP rules need the VJP of {node.op} ('{node.name}'), and there is none")
    return VJP[node.op](b, node, [s] + [None] * (len(node.outputs) - 1))


def epsilon_relevance(b, node, g, env, eps: float):
    """R_x = x * VJP(R / stab(z)) for every on-path input (times its share), zeros for frozen gates."""
    if node.op == "Div" and not _on(env, node.inputs[0]):
        return _pass(b, node, g, env)  # c / x is not linear in x
    s = b.Div(g[0], stab(b, node.outputs[0], eps))
    share, frozen = shares(node, env)
    grads = transpose(b, node, s)
    out = [None] * len(node.inputs)
    broadcast = bool(VJP.get(node.op) and VJP[node.op].broadcast)
    for i, w in share.items():
        if i < len(grads) and grads[i] is not None:
            r = b.Mul(node.inputs[i], grads[i])
            out[i] = r if w == 1.0 else b.Mul(r, b.const(w, like=r))
    for i in frozen:
        out[i] = _zeros(b, node.outputs[0] if broadcast else node.inputs[i])
    return out


@modified("epsilon", epsilon=1e-6)
def epsilon(env, epsilon):
    """LRP-epsilon (Bach et al. 2015, eq. 58; Montavon et al. 2019, sec. 10.2.2):
    R_j = sum_k x_j w_jk / (z_k + eps sign(z_k)) R_k, z_k = sum_j x_j w_jk + b_k, i.e.
    R_x = x * VJP(R / stab(z)), for any op affine in its on-path inputs. Add/Sum/Sub of several
    activations give each x_i R / stab(z) (signed for Sub); LayerNorm/InstanceNorm use frozen
    statistics; gates of products are frozen (see the module docstring). epsilon -> 0 is LRP-0."""
    if epsilon < 0:
        raise OnnxplainError(f"rule 'epsilon': epsilon must be >= 0, got {epsilon}")

    def rule(b, node, g):
        return epsilon_relevance(b, node, g, env, epsilon)

    return rule


def _pass(b, node, g, env):
    """R to the first on-path input (c / x: the divisor), zeros to any other on-path input."""
    on = [i for i, t in enumerate(node.inputs) if _on(env, t)]
    first = on[0] if on else 0
    r, x = g[0], node.inputs[first]
    if np_dtype(x) is not None and np_dtype(x) != np_dtype(r):
        r = b.Cast(r, to=onnx.helper.np_dtype_to_tensor_dtype(np_dtype(x)))
    out = [None] * len(node.inputs)
    out[first] = r
    for i in on[1:]:
        out[i] = _zeros(b, node.outputs[0])
    return out


@modified("pass")
def pass_(env):
    """R_x = R_y: elementwise activations (ReLU and relatives, sigmoid, tanh, GELU, ...) pass the
    relevance of each unit to its input (Montavon et al. 2019, sec. 10.1; Zennit's Pass). Other
    on-path operands (a Clip bound, a Pow exponent) get none."""

    def rule(b, node, g):
        return _pass(b, node, g, env)

    return rule


# ---- rules that modify the weights ------------------------------------------------------------


@dataclass
class StandIn:
    """What a VJP rule reads of a node, for a forward op emitted on modified tensors."""

    op: str
    name: str
    attrs: dict
    inputs: list
    outputs: list
    domain: str | None = None


def _like(t, src):
    t.shape = src.shape
    return t


class Layer:
    """A Conv/ConvTranspose/Gemm/MatMul node with one on-path data input ``x`` and a weight ``w``
    off the path. ``z(xk, wk, bias)`` emits the op on modified tensors; ``back(z, s)`` is the
    transposed product of that modified layer at ``s``."""

    def __init__(self, b, node, xi, wi):
        self.b, self.node, self.xi, self.wi = b, node, xi, wi
        self.x, self.w = node.inputs[xi], node.inputs[wi]
        bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
        self.bias = bias
        self._standins = {}

    @staticmethod
    def of(b, node, env):
        pairs = {"Conv": [(0, 1)], "ConvTranspose": [(0, 1)], "Gemm": [(0, 1), (1, 0)], "MatMul": [(0, 1), (1, 0)]}.get(
            node.op, []
        )
        for xi, wi in pairs:
            if (
                _on(env, node.inputs[xi])
                and not _on(env, node.inputs[wi])
                and not any(_on(env, t) for t in node.inputs[2:])
            ):
                return Layer(b, node, xi, wi)
        return None

    def pos(self, t):
        return _like(self.b.Relu(t), t)

    def neg(self, t):
        return _like(self.b.Min(t, self.b.const(0, like=t)), t)

    def ones(self, t):
        return _like(self.b.Expand(self.b.const(1, like=t), self.b.Shape(t)), t)

    def fill(self, value: float):
        """A tensor of x's shape filled with ``value``."""
        return _like(self.b.Expand(self.b.const(value, like=self.x), self.b.Shape(self.x)), self.x)

    def z(self, xk, wk, bias=None):
        node = self.node
        ins = [None, None]
        ins[self.xi], ins[self.wi] = xk, wk
        if bias is not None:
            ins.append(bias)
        out = self.b.emit(node.op, *ins, **dict(node.attrs))
        out.shape = node.outputs[0].shape
        # the stand-in leaves the bias out: the transposed product of x does not read it
        self._standins[out.name] = StandIn(node.op, node.name, dict(node.attrs), ins[:2], [out], node.domain)
        return out

    def back(self, z, s):
        load_all()
        standin = self._standins[z.name]
        return VJP[self.node.op](self.b, standin, [s])[self.xi]

    def result(self, rx):
        out = [None] * len(self.node.inputs)
        out[self.xi] = rx
        return out


def _weighted(env, name, body):
    """A rule that applies ``body(b, layer, R) -> R_x`` to weighted layers, epsilon elsewhere."""

    def rule(b, node, g):
        layer = Layer.of(b, node, env)
        if layer is None:
            return epsilon_relevance(b, node, g, env, STABILIZER)
        return layer.result(body(b, layer, g[0]))

    rule.__name__ = name
    return rule


_NONNEG = {"Relu", "Sigmoid", "HardSigmoid", "Softmax", "Abs", "Exp", "Sqrt"}
_KEEPS_SIGN = {
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Reshape",
    "Flatten",
    "Identity",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Pad",
    "Resize",
    "Concat",
    "Slice",
    "Split",
}


def nonnegative(t, depth: int = 8) -> bool:
    """``t`` is >= 0 by construction: the output of Relu (or another op into [0, inf)) or of a Clip whose
    lower bound is a constant >= 0 (ReLU6), possibly through pools and reshapes (zero-padded)."""
    for _ in range(depth):
        if not t.inputs:
            return False
        node = t.inputs[0]
        if node.op in _NONNEG:
            return True
        if node.op == "Clip":
            lo = node.inputs[1] if len(node.inputs) > 1 else None
            return isinstance(lo, gs.Constant) and float(np.min(lo.values)) >= 0
        if node.op not in _KEEPS_SIGN:
            return False
        if node.op == "Pad" and str(node.attrs.get("mode", "constant")).strip("b'") != "constant":
            return False
        if (
            node.op == "Pad"
            and len(node.inputs) > 2
            and node.inputs[2].name
            and not (isinstance(node.inputs[2], gs.Constant) and float(np.min(node.inputs[2].values)) >= 0)
        ):
            return False
        data = [u for u in node.inputs[: 1 if node.op != "Concat" else None] if u.name]
        if node.op == "Concat":
            return all(nonnegative(u, depth - 1) for u in data)
        t = data[0]
    return False


def _sign_split(b, layer, R, eps, alpha, beta):
    """alpha * [x+ w+ and x- w- part] - beta * [x- w+ and x+ w- part] of the relevance (no bias).

    When x >= 0 by construction (after a ReLU), x- = 0 and x+ = x: the x- terms are exactly zero and
    are not emitted (half the extra convolutions of z+ on a ReLU network)."""
    x, w = layer.x, layer.w
    wp, wn = layer.pos(w), layer.neg(w)
    if nonnegative(x):
        pp = layer.z(x, wp)
        out = b.Mul(x, layer.back(pp, b.Div(R, stab(b, pp, eps))))
        if beta == 0.0:
            return out if alpha == 1.0 else b.Mul(out, b.const(alpha, like=out))
        np_ = layer.z(x, wn)
        neg = b.Mul(x, layer.back(np_, b.Div(R, stab(b, np_, eps))))
        return b.Sub(b.Mul(out, b.const(alpha, like=out)), b.Mul(neg, b.const(beta, like=neg)))
    xp, xn = layer.pos(x), layer.neg(x)
    pp, nn = layer.z(xp, wp), layer.z(xn, wn)
    s = b.Div(R, stab(b, b.Add(pp, nn), eps))
    out = b.Add(b.Mul(xp, layer.back(pp, s)), b.Mul(xn, layer.back(nn, s)))
    if beta == 0.0:
        return out if alpha == 1.0 else b.Mul(out, b.const(alpha, like=out))
    pn, np_ = layer.z(xn, wp), layer.z(xp, wn)
    s_neg = b.Div(R, stab(b, b.Add(pn, np_), eps))
    neg = b.Add(b.Mul(xn, layer.back(pn, s_neg)), b.Mul(xp, layer.back(np_, s_neg)))
    return b.Sub(b.Mul(out, b.const(alpha, like=out)), b.Mul(neg, b.const(beta, like=neg)))


@modified("zplus")
def zplus(env):
    """LRP-z+ (Montavon et al. 2017, eq. 13; Montavon et al. 2019, sec. 10.2): R_j = sum_k z_jk^+ /
    sum_j z_jk^+ R_k with the positive contributions z_jk^+ = (x_j w_jk)^+; for x >= 0 the rule
    w_jk^+ x_j / sum_j w_jk^+ x_j. In Zennit's form for signed inputs: z = W+ x+ + W- x- (no bias),
    R_x = x+ * W+^T s + x- * W-^T s, s = R / stab(z). Layers without weights: epsilon."""
    return _weighted(env, "zplus", lambda b, layer, R: _sign_split(b, layer, R, STABILIZER, 1.0, 0.0))


@modified("alpha_beta", alpha=2.0, beta=1.0)
def alpha_beta(env, alpha, beta):
    """LRP-alpha-beta (Bach et al. 2015, eq. 60; Montavon et al. 2019, sec. 10.2.4):
    R_j = sum_k (alpha z_jk^+ / sum_j z_jk^+ - beta z_jk^- / sum_j z_jk^-) R_k, z_jk = x_j w_jk, the
    bias ignored. Conservation needs alpha - beta = 1 and beta >= 0, checked here. Layers without
    weights: epsilon."""
    if beta < 0 or abs(alpha - beta - 1.0) > 1e-9:
        raise OnnxplainError(f"rule 'alpha_beta': needs alpha - beta = 1 and beta >= 0 (alpha={alpha}, beta={beta})")
    return _weighted(env, "alpha_beta", lambda b, layer, R: _sign_split(b, layer, R, STABILIZER, alpha, beta))


@modified("gamma", gamma=0.25)
def gamma(env, gamma):
    """LRP-gamma (Montavon et al. 2019, eq. 10.4): R_j = sum_k x_j (w_jk + gamma w_jk^+) /
    sum_{0,j} x_j (w_jk + gamma w_jk^+) R_k, the bias modified alike (b + gamma b+) in the
    denominator. Meant for layers whose inputs are >= 0 (after a ReLU). Layers without weights: epsilon."""
    if gamma < 0:
        raise OnnxplainError(f"rule 'gamma': gamma must be >= 0, got {gamma}")

    def body(b, layer, R):
        c = b.const(gamma, like=layer.w)
        wg = _like(b.Add(layer.w, b.Mul(c, layer.pos(layer.w))), layer.w)
        bias = (
            None
            if layer.bias is None
            else b.Add(layer.bias, b.Mul(b.const(gamma, like=layer.bias), b.Relu(layer.bias)))
        )
        z = layer.z(layer.x, wg, bias)
        return b.Mul(layer.x, layer.back(z, b.Div(R, stab(b, z, STABILIZER))))

    return _weighted(env, "gamma", body)


def _input_free(transform):
    """Rules that ignore the input's values: z_k = sum_j v_jk over the receptive field, v = transform(w)."""

    def body(b, layer, R):
        z = layer.z(layer.ones(layer.x), transform(b, layer))
        return layer.back(z, b.Div(R, stab(b, z, STABILIZER)))

    return body


@modified("flat")
def flat(env):
    """Flat rule (Kohlbrenner et al. 2020, sec. III; Zennit's Flat): all weights and inputs 1, no bias,
    so R_k spreads uniformly over its receptive field: R_j = sum_k 1 / (#taps of k) R_k. Layers
    without weights: epsilon."""
    return _weighted(env, "flat", _input_free(lambda b, layer: layer.ones(layer.w)))


@modified("wsquare")
def wsquare(env):
    """w^2 rule (Montavon et al. 2017, sec. 4.1): R_j = sum_k w_jk^2 / sum_j w_jk^2 R_k, independent
    of the input, no bias. Layers without weights: epsilon."""
    return _weighted(env, "wsquare", _input_free(lambda b, layer: _like(b.Mul(layer.w, layer.w), layer.w)))


@modified("zbox", low=0.0, high=1.0)
def zbox(env, low, high):
    """z^B rule for inputs bounded by low <= x <= high (Montavon et al. 2017, eq. 16):
    R_j = sum_k (x_j w_jk - l w_jk^+ - h w_jk^-) / sum_j (x_j w_jk - l w_jk^+ - h w_jk^-) R_k, no bias
    (as in the paper). Meant for the first layer. Bounds are scalars (one box for every channel).
    Layers without weights: epsilon."""
    if not low <= high:
        raise OnnxplainError(f"rule 'zbox': needs low <= high (low={low}, high={high})")

    def body(b, layer, R):
        x, w = layer.x, layer.w
        lo, hi = layer.fill(low), layer.fill(high)
        zx, zl, zh = layer.z(x, w), layer.z(lo, layer.pos(w)), layer.z(hi, layer.neg(w))
        s = b.Div(R, stab(b, b.Sub(b.Sub(zx, zl), zh), STABILIZER))
        return b.Sub(b.Sub(b.Mul(x, layer.back(zx, s)), b.Mul(lo, layer.back(zl, s))), b.Mul(hi, layer.back(zh, s)))

    return _weighted(env, "zbox", body)
