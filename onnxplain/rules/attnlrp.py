"""AttnLRP's rules for transformers: the uniform rule for products of activations and the softmax rule.

Reference: Achtibat et al. 2024, "AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for
Transformers", ICML (arXiv:2402.05602). With R the relevance of a node's output z:

* linear layers and sums: the epsilon rule (eq. 8), ``epsilon`` in :mod:`onnxplain.rules.lrp`;
* element-wise non-linearities (GELU, SiLU, ...): the identity rule (eq. 9), ``pass``;
* a product of N activations, z = a_1 ... a_N (gates, z = a * b): the uniform rule (Prop. 3.2),
  R_{a_i} = R / N, and for the bilinear MatMul O = A V (Q K^T, attention times values) the epsilon rule
  followed by the uniform rule (Prop. 3.3): R_A[j,i] = sum_p A_ji V_ip R_jp / (2 O_jp), likewise R_V;
  both are ``x_i * VJP_i(R / stab(z)) / N`` over the N on-path factors (:func:`uniform_relevance`);
* softmax s = softmax(x): deep Taylor decomposition at x with the bias term (Prop. 3.1),
  R_x_i = x_i (R_i - s_i sum_j R_j) over the softmax axis (:func:`softmax_dtd`). It does not conserve:
  sum_i R_x_i = sum_i x_i R_i - (sum_i s_i x_i) sum_j R_j, the rest goes to the bias term;
* normalisation (LayerNorm, RMSNorm): the identity rule on the division by the standard deviation
  (Prop. 3.4), i.e. the statistics are constants and the layer is linear: the epsilon rule on the fused
  LayerNormalization (frozen statistics, as in :mod:`onnxplain.rules.lrp`), and in a decomposed norm
  the operand computed from a Reduce* of the input (1/sqrt(mean(x^2) + eps)) is frozen
  (:func:`onnxplain.rules.lrp.is_statistic`).

Unlike LRP-epsilon's products in :mod:`onnxplain.rules.lrp`, no gate is frozen: the softmax output A
gets half of the relevance of A V, and Q and K each half of that of Q K^T.
"""

from __future__ import annotations

from onnxplain.errors import OnnxplainError
from onnxplain.graph.builder import rank
from onnxplain.rules.lrp import _FACTORS, _on, _pass, _zeros, is_statistic, stab, transpose
from onnxplain.rules.table import modified
from onnxplain.rules.vjp import VJP, attr


def uniform_relevance(b, node, g, env, eps: float):
    """R_x_i = x_i * VJP_i(R / stab(z)) / N for the N on-path factors of a product (AttnLRP Prop. 3.2/3.3),
    the epsilon rule for every other op; statistics of a decomposed norm and divisors are frozen."""
    on = [i for i, t in enumerate(node.inputs) if _on(env, t)]
    if node.op == "Div" and 0 not in on:
        return _pass(b, node, g, env)  # c / x: an element-wise non-linearity, the identity rule
    frozen = [1] if node.op == "Div" and len(on) > 1 else []
    spec = _FACTORS.get(node.op, ())
    factors = [i for i in on if (spec is None or i in spec) and i not in frozen]
    if len(factors) > 1:
        frozen += [i for i in factors if is_statistic(node.inputs[i], env)]
        factors = [i for i in factors if i not in frozen]
    grads = transpose(b, node, b.Div(g[0], stab(b, node.outputs[0], eps)))
    out = [None] * len(node.inputs)
    for i in on:
        if i in frozen or i >= len(grads) or grads[i] is None:
            continue
        r = b.Mul(node.inputs[i], grads[i])
        out[i] = b.Mul(r, b.const(1.0 / len(factors), like=r)) if i in factors and len(factors) > 1 else r
    broadcast = bool(VJP.get(node.op) and VJP[node.op].broadcast)
    for i in frozen:
        out[i] = _zeros(b, node.outputs[0] if broadcast else node.inputs[i])
    return out


@modified("uniform", epsilon=1e-6)
def uniform(env, epsilon):
    """AttnLRP's uniform rule (Achtibat et al. 2024, Prop. 3.2 and 3.3): in a product of N activations each
    factor gets R / N of the epsilon-rule relevance, R_x_i = x_i * VJP_i(R / stab(z)) / N; no gate is frozen.
    On ops with one on-path operand it is the epsilon rule (eq. 8), LayerNorm with frozen statistics."""

    def rule(b, node, g):
        return uniform_relevance(b, node, g, env, epsilon)

    return rule


@modified("softmax_dtd")
def softmax_dtd(env):
    """AttnLRP's softmax rule (Achtibat et al. 2024, Prop. 3.1): deep Taylor decomposition at x with the bias
    term absorbed, R_x_i = x_i (R_i - s_i sum_j R_j) over the softmax axis (all axes from ``axis`` on before
    opset 13). Masked scores (-inf) get no relevance."""

    def rule(b, node, g):
        x, s, R = node.inputs[0], node.outputs[0], g[0]
        axis = attr(node, "axis", -1 if b.opset >= 13 else 1)
        r = rank(x)
        if b.opset >= 13:
            axes = [axis]
        elif r is not None:
            axes = list(range(axis % r, r))
        else:
            raise OnnxplainError(f"Softmax '{node.name}': the rank of its input must be known for the softmax rule")
        total = b.reduce("ReduceSum", R, axes, keepdims=True)
        finite = b.Where(b.IsInf(x, detect_positive=0), b.const(0, like=x), x)
        return [b.Mul(finite, b.Sub(R, b.Mul(s, total)))]

    return rule
